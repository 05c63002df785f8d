"""Text of a known token count, for workloads that give only counts.

The router decides from text: it renders the prompt format, counts, fits and trims by lines. So
a request given as "812 prefix tokens" becomes 812 characters (one control character repeated, in
lines of `LINE_TOKENS` with the newline), and `SyntheticCounter` counts each as one token.
Rendering, fitting and trimming then run unchanged and land on the given sizes exactly.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .._routing.render import SPECIAL_TOKENS
from .._routing.tokens import TokenCounter

__all__ = ["LINE_TOKENS", "UNIT", "SyntheticCounter", "synthetic_lines", "synthetic_text"]

# One ASCII control character never found in code or in a prompt format: one byte per token
# keeps the router's byte bound exact, so most fits are proved without counting at all.
UNIT = "\x01"
LINE_TOKENS = 12
_LINE = UNIT * (LINE_TOKENS - 1) + "\n"
# A control string of the FIM / repository format with the path or name that follows it.
_FRAME = re.compile("<[a-z_|]+>[^\x01\n<]*")
_SPECIALS = frozenset(SPECIAL_TOKENS)


def synthetic_lines(tokens: int, *, cursor: bool = False) -> str:
    """`tokens` synthetic tokens (each character, newlines included, is one) in lines; with
    `cursor` the partial line comes last (a prefix ends mid-line at the cursor), else first."""
    full, rest = divmod(tokens, LINE_TOKENS)
    if cursor:
        return _LINE * full + UNIT * rest
    return (UNIT * (rest - 1) + "\n" if rest else "") + _LINE * full


def synthetic_text(tokens: int) -> str:
    """A left-to-right prompt of `tokens` synthetic tokens."""
    return synthetic_lines(tokens, cursor=True)


class SyntheticCounter:
    """Counts synthetic text exactly and everything else with `inner`.

    In a synthetic prompt every character is a token except the format around it (control
    strings, one token each, and the paths after them, counted by `inner`). `exact` is True: a
    counts-only workload knows its sizes.
    """

    exact = True

    def __init__(self, inner: TokenCounter):
        self._inner = inner

    def count(self, text: str) -> int:
        if text == _LINE:
            return LINE_TOKENS  # trimming counts line by line: most lines are this one
        if UNIT not in text:
            return self._inner.count(text)
        if "<" not in text:
            if text[0] == UNIT or text[0] == "\n":
                return len(text)
            return self._mixed(text)
        if text[0] != "<" and text[0] != UNIT:
            return self._mixed(text)  # a chat template: rare enough to count the slow way
        n = len(text)
        for piece in _FRAME.findall(text):
            n -= len(piece)
            n += self._frame(piece)
        return n

    def count_many(self, texts: Sequence[str]) -> list[int]:
        return [self.count(t) for t in texts]

    def _frame(self, piece: str) -> int:
        end = piece.index(">") + 1
        special, rest = piece[:end], piece[end:]
        head = 1 if special in _SPECIALS else self._inner.count(special)
        return head + (self._inner.count(rest) if rest else 0)

    def _mixed(self, text: str) -> int:
        synthetic = text.count(UNIT)
        rest = text.replace(UNIT, "")
        return synthetic + (self._inner.count(rest) if rest else 0)

    def __repr__(self) -> str:
        return f"SyntheticCounter(inner={self._inner!r})"
