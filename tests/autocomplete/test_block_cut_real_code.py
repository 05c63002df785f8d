"""The block cut on real code: standard-library Python and C, JavaScript and Go files, cut at
every block they open. The model's output is the true continuation followed by the code after
it (or unrelated code); the cut must land exactly where the block closes, whether the text
comes whole or a few characters at a time."""

from __future__ import annotations

import ast
import json.decoder
import random
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from starcoder_router._autocomplete import Cursor, Plan, Shaper, shape
from starcoder_router._autocomplete.cursor import indent_width

FIXTURES = Path(__file__).parent / "fixtures"
PYTHON_FILES = [Path(json.decoder.__file__), Path(textwrap.__file__)]
BRACE_FILES = sorted(FIXTURES.glob("*.*"))
NOISE_PY = "\n\ndef unrelated(x):\n    return x * 2\n"
NOISE_BRACE = "\n\nint unrelated(int x) {\n    return x * 2;\n}\n"


class Case(NamedTuple):
    name: str
    prefix: str
    block: str  # the true continuation up to where the block closes
    rest: str  # the file after it


def _offsets(text: str) -> list[int]:
    """Line number (1-based) -> offset of the line's start."""
    out = [0, 0]
    for line in text.splitlines(keepends=True):
        out.append(out[-1] + len(line))
    return out


def _python_headers(path: Path) -> Iterator[Case]:
    """Every compound statement whose header ends its line with `:`: cursor after the colon;
    the block runs to the statement's last line (its else/except/finally branches included)
    and over the comments indented under it."""
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    at = _offsets(text)
    for node in ast.walk(ast.parse(text)):
        body = getattr(node, "body", None)
        if not isinstance(body, list) or isinstance(node, ast.Module) or not body:
            continue
        header_end = body[0].lineno - 1  # the line before the first body statement
        header = lines[header_end - 1]
        if not header.rstrip().endswith(":") or body[0].lineno == node.lineno:
            continue
        base = indent_width(lines[node.lineno - 1])
        end = _extend_over_comments(lines, node.end_lineno or node.lineno, base)
        cut_at = at[header_end] + len(header.rstrip("\n"))
        stop = at[end] + len(lines[end - 1].rstrip("\n"))
        yield Case(f"{path.name}:{node.lineno}", text[:cut_at], text[cut_at:stop], text[stop:])


def _python_statements(path: Path) -> Iterator[Case]:
    """The cursor at the start of a statement inside an indented body (after its
    indentation): the block is the rest of that body."""
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    at = _offsets(text)
    for node in ast.walk(ast.parse(text)):
        for field in ("body", "orelse", "finalbody"):
            body = getattr(node, field, None)
            if isinstance(node, ast.Module) or not isinstance(body, list) or len(body) < 2:
                continue
            stmt = body[len(body) // 2]
            col = indent_width(lines[stmt.lineno - 1])
            if col == 0:
                continue
            last = max(s.end_lineno or s.lineno for s in body)
            end = _extend_over_comments(lines, last, col - 1)
            start = at[stmt.lineno] + col
            stop = at[end] + len(lines[end - 1].rstrip("\n"))
            yield Case(f"{path.name}:{stmt.lineno}", text[:start], text[start:stop],
                       text[stop:])


def _extend_over_comments(lines: list[str], end: int, base: int) -> int:
    while end < len(lines):
        nxt = lines[end]
        if nxt.strip() and not (nxt.lstrip().startswith("#") and indent_width(nxt) > base):
            break
        if nxt.strip():
            end += 1
            continue
        # A blank line belongs to the block only if a comment under it follows.
        probe = end
        while probe < len(lines) and not lines[probe].strip():
            probe += 1
        if probe < len(lines) and lines[probe].lstrip().startswith("#") and \
                indent_width(lines[probe]) > base:
            end = probe
            continue
        break
    return end


def _brace_blocks(path: Path) -> Iterator[tuple[Case, str]]:
    """Every line that ends with `{`: cursor after it; the block closes at the next line that
    starts with `}` at the same indentation (the fixtures are formatted code). Also returns
    that closing line."""
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    at = _offsets(text)
    for i, line in enumerate(lines, start=1):
        if not line.rstrip().endswith("{"):
            continue
        lead = line[:len(line) - len(line.lstrip())]
        close = next(j for j in range(i + 1, len(lines) + 1)
                     if lines[j - 1].startswith(lead + "}"))
        cut_at = at[i + 1] - 1  # before the newline of the opening line
        stop = at[close] - 1  # the end of the last body line
        yield (Case(f"{path.name}:{i}", text[:cut_at], text[cut_at:stop], text[stop:]),
               lines[close - 1].rstrip("\n"))


def _plan(prefix: str, suffix: str, path: str) -> Plan:
    return Plan("block", Cursor(prefix, suffix, "indent" if path.endswith(".py") else "brace"),
                newline_ends=False)


def _streamed(plan: Plan, text: str, seed: int) -> str:
    rng = random.Random(seed)
    shaper = Shaper(plan)
    out, at = [], 0
    while at < len(text) and not shaper.stopped:
        n = rng.randint(1, 12)
        out.append(shaper.push(text[at:at + n]) or "")
        at += n
    out.append(shaper.push(None, end=True) or "")
    return "".join(out)


PY_CASES = [c for p in PYTHON_FILES for c in (*_python_headers(p), *_python_statements(p))]
BRACE_CASES = [c for p in BRACE_FILES for c in _brace_blocks(p)]


def test_the_corpus_is_large() -> None:
    assert len(PY_CASES) > 100 and len(BRACE_CASES) > 30


@pytest.mark.parametrize("case", PY_CASES, ids=lambda c: c.name)
def test_python_block_ends_where_the_indentation_closes(case: Case) -> None:
    expected = case.block.rstrip()
    # Without a suffix (the user writes at the end of the file), the rest as the model's noise.
    plan = _plan(case.prefix, "", "x.py")
    model = case.block + (case.rest or NOISE_PY)
    assert shape(plan, model)[0] == expected
    assert _streamed(plan, model, seed=len(case.prefix)) == expected
    # With the rest of the file as the suffix, and unrelated code after the block.
    plan = _plan(case.prefix, case.rest, "x.py")
    assert shape(plan, case.block + NOISE_PY)[0] == expected


@pytest.mark.parametrize(("case", "closing"), BRACE_CASES, ids=lambda c: getattr(c, "name", ""))
def test_brace_block_ends_at_the_closing_bracket(case: Case, closing: str) -> None:
    model = case.block + case.rest + NOISE_BRACE
    # The suffix already closes the block (an editor inserted the pair): cut before it.
    plan = _plan(case.prefix, case.rest, "x.c")
    assert shape(plan, model)[0] == case.block.rstrip()
    assert _streamed(plan, model, seed=len(case.prefix)) == case.block.rstrip()
    # Nothing closes it yet: the completion ends with the bracket (and a `);` after it).
    plan = _plan(case.prefix, "", "x.c")
    bracket = closing.index("}")
    tail = len(closing[bracket + 1:]) - len(closing[bracket + 1:].lstrip(");,]"))
    expected = case.block + "\n" + closing[:bracket + 1 + tail]
    assert shape(plan, model)[0] == expected
    assert _streamed(plan, model, seed=len(case.prefix) + 1) == expected
