"""A workload from a folder of source code: real files, random cursors, a fixed seed.

Example::

    lines = build_from_code("/usr/lib/python3.11", requests=2000, seed=14,
                            counter=TokenizerCounter.from_file("tokenizer.json"))

Each request picks a file and a cursor position in it. The mix (by default): 50% plain
fill-in-the-middle (the code before and after the cursor, as an editor sends it: at most
`MAX_PREFIX_CHARS` before and `MAX_SUFFIX_CHARS` after), 20% fill-in-the-middle with repository
context (up to three other files of the same folder, each cut to `MAX_FILE_CHARS`), 20%
left-to-right prompts (the code before the cursor), and 10% structured output (a piece of code
and a question whose answer must be a JSON object). Arrivals are a Poisson process at `rate`
requests per second; tenants are drawn from `tenants` by weight. Only token counts are kept,
unless `keep_text` is set.
"""

from __future__ import annotations

import json
import math
import os
import random
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from .._errors import ConfigError
from .._routing.tokens import TokenCounter

__all__ = ["CODE_SUFFIXES", "DEFAULT_MIX", "DEFAULT_TENANTS", "build_from_code", "find_code"]

CODE_SUFFIXES = frozenset({
    ".py", ".c", ".h", ".cc", ".cpp", ".hpp", ".js", ".ts", ".go", ".rs", ".java", ".rb",
    ".sh", ".kt", ".swift", ".cs", ".php", ".lua", ".scala",
})
DEFAULT_MIX: Mapping[str, float] = {"fim": 0.5, "repo": 0.2, "completion": 0.2,
                                    "structured": 0.1}
DEFAULT_TENANTS: Mapping[str, float] = {"ide": 0.6, "review-bot": 0.3, "batch": 0.1}
MAX_PREFIX_CHARS = 24_000
MAX_SUFFIX_CHARS = 6_000
MAX_FILE_CHARS = 12_000
_MAX_FILE_BYTES = 400_000
_MAX_TOKENS = {"fim": (32, 64, 128), "repo": (64, 128), "completion": (128, 256, 512),
               "structured": (128, 256)}
_QUESTION = ("\n\n# Describe the code above as a JSON object with the keys \"purpose\", "
             "\"inputs\" and \"risks\".\n")


def find_code(root: str | os.PathLike[str]) -> list[Path]:
    """Source files under `root` (sorted, so a seed always picks the same ones); skips
    caches, virtual environments and installed packages."""
    base = Path(root)
    if not base.is_dir():
        raise ConfigError(f"{str(base)!r} is not a folder")
    found = []
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in
                             {"__pycache__", "site-packages", "node_modules", ".venv"})
        for name in sorted(filenames):
            path = Path(dirpath, name)
            if path.suffix in CODE_SUFFIXES and 0 < path.stat().st_size <= _MAX_FILE_BYTES:
                found.append(path)
    return found


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return None


def _pick(rng: random.Random, weights: Mapping[str, float]) -> str:
    names = list(weights)
    return rng.choices(names, weights=[weights[n] for n in names])[0]


def build_from_code(
    root: str | os.PathLike[str],
    *,
    requests: int,
    counter: TokenCounter,
    seed: int = 0,
    rate: float = 1.0,
    tenants: Mapping[str, float] = DEFAULT_TENANTS,
    mix: Mapping[str, float] = DEFAULT_MIX,
    keep_text: bool = False,
) -> Iterator[str]:
    """Workload lines (JSON) built from the code under `root`."""
    if not 0 < rate < math.inf or requests < 0:
        raise ConfigError("rate must be positive and requests not negative")
    files = find_code(root)
    if not files:
        raise ConfigError(f"no source files under {os.fspath(root)!r}")
    rng = random.Random(seed)
    by_folder: dict[Path, list[Path]] = {}
    for f in files:
        by_folder.setdefault(f.parent, []).append(f)
    t = 0.0
    made = 0
    while made < requests:
        path = rng.choice(files)
        text = _read(path)
        if not text or not text.strip():
            continue
        t += rng.expovariate(rate)
        kind = _pick(rng, mix)
        line = _request(rng, kind, path, text, by_folder[path.parent], root, keep_text,
                        counter)
        line.update(timestamp=round(t, 3), tenant=_pick(rng, tenants),
                    max_tokens=rng.choice(_MAX_TOKENS[kind]))
        made += 1
        yield json.dumps(line, ensure_ascii=False, sort_keys=True)


def _request(rng: random.Random, kind: str, path: Path, text: str, folder: Sequence[Path],
             root: str | os.PathLike[str], keep_text: bool,
             counter: TokenCounter) -> dict[str, Any]:
    cursor = rng.randrange(len(text) + 1)
    prefix = text[max(0, cursor - MAX_PREFIX_CHARS):cursor]
    if kind == "completion":
        return _text_or_count("completion", {"prompt": prefix}, keep_text, counter)
    if kind == "structured":
        start = max(0, cursor - 3000)
        return _text_or_count("structured", {"prompt": text[start:cursor] + _QUESTION},
                              keep_text, counter)
    suffix = text[cursor:cursor + MAX_SUFFIX_CHARS]
    fields: dict[str, Any] = {"prefix": prefix, "suffix": suffix}
    if kind == "repo":
        others = [p for p in folder if p != path]
        chosen = rng.sample(others, min(3, len(others)))
        files = [(str(p.relative_to(root)), t[:MAX_FILE_CHARS])
                 for p in chosen if (t := _read(p))]
        fields["files"] = files
    return _text_or_count("fim", fields, keep_text, counter)


def _text_or_count(kind: str, fields: dict[str, Any], keep_text: bool,
                   counter: TokenCounter) -> dict[str, Any]:
    if keep_text:
        if "files" in fields:
            fields["files"] = [{"path": p, "text": t} for p, t in fields["files"]]
        return {"kind": kind, **fields}
    out: dict[str, Any] = {"kind": kind}
    if "prompt" in fields:
        out["prompt_tokens"] = counter.count(fields["prompt"])
        return out
    out["prefix_tokens"] = counter.count(fields["prefix"])
    out["suffix_tokens"] = counter.count(fields["suffix"])
    if fields.get("files"):
        # The files' text only: the router adds the separators and paths when it renders.
        out["file_tokens"] = [counter.count(t) for _, t in fields["files"]]
    return out
