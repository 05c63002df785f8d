"""One policy's numbers, gathered while the simulation runs instead of from a list of every
request's outcome: the summary's totals, the report's points and the first refused or trimmed
requests. Memory stays a few numbers per request (the latencies, whose quantiles need them all,
and the points of the cost and budget lines, which are thinned only once their count is known)
instead of a record per request.

Outcomes arrive in two orders, because the old batch code read them in two: by request number
(the workload's order) for the summary and the list of refused requests, and by the time they
finished (ties by request number, as a stable sort leaves them) for the lines over time.
`OutcomeOrder` turns the order requests finish in into both.
"""

from __future__ import annotations

import sys
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Mapping

from .records import RequestOutcome

__all__ = ["MAX_LISTED", "OutcomeOrder", "Tally", "tally_of_outcomes"]

# The report lists this many refused or trimmed requests per policy (and counts the rest).
MAX_LISTED = 300


class _Sum:
    """The float `sum()` of the values added, bit for bit, without keeping them: plain
    addition before Python 3.12, Neumaier's compensated sum from 3.12, as `builtins.sum` does
    there (CPython's Python/bltinmodule.c, `builtin_sum_impl`)."""

    __slots__ = ("_c", "_s")
    _compensated = sys.version_info >= (3, 12)

    def __init__(self) -> None:
        self._s = 0.0
        self._c = 0.0

    def add(self, x: float) -> None:
        s = self._s
        t = s + x
        if self._compensated:
            if abs(s) >= abs(x):
                self._c += (s - t) + x
            else:
                self._c += (x - t) + s
        self._s = t

    @property
    def value(self) -> float:
        c = self._c
        return self._s + c if c and c - c == 0.0 else self._s  # c - c == 0: c is finite


class Tally:
    """One policy's running numbers. Feed every outcome once to `by_request` (in request
    order) and once to `by_time` (in the order requests finished); `limits` maps each budget
    key to its limit and must know a key before an outcome names it."""

    def __init__(self, limits: Mapping[str, int]):
        self._limits = limits
        # The summary, in request order.
        self.requests = 0
        self.served = 0
        self.cost_nano = 0
        self.cost_by_tenant_nano: Counter[str] = Counter()
        self.by_deployment: Counter[str] = Counter()
        self.refused_by_reason: Counter[str] = Counter()
        self.trimmed_requests = 0
        self.tokens_trimmed = 0
        self.retried_requests = 0
        self.latencies = array("d")
        self._quality = _Sum()
        self.quality_count = 0
        self.listed: list[RequestOutcome] = []
        self.listed_total = 0
        # The report's lines, in the order requests finished.
        self.last_finished = 0.0
        self.cost_hours = array("d")
        self.cost_running_nano = array("q")
        self._running = 0
        # Per budget (`tenant:ide/day`), one (hours, % left) line per period.
        self.burn: dict[str, list[tuple[array[float], array[float]]]] = {}
        self._spent: dict[str, int] = {}
        self._period: dict[str, str] = {}

    @property
    def quality(self) -> float | None:
        """The mean expected quality of the served requests that have one."""
        return self._quality.value / self.quality_count if self.quality_count else None

    def by_request(self, o: RequestOutcome) -> None:
        self.requests += 1
        self.cost_nano += o.cost_nano
        self.cost_by_tenant_nano[o.tenant] += o.cost_nano
        if o.refused is not None:
            self.refused_by_reason[o.refused] += 1
        else:
            self.served += 1
            if o.deployment:
                self.by_deployment[o.deployment] += 1
            if o.trimmed_tokens:
                self.trimmed_requests += 1
                self.tokens_trimmed += o.trimmed_tokens
            if o.attempts > 1:
                self.retried_requests += 1
            self.latencies.append(o.latency)
            if o.quality is not None:
                self._quality.add(o.quality)
                self.quality_count += 1
        if o.refused is not None or o.trimmed_tokens:
            self.listed_total += 1
            if len(self.listed) < MAX_LISTED:
                self.listed.append(o)

    def by_time(self, o: RequestOutcome) -> None:
        self.last_finished = max(self.last_finished, o.finished)
        if not o.cost_nano:
            return
        hours = o.finished / 3600
        self._running += o.cost_nano
        self.cost_hours.append(hours)
        self.cost_running_nano.append(self._running)
        for key in o.budgets:
            budget = key.partition("|")[0]
            limit = self._limits[key]
            lines = self.burn.setdefault(budget, [])
            if self._period.get(budget) != key:  # a new period: the line starts again, full
                self._period[budget] = key
                lines.append((array("d", [hours]), array("d", [100.0])))
            spent = self._spent[key] = self._spent.get(key, 0) + o.cost_nano
            xs, ys = lines[-1]
            xs.append(hours)
            ys.append(100 * max(0, limit - spent) / limit if limit else 0.0)


class OutcomeOrder:
    """Takes outcomes in the order requests finish (the simulated clock never goes back) and
    hands them on in request order and in finishing order, ties by request number. Holds only
    the requests still in flight before them and those that finished at the same instant."""

    def __init__(self, in_request_order: Callable[[RequestOutcome], None],
                 in_time_order: Callable[[RequestOutcome], None]):
        self._by_request = in_request_order
        self._by_time = in_time_order
        self._waiting: dict[int, RequestOutcome] = {}
        self._next = 0
        self._same_instant: list[RequestOutcome] = []

    def finished(self, o: RequestOutcome) -> None:
        group = self._same_instant
        if group and group[0].finished != o.finished:
            self._flush_instant()
        group.append(o)
        waiting = self._waiting
        if o.number != self._next:
            waiting[o.number] = o
            return
        self._by_request(o)
        self._next += 1
        while waiting and self._next in waiting:
            self._by_request(waiting.pop(self._next))
            self._next += 1

    def close(self) -> None:
        self._flush_instant()
        for number in sorted(self._waiting):  # numbers never started (cannot happen) last
            self._by_request(self._waiting.pop(number))

    def _flush_instant(self) -> None:
        group = self._same_instant
        if len(group) == 1:
            self._by_time(group.pop())
            return
        group.sort(key=lambda o: o.number)
        for o in group:
            self._by_time(o)
        group.clear()


def tally_of_outcomes(outcomes: Iterable[RequestOutcome], limits: Mapping[str, int]) -> Tally:
    """The tally of a list of outcomes in request order, as a stored run has them."""
    listed = list(outcomes)
    tally = Tally(limits)
    for o in listed:
        tally.by_request(o)
    for o in sorted(listed, key=lambda o: o.finished):
        tally.by_time(o)
    return tally
