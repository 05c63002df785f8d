"""The text around the cursor, and what it says about the code being written.

A request carries the cursor as `prefix`/`suffix`, or as a raw `prompt` that an editor filled
with StarCoder 2's FIM sentinels itself (llm-ls does this for TGI's `/generate`), or as a plain
left-to-right `prompt` (the cursor is at its end, nothing follows).
"""

from __future__ import annotations

import re
from typing import NamedTuple

from .._routing.request import CompletionRequest
from .scan import Scanner, Style

__all__ = ["Cursor", "cursor_from", "cursor_of", "indent_width"]

_FIM_PREFIX, _FIM_SUFFIX, _FIM_MIDDLE = "<fim_prefix>", "<fim_suffix>", "<fim_middle>"

# Extensions whose blocks end by indentation; every other known language uses brackets.
_INDENT_EXT = frozenset({"py", "pyi", "pyw", "pyx", "nim", "coffee", "yaml", "yml"})
_BRACE_EXT = frozenset({
    "c", "h", "cc", "cpp", "cxx", "hpp", "hh", "cs", "java", "kt", "kts", "scala", "go", "rs",
    "js", "jsx", "mjs", "cjs", "ts", "tsx", "swift", "php", "dart", "css", "scss", "json",
    "m", "mm", "groovy", "zig", "sol", "proto",
})
# How far back and ahead to look when guessing the language family from the text.
_SNIFF_CHARS = 4000
# How much of the prefix is lexed for brackets, strings and indentation. The prefix is the
# client's (up to the gateway's text cap, 256 Ki characters), and lexing a hostile one costs
# about 0.5 µs a character on the event loop (130 ms for the whole cap). Editors send 1-8 KB of
# prefix (Continue's default budget is 1,024 tokens), so the last 16 Ki characters are lexed,
# starting at the earliest line in them that begins at column 0 with a name, a decorator or a
# comment (top-level code, outside any string or bracket in real files); a bracket opened
# before that is taken as not open.
LEX_WINDOW_CHARS = 16_384
_TOP_LEVEL_LINE = re.compile(r"\n(?=[A-Za-z_@#])")


def indent_width(line: str) -> int:
    """Columns of leading whitespace, a tab counting as reaching the next multiple of 8."""
    col = 0
    for c in line:
        if c == " ":
            col += 1
        elif c == "\t":
            col += 8 - col % 8
        else:
            break
    return col


class Cursor(NamedTuple):
    """The cursor's surroundings: all text before and after it, and the language family."""

    prefix: str
    suffix: str
    style: Style

    @property
    def before(self) -> str:
        """The cursor's line up to the cursor."""
        return self.prefix[self.prefix.rfind("\n") + 1:]

    @property
    def after(self) -> str:
        """The cursor's line from the cursor on."""
        end = self.suffix.find("\n")
        return self.suffix if end < 0 else self.suffix[:end]

    @property
    def last_char(self) -> str:
        """The last character before the cursor that is not whitespace ("" at the start)."""
        tail = self.prefix.rstrip()
        return tail[-1:] if tail else ""

    def prefix_scanner(self) -> tuple[Scanner, int]:
        """A scanner that has read the prefix (strings or comments left open carry over), and
        the indentation of the last line that began a statement: outside brackets and strings,
        so the `def` of a signature wrapped over several lines, not its last line."""
        scanner = Scanner(self.style)
        statement_indent = 0
        for line in _lexed_tail(self.prefix).splitlines(keepends=True):
            if scanner.depth <= 0 and not scanner.in_text and line.strip():
                statement_indent = indent_width(line)
            scanner.feed(line)
        return scanner, statement_indent


def _lexed_tail(prefix: str) -> str:
    """The part of `prefix` that is lexed: its last `LEX_WINDOW_CHARS`, from the first
    top-level line in them, else the first line start, else the window's start."""
    start = len(prefix) - LEX_WINDOW_CHARS
    if start <= 0:
        return prefix
    top = _TOP_LEVEL_LINE.search(prefix, start)
    line = top.start() if top is not None else prefix.find("\n", start)
    return prefix[line + 1:] if line >= 0 else prefix[start:]


def cursor_of(request: CompletionRequest) -> Cursor | None:
    """The cursor of a fill-in-the-middle or left-to-right request; None for chat."""
    return cursor_from(request.prefix, request.suffix, request.prompt, request.path)


def cursor_from(prefix: str | None, suffix: str | None, prompt: str | None,
                path: str | None) -> Cursor | None:
    """The cursor given a request's fields (`cursor_of` without a validated request)."""
    if isinstance(prefix, str):
        suffix = suffix if isinstance(suffix, str) else ""
    elif isinstance(prompt, str):
        prefix, suffix = _split_sentinels(prompt)
    else:
        return None
    return Cursor(prefix, suffix, _style(path if isinstance(path, str) else None, prefix,
                                         suffix))


def _split_sentinels(prompt: str) -> tuple[str, str]:
    """(prefix, suffix) of a prompt in StarCoder 2's FIM format, PSM or SPM; a prompt without
    the sentinels is all prefix."""
    p, s, m = prompt.rfind(_FIM_PREFIX), prompt.rfind(_FIM_SUFFIX), prompt.rfind(_FIM_MIDDLE)
    if min(p, s, m) < 0:
        return prompt, ""
    if p < s < m:  # prefix, suffix, middle
        return prompt[p + len(_FIM_PREFIX):s], prompt[s + len(_FIM_SUFFIX):m]
    if s < p < m:  # suffix, prefix, middle (SPM as in the StarCoder 2 paper)
        return prompt[p + len(_FIM_PREFIX):m], prompt[s + len(_FIM_SUFFIX):p]
    return prompt, ""


def _style(path: str | None, prefix: str, suffix: str) -> Style:
    if path:
        ext = path.rsplit(".", 1)[-1].lower() if "." in path else ""
        if ext in _INDENT_EXT:
            return "indent"
        if ext in _BRACE_EXT:
            return "brace"
    last = prefix.rstrip()[-1:]
    if last == ":":
        return "indent"
    if last == "{":
        return "brace"
    text = prefix[-_SNIFF_CHARS:] + suffix[:_SNIFF_CHARS]
    braces = text.count("{") + text.count("}") + text.count(";\n")
    colons = text.count(":\n") * 2 + text.count("\ndef ") + text.count("\n    def ")
    return "brace" if braces > colons else "indent"
