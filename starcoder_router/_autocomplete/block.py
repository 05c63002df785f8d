"""Where the code block opened at the cursor closes, found in completion text as it grows.

Two rules, chosen from the text before the cursor:

* **brackets** — the cursor follows an opening `(`, `[` or `{`, or the language uses braces
  (C, JavaScript, Go...). The block ends at the bracket that closes one opened before the
  cursor. When the suffix already starts with a closing bracket (an editor inserted the pair)
  the cut comes before that bracket, else just after it and the `)`, `]`, `;` or `,` that
  directly follow (`});`). At the top level, where no bracket is open, the block is the first
  statement: it ends at the end of the line on which its outermost bracket closes.
* **indentation** — Python and the like. After a line that ends with `:` the block ends at the
  first line indented no deeper than that line (`else`, `elif`, `except`, `finally` at that
  depth continue it). On a blank line indented by N columns it ends at the first line indented
  less than N; at column 0, or after a line that opens nothing, at the first line indented no
  deeper than the cursor's (the next statement; a line after a decorator continues it).

Only lines that start outside strings, comments and brackets opened in the completion count,
so a docstring or a wrapped argument list at a lower indentation never ends a block.
"""

from __future__ import annotations

from .cursor import Cursor, indent_width
from .scan import CLOSERS, OPENERS

__all__ = ["BlockEnd"]

_CONTINUE = frozenset({"else", "elif", "except", "finally"})
_TAIL = ");,]"


class BlockEnd:
    """Feed the completion with `feed(text)` (all of it so far); `cut` is set to the index where
    the block ends once that is certain, and `undecided` is the index from which text may
    still fall after the cut (None when everything read so far is before it)."""

    def __init__(self, cursor: Cursor):
        scanner, statement_indent = cursor.prefix_scanner()
        self._scanner = scanner
        self._base_depth = scanner.depth
        self.cut: int | None = None
        self.undecided: int | None = None
        self._pos = 0
        last = cursor.last_char
        opens = bool(last) and last in OPENERS
        self._brackets = opens or (cursor.style == "brace" and last != ":")
        ahead = cursor.suffix.lstrip()[:1]
        self._close_before = bool(ahead) and ahead in CLOSERS
        self._top_level = not opens and scanner.depth <= 0
        before = cursor.before
        if last == ":":
            self._base, self._equal_ends = statement_indent, True
        elif not before.strip() and before:
            self._base, self._equal_ends = indent_width(before), False
        else:
            self._base, self._equal_ends = indent_width(before), True
        self._closed_top = False
        self._tail = False  # after the bracket that ends the block, taking `);,]`
        # The current line: where it starts, whether it started in code outside brackets
        # opened in the completion, whether its first non-blank character was seen.
        self._line_start = 0
        self._line_no = 0
        self._line_counts = False
        # The cursor's own line is never a block end; a decorator begun on it is noted.
        self._head_seen = bool(before.strip())
        self._word_from: int | None = None
        self._after_decorator = False
        # Comments at the block's own depth: they belong to it if an `else` and the like
        # follows them, else the block ended before the first of them.
        self._comments_from: int | None = None

    def feed(self, text: str) -> None:
        if self.cut is not None:
            return
        step = self._scanner.step
        brackets = self._brackets
        pos = self._pos
        while pos < len(text) and self.cut is None:
            c = text[pos]
            if self._word_from is not None and not (c.isalnum() or c == "_"):
                self._decide_word(text, pos)
                if self.cut is not None:
                    break
            if brackets:
                self._bracket_char(c, pos, step(c))
            else:
                self._indent_char(text, c, pos)
                step(c)
            pos += 1
        self._pos = pos

    def end(self, text: str) -> None:
        """The completion is over: settle an undecided line."""
        self.feed(text)
        if self.cut is None and self._word_from is not None:
            self._decide_word(text, len(text))
        if self.cut is None and self._comments_from is not None:
            self.cut = self._comments_from

    # -- brackets ------------------------------------------------------------------------

    def _bracket_char(self, c: str, pos: int, change: int) -> None:
        depth = self._scanner.depth - self._base_depth
        if self._tail:
            if c not in _TAIL:
                self.cut = pos
            return
        if change < 0 and depth < 0:
            if self._close_before:
                self.cut = pos
            else:
                self._tail = True
            return
        if not self._top_level:
            return
        if change < 0 and depth == 0:
            self._closed_top = True
        elif c == "\n" and depth == 0 and self._closed_top and self._scanner.in_code:
            self.cut = pos

    # -- indentation ---------------------------------------------------------------------

    def _indent_char(self, text: str, c: str, pos: int) -> None:
        if c == "\n":
            scanner = self._scanner
            self._line_no += 1
            self._line_start = pos + 1
            # The newline itself ends a `#` comment; a string or bracket left open does not.
            self._line_counts = not scanner.in_text and \
                scanner.depth - self._base_depth <= 0
            self._head_seen = False
            return
        if self._head_seen or c in " \t\r\f\v":
            return
        self._head_seen = True
        if self._line_no == 0:
            self._after_decorator = c == "@"
            return
        if not self._line_counts:
            return
        indent = indent_width(text[self._line_start:pos])
        if indent < self._base:
            self.cut = self._line_start if self._comments_from is None else self._comments_from
        elif indent == self._base and self._equal_ends:
            if c == "@":
                self._after_decorator = True
            elif c == "#":
                if self._comments_from is None:
                    self._comments_from = self.undecided = self._line_start
            else:
                self._word_from = pos
                if self._comments_from is None:
                    self.undecided = self._line_start
        else:
            self._after_decorator = False
            self._comments_from = self.undecided = None

    def _decide_word(self, text: str, pos: int) -> None:
        assert self._word_from is not None
        word = text[self._word_from:pos]
        self._word_from = None
        comments, self._comments_from = self._comments_from, None
        self.undecided = None
        if word in _CONTINUE or self._after_decorator:
            self._after_decorator = False
            return
        self.cut = self._line_start if comments is None else comments
