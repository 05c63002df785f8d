"""A tiny incremental lexer: where brackets, strings and comments are, one character at a time.

Enough of a lexer to find the end of a code block in text that is still arriving: a bracket
inside a string or a comment is not a bracket, and a line that starts inside a triple-quoted
string says nothing about indentation. Two families: "indent" (Python: `#` comments, `'''`
strings) and "brace" (C, JavaScript, Go, Rust...: `//` and `/* */` comments, backtick strings).
"""

from __future__ import annotations

import re
from typing import Literal

__all__ = ["CLOSERS", "OPENERS", "Scanner", "Style"]

Style = Literal["indent", "brace"]

OPENERS = "([{"
CLOSERS = ")]}"

_CODE, _STR, _LINE_COMMENT, _BLOCK_COMMENT = 0, 1, 2, 3

_CODE_INDENT = re.compile(r"[()\[\]{}\"'#]")
_CODE_BRACE = re.compile(r"[()\[\]{}\"'`/*]")
_IN_STRING = {q: re.compile("[\\\\\n" + q + "]") for q in "\"'`"}
_NEWLINE = re.compile("\n")
_COMMENT_END = re.compile("[*/]")


class Scanner:
    """Feed characters with `step`; `depth` counts the brackets open since the scanner began
    (negative once a bracket opened before it closes)."""

    __slots__ = ("_empty", "_esc", "_prev", "_q", "_run", "_triple", "depth", "state", "style")

    def __init__(self, style: Style):
        self.style = style
        self.state = _CODE
        self.depth = 0
        self._q = ""
        self._triple = False
        self._esc = False
        self._run = 0  # consecutive closing quotes seen inside a triple-quoted string
        self._empty = ""  # the quote of an empty string that just closed ("" may begin """)
        self._prev = ""

    @property
    def in_code(self) -> bool:
        return self.state == _CODE

    @property
    def in_text(self) -> bool:
        """Inside a string or a block comment, where a new line is not a new statement."""
        return self.state in (_STR, _BLOCK_COMMENT)

    def feed(self, text: str) -> None:
        """`step` over all of `text`, jumping over the characters that change nothing (most
        of them: a prefix of a few kilobytes is read in well under a millisecond)."""
        step = self.step
        at, end = 0, len(text)
        while at < end:
            if self._esc:  # the character after a backslash is never special
                step(text[at])
                at += 1
                continue
            found = self._special().search(text, at)
            nxt = found.start() if found else end
            if nxt > at:
                self._prev = text[nxt - 1]
                self._empty = ""
                self._run = 0
            if nxt < end:
                step(text[nxt])
            at = nxt + 1

    def _special(self) -> re.Pattern[str]:
        """The characters that may change the state, in the current state."""
        state = self.state
        if state == _CODE:
            return _CODE_INDENT if self.style == "indent" else _CODE_BRACE
        if state == _STR:
            return _IN_STRING[self._q]
        return _NEWLINE if state == _LINE_COMMENT else _COMMENT_END

    def step(self, c: str) -> int:
        """Take one character; the bracket change it made in code (+1, -1 or 0)."""
        prev, self._prev = self._prev, c
        state = self.state
        if state == _CODE:
            empty, self._empty = self._empty, ""
            if c in OPENERS:
                self.depth += 1
                return 1
            if c in CLOSERS:
                self.depth -= 1
                return -1
            if c in "\"'" or (c == "`" and self.style == "brace"):
                if empty == c and self.style == "indent":
                    self._open(c, triple=True)
                else:
                    self._open(c, triple=c == "`")
            elif self.style == "indent":
                if c == "#":
                    self.state = _LINE_COMMENT
            elif prev == "/" and c in "/*":
                self.state = _LINE_COMMENT if c == "/" else _BLOCK_COMMENT
                self._prev = ""  # "/*/" does not close the comment it opens
            return 0
        if state == _LINE_COMMENT:
            if c == "\n":
                self.state = _CODE
        elif state == _BLOCK_COMMENT:
            if prev == "*" and c == "/":
                self.state = _CODE
                self._prev = ""
        elif self._esc:
            self._esc = False
        elif c == "\\":
            self._esc = True
        elif self._triple:
            if c == self._q:
                self._run += 1
                if self._run == 3 or self._q == "`":
                    self.state = _CODE
            else:
                self._run = 0
        elif c == self._q:
            self.state = _CODE
            if prev == self._q:  # the quote right after the opening one: an empty string
                self._empty = c
        elif c == "\n":  # an unterminated one-line string ends with its line
            self.state = _CODE
        return 0

    def _open(self, quote: str, *, triple: bool) -> None:
        self.state = _STR
        self._q = quote
        self._triple = triple
        self._run = 0
        self._esc = False
        self._prev = quote
