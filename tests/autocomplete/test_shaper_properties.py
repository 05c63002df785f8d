"""Invariants of the cut, for any model output: what is passed on is a prefix of the output
without trailing whitespace, the same whether the output comes whole or in pieces; line mode
never passes a newline; a block ends balanced, or at a line that dedents."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from starcoder_router._autocomplete import Cursor, Plan, Shaper, shape
from starcoder_router._autocomplete.scan import Scanner

CODE = st.lists(st.sampled_from(
    ["a", "b", "_", " ", "  ", "    ", "\t", "\n", "\n\n", ":", ";", "{", "}", "(", ")", "[",
     "]", "\"", "'", "#", "//", "/*", "*/", "else", "x = 1", "return", "\\"]), max_size=40,
).map("".join)

PLANS = st.builds(
    lambda mode, prefix, suffix, style, nl: Plan(mode, Cursor(prefix, suffix, style), nl),
    st.sampled_from(["line", "block"]), CODE, CODE, st.sampled_from(["indent", "brace"]),
    st.booleans(),
)


def _stream(plan: Plan, text: str, sizes: list[int]) -> str:
    shaper = Shaper(plan)
    out, at = [], 0
    for n in sizes:
        if at >= len(text) or shaper.stopped:
            break
        out.append(shaper.push(text[at:at + n]) or "")
        at += n
    if at < len(text) and not shaper.stopped:
        out.append(shaper.push(text[at:]) or "")
    out.append(shaper.push(None, end=True) or "")
    return "".join(out)


@settings(max_examples=400, deadline=None)
@given(PLANS, CODE, st.lists(st.integers(1, 7), max_size=30))
def test_output_is_a_prefix_and_streaming_changes_nothing(plan: Plan, text: str,
                                                          sizes: list[int]) -> None:
    whole, _ = shape(plan, text)
    assert text.startswith(whole) and whole == whole.rstrip()
    assert _stream(plan, text, sizes) == whole


@settings(max_examples=200, deadline=None)
@given(CODE, CODE, CODE)
def test_line_mode_never_passes_a_newline(prefix: str, suffix: str, text: str) -> None:
    plan = Plan("line", Cursor(prefix, suffix, "indent"), newline_ends=True)
    assert "\n" not in shape(plan, text)[0]


PLAIN = st.lists(st.sampled_from(["a", "b", " ", "    ", "\n", "else", ":", "x", ";", "{",
                                  "}"]), max_size=50).map("".join)


@settings(max_examples=300, deadline=None)
@given(PLAIN)
def test_a_python_block_never_passes_a_line_that_dedents(text: str) -> None:
    plan = Plan("block", Cursor("def f():", "", "indent"), newline_ends=False)
    out, _ = shape(plan, text.replace("{", "").replace("}", ""))
    for line in out.split("\n")[1:]:
        if line.strip():
            word = re.match(r"\w*", line).group()  # type: ignore[union-attr]
            assert line.startswith((" ", "\t")) or word == "else"


@settings(max_examples=300, deadline=None)
@given(PLAIN, st.booleans())
def test_a_brace_block_stays_balanced(text: str, closed: bool) -> None:
    plan = Plan("block", Cursor("void f() {", "\n}\n" if closed else "", "brace"), False)
    out, _ = shape(plan, text)
    depth = lowest = 0
    for c in out:
        depth += (c == "{") - (c == "}")
        lowest = min(lowest, depth)
    # Cut before the bracket the suffix already has, or just after the one that closes.
    assert lowest == (0 if closed else min(0, lowest)) and lowest >= -1
    if lowest == -1:
        assert out.rstrip(");,]").endswith("}")


def _state(scanner: Scanner) -> tuple[object, ...]:
    s = scanner
    return (s.state, s.depth, s._q, s._triple, s._esc, s._empty, s._prev,
            s._run if s.in_text else 0)


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(["indent", "brace"]), CODE, CODE)
def test_the_scanners_fast_path_reads_as_one_character_at_a_time(style: str, first: str,
                                                                 second: str) -> None:
    fast, slow = Scanner(style), Scanner(style)  # type: ignore[arg-type]
    for part in (first, second):
        fast.feed(part)
        for c in part:
            slow.step(c)
        assert _state(fast) == _state(slow)
