"""Workload lines made ready once: the request, its prompt's size and whether it may be trimmed,
for lines that say the same thing at different times.

Preparing a line (`runner.prepared`) builds its `CompletionRequest`, synthetic text included,
and counts its prompt. Both depend only on what the line asks, not on when: two lines that
differ only in their timestamp, output length or session get equal requests and counts. A
workload repeated to size, or an editor that sends the same request again, repeats lines, so
each distinct line is prepared once and its request shared (requests are frozen).

The memo is bounded. A line is kept only when it comes a second time (a workload whose lines
never repeat keeps no requests, only a bounded set of hashes); then up to `MAX_ENTRIES` lines
and `MAX_CHARS` characters of their text are kept, one string per synthetic size, for the
rest of the run (not evicted: a workload that repeats with a long period still finds the lines
kept first).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .._autocomplete.cache import cache_key, signature
from .._routing.render import render
from .._routing.request import CompletionRequest
from .synthetic import START, SyntheticCounter, synthetic_lines
from .workload import WorkloadRequest

__all__ = ["MAX_CHARS", "MAX_ENTRIES", "Made", "PreparedMemo"]

MAX_ENTRIES = 16384
MAX_CHARS = 64 << 20
# Lines seen once, by hash, before the set starts again.
_MAX_SEEN = 1 << 17
# A line's fields that say when or how it ran, not what it asks: left out of its key.
_PER_LINE = frozenset({"timestamp", "output_tokens", "session", "accepts_previous"})


class Made:
    """A line made ready: its request, the synthetic parts it was made of (`(text, tokens)`,
    told to the counter again each time it is used), its prompt's size, and whether its
    prompt may need trimming. `repeat_key`: the exact-repeat cache's key, worked out once."""

    __slots__ = ("_repeat_key", "parts", "request", "tokens", "trimmable")

    def __init__(self, request: CompletionRequest, parts: tuple[tuple[str, int], ...],
                 tokens: int, trimmable: bool):
        self.request = request
        self.parts = parts
        self.tokens = tokens
        self.trimmable = trimmable
        self._repeat_key: bytes | None = None

    def repeat_key(self) -> bytes:
        if self._repeat_key is None:
            self._repeat_key = cache_key(self.request, signature(self.request))
        return self._repeat_key


def make(wr: WorkloadRequest, counter: SyntheticCounter, smallest_window: int,
         lines: Callable[[int, bool], str] | None = None) -> Made:
    """Build and count `wr`'s request. A synthetic FIM request longer than `smallest_window`
    is marked trimmable."""
    parts: list[tuple[str, int]] = []

    def known(text: str, tokens: int) -> None:
        parts.append((text, tokens))
        counter.known(text, tokens)

    req = wr.to_request(made=known, lines=lines)
    given = wr.input_tokens
    trimmable = False
    if given is not None and wr.kind == "fim":
        tokens = counter.fim_tokens(req, given)
        trimmable = tokens + wr.max_tokens > smallest_window and \
            all(START in f.text for f in req.files)
    else:
        tokens = counter.count(render(req).prompt)
    return Made(req, tuple(parts), tokens, trimmable)


class PreparedMemo:
    """Lines made ready, by what they ask (see the module's docstring)."""

    def __init__(self, counter: SyntheticCounter, smallest_window: int, *,
                 max_entries: int = MAX_ENTRIES, max_chars: int = MAX_CHARS):
        self._counter = counter
        self._smallest = smallest_window
        self._max_entries = max_entries
        self._max_chars = max_chars
        self._chars = 0
        self._entries: dict[tuple[Any, ...], Made] = {}
        self._seen: set[int] = set()
        self._texts: dict[tuple[int, bool], str] = {}
        self.hits = 0

    def get(self, wr: WorkloadRequest) -> Made:
        """`make(wr)`, or what it made for an earlier line that asks the same."""
        key = tuple([v for k, v in wr.__dict__.items() if k not in _PER_LINE])
        found = self._entries.get(key)
        if found is not None:
            self.hits += 1
            known = self._counter.known
            for text, tokens in found.parts:
                known(text, tokens)
            return found
        h = hash(key)
        full = len(self._entries) >= self._max_entries or self._chars >= self._max_chars
        if full or h not in self._seen:
            if not full:
                if len(self._seen) >= _MAX_SEEN:
                    self._seen.clear()
                self._seen.add(h)
            return make(wr, self._counter, self._smallest)
        made = make(wr, self._counter, self._smallest, self._lines)
        self._chars += sum(len(t) for t in (wr.prompt, wr.prefix, wr.suffix) if t) + \
            sum(len(f.text) for f in wr.files)
        self._entries[key] = made
        return made

    def _lines(self, tokens: int, cursor: bool) -> str:
        """`synthetic_lines(tokens, cursor=cursor)`, one string per size kept."""
        key = (tokens, cursor)
        text = self._texts.get(key)
        if text is None:
            text = synthetic_lines(tokens, cursor=cursor)
            self._texts[key] = text
            self._chars += len(text)
        return text
