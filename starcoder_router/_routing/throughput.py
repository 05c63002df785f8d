"""How many tokens each self-hosted deployment gets through per second of busy time, as observed.

A machine paid by the hour costs the same whether it serves one request or four at once, so the
figure that prices its tokens is tokens per second of *busy wall time* (time during which at
least one request was in flight), not per second of summed request latency: four overlapping
2-second requests on one server are 2 busy seconds, not 8.

Each finished attempt reports its start, its end and the tokens it moved (prompt plus output).
The meter keeps, per deployment, the union of recent busy spans, so only the part of a new span
not already covered adds busy time. Old observations fade by busy time, not wall time (half of
their weight per `half_life_s` of new busy time), so a server that sat idle overnight keeps what
it learned, while a changed workload takes over within a few half-lives. Memory and the work per
observation are bounded: at most `max_spans` disjoint spans are kept per deployment (a span
older than those can only be counted twice, which makes the machine look slower, never cheaper).

Example::

    meter = ThroughputMeter()
    meter.observe("ollama/starcoder2-3b", started=0.0, ended=2.0, tokens=1_000)
    meter.observe("ollama/starcoder2-3b", started=1.0, ended=3.0, tokens=1_000)
    meter.observed("ollama/starcoder2-3b")
    # Observed(tokens=2000.0, busy_s=3.0, weight=2.0, requests=2)
"""

from __future__ import annotations

import bisect
import math
import threading
from typing import NamedTuple

__all__ = ["Observed", "ThroughputMeter"]


class Observed(NamedTuple):
    """A deployment's decayed totals: tokens moved, busy seconds and attempts (`weight`), all
    faded alike; and how many attempts were observed in all."""

    tokens: float
    busy_s: float
    weight: float
    requests: int


class _Window:
    """One deployment's record (mutable, guarded by the meter's lock)."""

    __slots__ = ("busy_s", "requests", "spans", "tokens", "weight")

    def __init__(self) -> None:
        self.tokens = 0.0
        self.busy_s = 0.0
        self.weight = 0.0
        self.requests = 0
        self.spans: list[tuple[float, float]] = []  # disjoint, sorted by start


class ThroughputMeter:
    """Per-deployment tokens and busy seconds, thread-safe; one per router."""

    def __init__(self, *, half_life_s: float = 900.0, max_spans: int = 64):
        if not (half_life_s > 0 and math.isfinite(half_life_s)) or max_spans < 1:
            raise ValueError("half_life_s must be a positive number and max_spans at least 1")
        self.half_life_s = half_life_s
        self.max_spans = max_spans
        self._windows: dict[str, _Window] = {}
        self._lock = threading.Lock()
        # Changes with every observation: a reader that saw the same version may keep what it
        # worked out from the meter then (prices are recomputed only after new observations).
        self.version = 0

    def observe(self, deployment: str, *, started: float, ended: float, tokens: int) -> None:
        """One attempt on `deployment` ran from `started` to `ended` (monotonic seconds) and
        moved `tokens` tokens (0 for a failure: the machine was busy all the same)."""
        ended = max(ended, started)
        tokens = max(0, tokens)
        with self._lock:
            w = self._windows.get(deployment)
            if w is None:
                w = self._windows[deployment] = _Window()
            new_busy = self._cover(w, started, ended)
            fade = 0.5 ** (new_busy / self.half_life_s)
            w.tokens = w.tokens * fade + tokens
            w.busy_s = w.busy_s * fade + new_busy
            w.weight = w.weight * fade + 1.0
            w.requests += 1
            self.version += 1

    def observed(self, deployment: str) -> Observed | None:
        """What was observed of `deployment`, or None before its first attempt ended."""
        with self._lock:
            w = self._windows.get(deployment)
            return None if w is None else Observed(w.tokens, w.busy_s, w.weight, w.requests)

    def _cover(self, w: _Window, start: float, end: float) -> float:
        """Add [start, end] to `w`'s spans; the length of it no span covered yet."""
        spans = w.spans
        # Disjoint spans sorted by start are sorted by end too: the ones [start, end] touches
        # are the run from the first that ends at or after `start` to the last that begins at
        # or before `end`.
        i = bisect.bisect_left(spans, start, key=_end)
        j = bisect.bisect_right(spans, end, key=_start)
        overlap = 0.0
        lo, hi = start, end
        for a, b in spans[i:j]:
            overlap += min(b, end) - max(a, start)
            lo, hi = min(lo, a), max(hi, b)
        spans[i:j] = [(lo, hi)]
        if len(spans) > self.max_spans:
            del spans[: len(spans) - self.max_spans]
        return max(0.0, (end - start) - overlap)


def _start(span: tuple[float, float]) -> float:
    return span[0]


def _end(span: tuple[float, float]) -> float:
    return span[1]
