"""Completion modes: how `auto` chooses, the caps, the caller's own stop and max_tokens, and
the post-processing every mode shares (suffix duplicates, the cursor line's remainder,
trailing whitespace)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from starcoder_router import CompletionRequest, InvalidRequestError
from starcoder_router._autocomplete import (
    BLOCK_MAX_TOKENS,
    HEADER_MODE,
    LINE_MAX_TOKENS,
    Plan,
    apply_mode,
    choose,
    cursor_of,
    plan_for,
    requested_mode,
    shape,
)


def _auto(prefix: str, suffix: str = "", path: str | None = None) -> str:
    cursor = cursor_of(CompletionRequest(prefix=prefix, suffix=suffix, path=path))
    assert cursor is not None
    return choose(cursor)


@pytest.mark.parametrize(("prefix", "suffix", "mode"), [
    # text after the cursor on its line: the user edits mid-line
    ("x = compute(", "a, b)\n", "line"),
    ("if ", " is None:\n    pass\n", "line"),
    # only closing brackets after the cursor, the line not opening a block: still a line
    ("print(", ")\n", "line"),
    ("values = [", "]\n", "line"),
    # the end of a line that opens a block
    ("def add(a, b):", "\n", "block"),
    ("for item in items:\n", "\n", "block"),
    ("function f(a) {", "\n}\n", "block"),
    ("function f(a) {", "}\n", "block"),
    ("result = call(\n", "\n", "block"),
    # an empty line inside an indented block, or at the top level
    ("def f():\n    x = 1\n    ", "\n    return x\n", "block"),
    ("import os\n\n", "", "block"),
    ("", "", "block"),
    # the end of a line that opens nothing
    ("x = 1", "\n", "line"),
    ("    return total", "\n", "line"),
])
def test_auto_picks_the_mode_from_the_cursor(prefix: str, suffix: str, mode: str) -> None:
    assert _auto(prefix, suffix) == mode


def test_a_colon_opens_a_block_only_where_indentation_does() -> None:
    assert _auto("case 1:", "\n", path="x.py") == "block"
    assert _auto("label:", "\n", path="x.c") == "line"


def test_line_mode_stops_at_the_newline_and_caps_max_tokens() -> None:
    req = apply_mode(CompletionRequest(prefix="x = ", suffix="\n", mode="line"))
    assert (req.mode, req.stop, req.max_tokens) == ("line", ("\n",), LINE_MAX_TOKENS)


def test_block_mode_caps_max_tokens_and_adds_no_stop() -> None:
    req = apply_mode(CompletionRequest(prefix="def f():", mode="block"))
    assert (req.mode, req.stop, req.max_tokens) == ("block", (), BLOCK_MAX_TOKENS)


def test_auto_is_resolved_on_the_request() -> None:
    req = apply_mode(CompletionRequest(prefix="def f():", suffix="\n", mode="auto"))
    assert req.mode == "block" and plan_for(req) is not None


def test_the_callers_stop_and_max_tokens_win() -> None:
    req = apply_mode(CompletionRequest(prefix="x = ", mode="line", stop=[";"], max_tokens=500))
    assert (req.stop, req.max_tokens) == ((";",), 500)
    plan = plan_for(req)
    assert plan is not None and not plan.newline_ends  # no newline cut of our own either
    req = apply_mode(CompletionRequest(prefix="x = ", mode="block", max_tokens=8))
    assert req.max_tokens == 8


def test_no_mode_changes_nothing() -> None:
    req = CompletionRequest(prefix="x = ", suffix="\n")
    assert apply_mode(req) is req and plan_for(req) is None


def test_applying_twice_is_harmless() -> None:
    once = apply_mode(CompletionRequest(prefix="x = f(", suffix=")\n", mode="auto"))
    assert apply_mode(once) == once


def test_mode_does_not_go_with_chat() -> None:
    with pytest.raises(InvalidRequestError, match="mode"):
        CompletionRequest(messages=[{"role": "user", "content": "hi"}], mode="line")
    with pytest.raises(InvalidRequestError):
        CompletionRequest(prefix="x", mode="paragraph")  # type: ignore[arg-type]


def test_a_prompt_with_fim_sentinels_gives_its_cursor() -> None:
    psm = "<fim_prefix>def f():\n    <fim_suffix>\n    return x\n<fim_middle>"
    cursor = cursor_of(CompletionRequest(prompt=psm))
    assert cursor is not None and (cursor.prefix, cursor.suffix) == (
        "def f():\n    ", "\n    return x\n")
    spm = "<fim_suffix>\n    return x\n<fim_prefix>def f():\n    <fim_middle>"
    cursor = cursor_of(CompletionRequest(prompt=spm))
    assert cursor is not None and cursor.prefix == "def f():\n    "
    plain = cursor_of(CompletionRequest(prompt="def f():"))
    assert plain is not None and (plain.prefix, plain.suffix) == ("def f():", "")


def _plan(mode: str, prefix: str, suffix: str = "", path: str | None = None,
          **kw: object) -> Plan:
    plan = plan_for(apply_mode(CompletionRequest(prefix=prefix, suffix=suffix, path=path,
                                                 mode=mode, **kw)))  # type: ignore[arg-type]
    assert plan is not None
    return plan


def test_line_mode_keeps_only_the_first_line() -> None:
    assert shape(_plan("line", "x = "), "compute(a)  \ny = 2\n") == ("compute(a)", True)


def test_lines_repeating_the_suffix_are_dropped() -> None:
    prefix = "def total(items):\n    s = 0\n"
    suffix = "\n    return s\n"
    text = "    for i in items:\n        s += i\n    return s\n"
    assert shape(_plan("block", prefix, suffix), text)[0] == \
        "    for i in items:\n        s += i"
    # A repeat of the cursor line itself (the whole completion would duplicate what follows).
    assert shape(_plan("block", "def f():\n    ", "\n    return 1\n"), "return 1")[0] == ""


def test_the_cursor_lines_remainder_is_not_repeated() -> None:
    assert shape(_plan("line", "x = compute(", ")\n"), "a, b)")[0] == "a, b"
    assert shape(_plan("line", "d = {", "}\n"), "'a': 1}  ")[0] == "'a': 1"


def test_trailing_whitespace_is_dropped() -> None:
    assert shape(_plan("block", "def f():"), "\n    return 1   \n\n\t")[0] == \
        "\n    return 1"


def test_python_block_details() -> None:
    # else/elif/except/finally at the opener's depth continue the block
    assert shape(_plan("block", "if x:"), "\n    a()\nelse:\n    b()\nc()\n")[0] == \
        "\n    a()\nelse:\n    b()"
    # a docstring and a wrapped call at a lower indentation do not end it
    text = '\n    """Doc.\nstill doc\n"""\n    call(\nx)\n    return 1\nnext_thing()\n'
    assert shape(_plan("block", "def f():"), text)[0] == text[:text.index("\nnext")]
    # a decorator keeps its function at the top level
    text = "@cache\ndef g():\n    return 1\n\ndef h():\n    pass\n"
    assert shape(_plan("block", "import x\n\n"), text)[0] == "@cache\ndef g():\n    return 1"


def test_brace_block_details() -> None:
    # at the top level the first statement ends where its outermost bracket closes
    text = "function g() {\n  return 1;\n}\n\nfunction h() {}\n"
    assert shape(_plan("block", "", path="x.js"), text)[0] == \
        "function g() {\n  return 1;\n}"
    # `} else {` goes on
    text = "\n  if (a) {\n    b();\n  } else {\n    c();\n  }\n}\nmore();"
    assert shape(_plan("block", "void f() {", "\n}\n", path="x.c"), text)[0] == \
        "\n  if (a) {\n    b();\n  } else {\n    c();\n  }"
    # comments and strings hide brackets
    text = "\n  s = \"}\"; // }\n  /* } */ t = '}';\n}\nx"
    assert shape(_plan("block", "void f() {", path="x.c"), text)[0] == text[:text.index("\nx")]


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=300),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["openai", "ollama", "tgi"]),
       st.dictionaries(st.sampled_from(["mode", "options", "parameters", "x"]), JSON,
                       max_size=3),
       st.none() | st.text(max_size=300))
def test_any_body_or_header_gives_a_mode_or_a_short_error(protocol: str, body: dict[str, Any],
                                                          header: str | None) -> None:
    headers = {} if header is None else {HEADER_MODE: header}
    try:
        mode = requested_mode(protocol, body, headers, None)
    except ValueError as exc:
        message = str(exc)
        mode = None
    else:
        message = ""
    assert mode in (None, "line", "block", "auto") and len(message) <= 200


def test_where_each_protocol_carries_the_mode() -> None:
    assert requested_mode("openai", {"mode": "line"}, {}, None) == "line"
    assert requested_mode("ollama", {"options": {"mode": "block"}}, {}, None) == "block"
    assert requested_mode("ollama", {"mode": "block"}, {}, None) == "block"
    assert requested_mode("tgi", {"parameters": {"mode": "auto"}}, {}, None) == "auto"
    assert requested_mode("tgi", {"mode": "auto"}, {}, None) is None  # not where TGI puts it
    assert requested_mode("openai", {"mode": "line"}, {HEADER_MODE: "Block"}, None) == "block"
    assert requested_mode("openai", {"mode": "off"}, {}, "auto") is None
    assert requested_mode("openai", {}, {}, "auto") == "auto"



@pytest.mark.parametrize("prefix", ["(" * 262_144, "\n" * 262_144, '"""' + "x\n" * 131_000])
def test_a_huge_prefix_is_lexed_only_near_the_cursor(prefix: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # The prefix is the client's: lexing all of it held the gateway's loop for 0.1 s a request.
    from starcoder_router._autocomplete import cursor as cursor_module

    read: list[int] = []

    class CountingScanner(cursor_module.Scanner):
        def feed(self, text: str) -> None:
            read.append(len(text))
            super().feed(text)

    monkeypatch.setattr(cursor_module, "Scanner", CountingScanner)
    cursor_module.cursor_from(prefix, "\n", None, None).prefix_scanner()
    assert 0 < sum(read) <= cursor_module.LEX_WINDOW_CHARS


def test_a_block_near_the_cursor_is_cut_after_a_long_prefix() -> None:
    from starcoder_router._autocomplete.shaper import shape

    prefix = "x = 1\n" * 20_000 + "def f(a):\n    "
    req = apply_mode(CompletionRequest(prefix=prefix, suffix="\n", mode="block"))
    plan = plan_for(req)
    assert plan is not None
    text, _ = shape(plan, "return a + 1\n\nprint(f(2))\n")
    assert text == "return a + 1"
