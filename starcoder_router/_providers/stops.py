"""Stop sequences enforced on our side, for the stops a provider was not sent or cannot see.

Providers cap the number of stop strings (DeepInfra, Fireworks and TGI take four) and some never
see special tokens in the text they match stops against. So every answer passes through here: the
text is cut at the first stop that completes, and the finish reason becomes "stop". Usage stays
what the provider reported; the tokens past the stop were generated and billed all the same.

"First" means the stop whose match ends first, as a server that checks after each token would
find it; two matches that end together go to the longer one. Example::

    cut_at_stop("x = 1\\n\\ndef g", ("\\n\\n",))   # ("x = 1", True)

A stream holds back at most `len(longest stop) - 1` characters (only a tail that could begin a
stop), so a stop split across two chunks is still caught before any of it reaches the caller::

    cutter = StreamCutter(("<file_sep>",))
    cutter.push("pass<file")    # "pas"  ("s<file" might begin a stop)
    cutter.push("_sep>more")    # None: the stop completed, nothing more is passed on
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["StreamCutter", "cut_at_stop", "first_stop", "send_order"]


def first_stop(text: str, stops: Sequence[str]) -> int | None:
    """The index where the first completed stop in `text` starts, or None."""
    best: tuple[int, int] | None = None
    for stop in stops:
        if not stop:
            continue
        at = text.find(stop)
        if at < 0:
            continue
        key = (at + len(stop), at)  # earliest end; on a tie, the earlier (longer) match
        if best is None or key < best:
            best = key
    return None if best is None else best[1]


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """`text` up to its first stop, and whether a stop was found."""
    at = first_stop(text, stops)
    return (text, False) if at is None else (text[:at], True)


def send_order(stops: Sequence[str]) -> list[str]:
    """The order to send stops in when a provider takes only a few: as given (the caller's,
    then the prompt format's), whitespace-only ones such as "\\n\\n" last, so the control tokens
    that end a file or a turn reach the provider first. A lone "\\n" keeps its place: it ends
    every line, and a line completion the provider does not stop at runs on to its token
    limit. Stops left out are cut on our side."""
    return sorted(dict.fromkeys(s for s in stops if s), key=lambda s: s != "\n" and not s.strip())


class StreamCutter:
    """Cuts a stream of text deltas at the first stop, holding back what may begin one."""

    __slots__ = ("_any", "_firsts", "_hold", "_open", "_pending", "_stops", "stopped")

    def __init__(self, stops: Sequence[str]):
        self._stops = tuple(s for s in stops if s)
        self._hold = max((len(s) for s in self._stops), default=1) - 1
        self._firsts = "".join(sorted({s[0] for s in self._stops}))
        # All in C: does any stop occur, and the longest tail that begins one (a proper prefix
        # of a stop ending the text; the leftmost match is the longest).
        self._any = re.compile("|".join(map(re.escape, self._stops)) or "(?!)")
        prefixes = sorted({s[:i] for s in self._stops for i in range(1, len(s))}, key=len,
                          reverse=True)
        self._open = re.compile("(?:" + ("|".join(map(re.escape, prefixes)) or "(?!)") + r")\Z")
        self._pending = ""
        self.stopped = False

    def push(self, delta: str | None, *, end: bool = False) -> str | None:
        """The text that can safely go to the caller after `delta`; `end` releases the held
        tail (the provider said the generation is over). None when there is nothing to pass."""
        if self.stopped:
            return None
        buf = self._pending + delta if delta else self._pending
        if not buf:
            return None
        for c in self._firsts:
            if c in buf:
                break
        else:  # the common case: no stop can even begin here
            self._pending = ""
            return buf or None
        at = first_stop(buf, self._stops) if self._any.search(buf) else None
        if at is not None:
            self.stopped = True
            self._pending = ""
            return buf[:at] or None
        keep = 0 if end else self._open_tail(buf)
        self._pending = buf[len(buf) - keep:] if keep else ""
        out = buf[: len(buf) - keep]
        return out or None

    def _open_tail(self, buf: str) -> int:
        """The length of the longest tail of `buf` that begins some stop."""
        found = self._open.search(buf, max(0, len(buf) - self._hold))
        return len(buf) - found.start() if found else 0
