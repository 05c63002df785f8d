"""Real code from this machine, cut into prompts, for calibrating and judging token estimates.

Three languages, each from where a fresh Debian/Python machine has it: the Python standard
library (`.py`), C headers under /usr/include (`.h`) and the JavaScript of the npm that ships with
Node (`/usr/lib/node_modules`, `.js`/`.cjs`/`.mjs`). Files are split into a calibration half and
a held-out half by a hash of their path, so an estimator is never judged on text it was fitted
to. A prompt is a slice of `length` characters from a random file, continued into the next files
of the same language when one file is too short (as repository context is).
"""

from __future__ import annotations

import hashlib
import math
import random
import sysconfig
from collections.abc import Iterator
from pathlib import Path
from typing import Literal, NamedTuple

Split = Literal["calibration", "held-out"]

SOURCES: dict[str, tuple[tuple[Path, ...], tuple[str, ...]]] = {
    "python": ((Path(sysconfig.get_paths()["stdlib"]),), (".py",)),
    "c": ((Path("/usr/include"),), (".h",)),
    "javascript": ((Path("/usr/lib/node_modules"),), (".js", ".cjs", ".mjs")),
}
_MAX_FILE = 400_000  # bytes; larger files are generated tables, not code anyone prompts with


class Prompt(NamedTuple):
    language: str
    text: str


def split_of(path: Path) -> Split:
    digest = hashlib.sha256(str(path).encode()).digest()
    return "held-out" if digest[0] % 2 else "calibration"


def files(language: str, split: Split) -> list[Path]:
    roots, suffixes = SOURCES[language]
    found = []
    for root in roots:
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*")):
            if (path.suffix not in suffixes or "test" in path.name.lower()
                    or "site-packages" in path.parts):
                continue
            try:
                size = path.stat().st_size
            except OSError:
                continue
            if 200 <= size <= _MAX_FILE and path.is_file() and split_of(path) == split:
                found.append(path)
    return found


def read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""


def prompts(split: Split, count: int, *, seed: int, min_chars: int = 300,
            max_chars: int = 60_000) -> Iterator[Prompt]:
    """`count` prompts, languages in turn, lengths log-uniform in [min_chars, max_chars]."""
    rng = random.Random(seed)
    pools = {lang: files(lang, split) for lang in SOURCES}
    pools = {lang: paths for lang, paths in pools.items() if paths}
    if not pools:
        raise SystemExit("no source files found on this machine")
    langs = sorted(pools)
    for i in range(count):
        lang = langs[i % len(langs)]
        paths = pools[lang]
        length = int(math.exp(rng.uniform(math.log(min_chars), math.log(max_chars))))
        start_file = rng.randrange(len(paths))
        text = read(paths[start_file])
        offset = rng.randrange(max(1, len(text) - length)) if len(text) > length else 0
        parts, have, j = [text[offset:offset + length]], 0, start_file
        have = len(parts[0])
        while have < length and j + 1 < start_file + 50:
            j += 1
            more = read(paths[j % len(paths)])[: length - have]
            parts.append(more)
            have += len(more)
        yield Prompt(lang, "".join(parts))
