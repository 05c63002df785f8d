"""A corpus of real code from this machine: the Python standard library, C headers and the
JavaScript of the npm packages installed with Node.js. Sampled evenly and capped, so the tests that
read it stay within seconds."""

from __future__ import annotations

import glob
import sysconfig
from pathlib import Path

import pytest

_JS_ROOTS = ("/usr/lib/node_modules", "/usr/local/lib/node_modules", "/usr/share/nodejs")
_PER_LANGUAGE = 70
_MAX_CHARS = 48_000


def _sample(paths: list[str], n: int) -> list[tuple[str, str]]:
    paths = sorted(p for p in paths if Path(p).is_file())
    step = max(1, len(paths) // n)
    out = []
    for p in paths[::step][:n]:
        text = Path(p).read_text(encoding="utf-8", errors="replace")[:_MAX_CHARS]
        if text.strip():
            out.append((p, text))
    return out


@pytest.fixture(scope="session")
def code_corpus() -> dict[str, list[tuple[str, str]]]:
    """{language: [(path, text)]}: Python, C headers and JavaScript, ~70 files each."""
    lib = sysconfig.get_paths()["stdlib"]
    js: list[str] = []
    for root in _JS_ROOTS:
        js.extend(glob.glob(f"{root}/**/*.js", recursive=True))
    corpus = {
        "python": _sample(glob.glob(f"{lib}/**/*.py", recursive=True), _PER_LANGUAGE),
        "c": _sample(glob.glob("/usr/include/**/*.h", recursive=True), _PER_LANGUAGE),
        "javascript": _sample(js, _PER_LANGUAGE),
    }
    for language, files in corpus.items():
        if len(files) < 20:
            pytest.fail(f"too little {language} on this machine for the corpus ({len(files)} "
                        "files); Node.js with npm provides the JavaScript")
    return corpus
