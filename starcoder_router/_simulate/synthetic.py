"""Text of a known token count, for workloads that give only counts.

The router decides from text: it renders the prompt format, bounds and counts tokens, fits and
trims by lines. So a request given as "812 prefix tokens" becomes 812 synthetic tokens in lines of
`LINE_TOKENS` (the newline being one of them), and `SyntheticCounter` counts them exactly.
Rendering, fitting and trimming then run unchanged and land on the given sizes.

Each token is one `START` character and two or three `FILL` characters, 3.5 bytes on average: the
bytes per token of real code that the router assumes when it ranks a prompt whose fit was proved by
its byte length alone. Synthetic text of one byte per token would make every such prompt look
three times cheaper than it is.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .._routing.render import SPECIAL_TOKENS
from .._routing.tokens import TokenCounter

__all__ = ["LINE_TOKENS", "START", "SyntheticCounter", "synthetic_lines", "synthetic_text"]

# ASCII control characters that no source file or prompt format uses.
START = "\x01"
FILL = "\x02"
LINE_TOKENS = 12
# Eleven tokens of 4, 4, 3, 4, 4, 3... bytes and the newline: 42 bytes, 3.5 per token.
_TOKENS = tuple(START + FILL * (3 if i % 3 != 2 else 2) for i in range(LINE_TOKENS - 1))
_LINE = "".join(_TOKENS) + "\n"
# A control string of the FIM / repository format with the path or name that follows it.
_FRAME = re.compile("<[a-z_|]+>[^\x01\x02\n<]*")
_SPECIALS = frozenset(SPECIAL_TOKENS)


def synthetic_lines(tokens: int, *, cursor: bool = False) -> str:
    """`tokens` synthetic tokens in lines; with `cursor` the partial line comes last (a prefix
    ends mid-line at the cursor), else first."""
    full, rest = divmod(tokens, LINE_TOKENS)
    if cursor:
        return _LINE * full + "".join(_TOKENS[:rest])
    return ("".join(_TOKENS[:rest - 1]) + "\n" if rest else "") + _LINE * full


def synthetic_text(tokens: int) -> str:
    """A left-to-right prompt of `tokens` synthetic tokens."""
    return synthetic_lines(tokens, cursor=True)


class SyntheticCounter:
    """Counts synthetic text exactly and everything else with `inner`.

    In a synthetic prompt each `START` and each newline is a token; the format around it
    (control strings, one token each, and the paths after them) is counted by `inner`. `exact`
    is True: a counts-only workload knows its sizes.
    """

    exact = True

    def __init__(self, inner: TokenCounter):
        self._inner = inner

    def count(self, text: str) -> int:
        if text == _LINE:
            return LINE_TOKENS  # trimming counts line by line: most lines are this one
        if START not in text:
            return self._inner.count(text)
        n = text.count(START) + text.count("\n")
        if text[0] == "<":
            for piece in _FRAME.findall(text):
                n += self._frame(piece)
        elif text[0] not in (START, "\n"):
            n += self._other(text)  # a chat template around synthetic text: rare
        return n

    def count_many(self, texts: Sequence[str]) -> list[int]:
        return [self.count(t) for t in texts]

    def _frame(self, piece: str) -> int:
        end = piece.index(">") + 1
        special, rest = piece[:end], piece[end:]
        head = 1 if special in _SPECIALS else self._inner.count(special)
        return head + (self._inner.count(rest) if rest else 0)

    def _other(self, text: str) -> int:
        rest = text.replace(START, "").replace(FILL, "").replace("\n", "")
        return self._inner.count(rest) if rest else 0

    def __repr__(self) -> str:
        return f"SyntheticCounter(inner={self._inner!r})"
