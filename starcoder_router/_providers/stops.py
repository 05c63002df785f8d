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


def _failure(stop: str) -> tuple[int, ...]:
    """KMP's failure function: for each prefix of `stop`, the length of its longest proper
    prefix that is also its suffix."""
    fail = [0] * len(stop)
    k = 0
    for i in range(1, len(stop)):
        while k and stop[i] != stop[k]:
            k = fail[k - 1]
        if stop[i] == stop[k]:
            k += 1
        fail[i] = k
    return tuple(fail)


def _advance(k: int, text: str, stop: str, fail: tuple[int, ...]) -> int:
    """KMP: given `k`, the longest tail of the text so far that is a proper prefix of `stop`,
    the same after `text` follows (the text holds no whole `stop`). A partial match still open
    at the end starts within its last `len(stop) - 1` characters, so a longer `text` restarts
    there, from the first character that could begin `stop`: each call costs
    O(min(len(text), len(stop))), amortised."""
    if k == 0 or len(text) >= len(stop) - 1:
        start = text.find(stop[0], max(0, len(text) - len(stop) + 1))
        if start < 0:
            return 0
        k, text = 0, text[start:]
    for ch in text:
        while k and stop[k] != ch:
            k = fail[k - 1]
        if stop[k] == ch:
            k += 1
    return k


class StreamCutter:
    """Cuts a stream of text deltas at the first stop, holding back what may begin one.

    Each push costs time linear in the new text and the stops' total length: `str.find` per
    stop over the new text and the held tail (CPython switches to the linear two-way search on
    long needles), and one KMP automaton per stop that carries its state from push to push, so
    each character is matched once. No pattern is built from the stops: their number and
    length cost no more than reading them.
    """

    __slots__ = ("_fails", "_firsts", "_pending", "_states", "_stops", "stopped")

    def __init__(self, stops: Sequence[str]):
        self._stops = tuple(dict.fromkeys(s for s in stops if s))
        self._fails = tuple(_failure(s) for s in self._stops)
        self._firsts = "".join(sorted({s[0] for s in self._stops}))
        self._states = [0] * len(self._stops)  # KMP state per stop at the end of _pending
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
            if self._pending:
                self._states = [0] * len(self._stops)
            self._pending = ""
            return buf or None
        at = first_stop(buf, self._stops)
        if at is not None:
            self.stopped = True
            self._pending = ""
            return buf[:at] or None
        if end:
            self._pending, self._states = "", [0] * len(self._stops)
            return buf
        keep = self._open_tail(delta if self._pending else buf)
        self._pending = buf[len(buf) - keep:] if keep else ""
        out = buf[: len(buf) - keep]
        return out or None

    def _open_tail(self, new: str | None) -> int:
        """The length of the longest tail of the buffer that begins some stop, after `new`."""
        if new:
            self._states = [_advance(k, new, stop, fail) if k or stop[0] in new else 0
                            for k, stop, fail in zip(self._states, self._stops, self._fails,
                                                     strict=True)]
        return max(self._states, default=0)
