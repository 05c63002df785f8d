"""The simulator's clock and event loop: requests overlap in simulated time.

Each request runs as a generator (`driver.run_request`) that drives the router's own request
flow and yields the seconds it would wait instead of waiting. The loop resumes the requests in
time order, so requests overlap: reservations of requests in flight count against budgets, and
failures open circuits for the requests behind them. Requests are fed to the loop as they
arrive and their outcomes tallied as they finish, so a workload of any length is simulated in
the memory of the requests in flight.
"""

from __future__ import annotations

import datetime as dt
import heapq
import math
import random
from collections.abc import Callable, Iterable
from typing import NamedTuple

from .._clock import Clock
from .._providers.base import Provider
from .._routing.catalog import Deployment
from .._routing.health import HealthPolicy
from .._routing.request import CompletionRequest
from .._routing.tokens import TokenCounter
from .._running.core import RouterCore
from .._running.hooks import Hooks
from .._running.retry import RetryPolicy
from .._running.run import RequestRun
from .._stores.base import BudgetKey
from .._stores.memory import MemoryStore
from .driver import Superseded, Waits, run_request
from .model import DeploymentBehaviour, SimulationSettings
from .provider import SimulatedProvider
from .records import Prepared, RequestOutcome, Scenario, ScenarioRun
from .sessions import SUPERSEDED, AutocompleteCounts, SessionModel
from .synthetic import SyntheticCounter
from .tally import OutcomeOrder, Tally

__all__ = ["ScenarioLoop", "SimClock", "SimContext", "SimCore", "simulate_scenario"]

_FOREVER = dt.datetime.max.replace(tzinfo=dt.UTC)
_MAX_NAMES = 1024
_UNKNOWN = object()


class SimClock(Clock):
    """Simulated time: the event loop sets `t`; nothing ever sleeps."""

    def __init__(self, start: dt.datetime):
        self.t = 0.0
        self._start = start

    def now(self) -> float:
        return self.t

    def wall(self) -> dt.datetime:
        return self._start + dt.timedelta(seconds=self.t)

    def sleep(self, seconds: float) -> None:
        self.t += max(0.0, seconds)

    async def asleep(self, seconds: float) -> None:
        self.t += max(0.0, seconds)


class SimCore(RouterCore):
    """The router's core with simulated deployments: every provider is configured and answers
    through `SimulatedProvider`. Budget keys are remembered until their period ends (working
    out calendar periods would be most of the cost of a simulated request)."""

    def __init__(self, scenario: Scenario, *, counter: TokenCounter, clock: SimClock,
                 retry: RetryPolicy | None, health: HealthPolicy | None):
        super().__init__(catalog=scenario.catalog, policy=scenario.policy, providers=None,
                         counter=counter, retry=retry, health=health, hooks=Hooks(),
                         clock=clock, env={})
        self.provider_status = dict.fromkeys(self.provider_status)  # no API keys needed
        self._simulated = SimulatedProvider(counter)
        self._counter = counter
        self._with_pieces = (counter.with_pieces() if isinstance(counter, SyntheticCounter)
                             else None)
        self._keys: dict[tuple[str | None, tuple[str, ...]],
                         tuple[tuple[BudgetKey, ...], dt.datetime, float]] = {}
        self.limits: dict[str, int] = {}
        self._sim_clock = clock
        self._names: dict[int, tuple[tuple[BudgetKey, ...], tuple[str, ...]]] = {}

    def adapter(self, provider: str) -> Provider:
        return self._simulated

    def start_prepared(self, p: Prepared, request: CompletionRequest) -> RequestRun:
        """`start(request)`; a trimmable request's counts come with pieces, so that its trim
        is planned over blocks of lines (the same cuts, found faster: see
        `SyntheticCounter.pieces`). The request keeps that counter for all its life."""
        if not p.trimmable or self._with_pieces is None:
            return self.start(request)
        self.counter = self._with_pieces
        try:
            return self.start(request)
        finally:
            self.counter = self._counter

    def budget_names(self, keys: tuple[BudgetKey, ...]) -> tuple[str, ...]:
        """The storage keys of `keys` (the same tuple comes back while its periods last)."""
        if not keys:
            return ()
        found = self._names.get(id(keys))
        if found is None or found[0] is not keys:
            if len(self._names) >= _MAX_NAMES:
                self._names.clear()
            found = self._names[id(keys)] = (keys, tuple(k.key for k in keys))
        return found[1]

    def budget_keys(self, request: CompletionRequest) -> tuple[BudgetKey, ...]:
        if not self.policy.budgets:
            return ()
        memo = self._keys.get((request.tenant, request.tags))
        if memo is not None:
            keys, ends, ends_s = memo
            # Simulated seconds before the end, less a millisecond: past that, the wall clock
            # (rounded to microseconds) decides, as it always did.
            if self._sim_clock.t < ends_s or self.clock.wall() < ends:
                return keys
        keys = super().budget_keys(request)
        for k in keys:
            self.limits[k.key] = k.limit_nano
        resets = [k.resets_at for k in keys if k.resets_at is not None]
        ends = min(resets) if resets else _FOREVER
        ends_s = (ends - self.clock.wall()).total_seconds() + self._sim_clock.t - 1e-3 \
            if resets else math.inf
        self._keys[(request.tenant, request.tags)] = (keys, ends, ends_s)
        return keys


class SimContext(NamedTuple):
    """What every request of one scenario shares."""

    core: SimCore
    store: MemoryStore
    clock: SimClock
    settings: SimulationSettings
    scenario: Scenario
    rng: random.Random
    exhausted: dict[str, float]
    behaviours: dict[str, DeploymentBehaviour]
    counts: AutocompleteCounts
    qualities: dict[str, float | None]

    def quality(self, dep: Deployment) -> float | None:
        """The ranking benchmark's score of `dep`'s variant (worked out once per deployment)."""
        found = self.qualities.get(dep.name, _UNKNOWN)
        if found is _UNKNOWN:
            found = self.qualities[dep.name] = self.core.catalog.variant(dep.variant).score(
                self.core.policy.ranking_benchmark)
        return found  # type: ignore[return-value]

    def behaviour(self, name: str) -> DeploymentBehaviour:
        found = self.behaviours.get(name)
        if found is None:
            dep = self.core.catalog.deployment(name)
            found = self.behaviours[name] = self.settings.behaviour(dep, self.core.catalog)
        return found


class ScenarioLoop:
    """One scenario's event loop, fed requests as they arrive (`arrive`, in arrival order) and
    drained at the end (`finish`). Outcomes go to a `Tally` as requests finish, so nothing per
    request is kept unless `keep_outcomes` asks for it. With `sessions`, requests of a session
    may be answered without a call or supersede the one before (`sessions.py`)."""

    def __init__(self, scenario: Scenario, *, settings: SimulationSettings,
                 counter: TokenCounter, start: dt.datetime, retry: RetryPolicy | None = None,
                 health: HealthPolicy | None = None, keep_outcomes: bool = False,
                 sessions: SessionModel | None = None):
        self.clock = clock = SimClock(start)
        core = SimCore(scenario, counter=counter, clock=clock, retry=retry, health=health)
        self.counts = sessions.counts if sessions is not None else AutocompleteCounts()
        self._ctx = SimContext(core, MemoryStore(max_ledger_entries=1), clock, settings,
                               scenario, random.Random(settings.seed), {}, {}, self.counts,
                               {})
        self._sessions = sessions
        # Requests of a session in flight (their place in the heap), and the places of those
        # superseded there, skipped when they come up.
        self._live: dict[int, tuple[int, Waits]] = {}
        self._dead: set[int] = set()
        self.scenario = scenario
        self.tally = Tally(core.limits)
        self._kept: list[RequestOutcome] | None = [] if keep_outcomes else None
        self._order = OutcomeOrder(self._in_request_order, self.tally.by_time)
        self._heap: list[tuple[float, int, Waits, int]] = []
        self._seq = 0
        self.done = 0

    def arrive(self, number: int, request: Prepared) -> None:
        """Start request `number` at its arrival, after every wait that ends before it."""
        heap = self._heap
        while heap and heap[0][0] < request.arrival:
            self._pop()
        self.clock.t = request.arrival
        if self._sessions is not None and request.session is not None:
            begin = self._sessions.begin(number, request, request.arrival)
            if begin.supersede is not None:
                self._supersede(begin.supersede)
            if begin.answer is not None:  # answered here: no call, no cost
                self._order.finished(RequestOutcome(
                    number, request.arrival, request.arrival, request.tenant, request.kind,
                    request.prompt_tokens, None, 0, 0, 0, None, None))
                self.done += 1
                return
            self._step(run_request(self._ctx, number, request), number)
            return
        self._step(run_request(self._ctx, number, request))

    def finish(self) -> ScenarioRun:
        """Run every request still waiting to its end."""
        heap = self._heap
        while heap:
            self._pop()
        self._order.close()
        ctx = self._ctx
        return ScenarioRun(self._kept if self._kept is not None else [], ctx.exhausted,
                           ctx.core.limits, self.tally)

    def _pop(self) -> None:
        self.clock.t, seq, gen, number = heapq.heappop(self._heap)
        if seq in self._dead:
            self._dead.discard(seq)
            return
        self._step(gen, number)

    def _step(self, gen: Waits, number: int = -1, supersede: bool = False) -> None:
        try:
            wait = gen.throw(Superseded()) if supersede else next(gen)
        except StopIteration as stop:
            self.done += 1
            outcome: RequestOutcome = stop.value
            if number >= 0:
                self._ended(outcome)
            self._order.finished(outcome)
            return
        self._seq += 1
        heapq.heappush(self._heap, (self.clock.t + wait, self._seq, gen, number))
        if number >= 0:
            self._live[number] = (self._seq, gen)

    def _supersede(self, number: int) -> None:
        """Stop request `number` now: its flow books what it has cost so far."""
        found = self._live.get(number)
        if found is None:
            return
        seq, gen = found
        self._dead.add(seq)
        self._step(gen, number, supersede=True)

    def _ended(self, outcome: RequestOutcome) -> None:
        self._live.pop(outcome.number, None)
        if outcome.refused == SUPERSEDED:
            self.counts.superseded += 1
        if self._sessions is not None:
            self._sessions.finished(outcome.number, outcome.refused is None, self.clock.t)

    def _in_request_order(self, outcome: RequestOutcome) -> None:
        self.tally.by_request(outcome)
        if self._kept is not None:
            self._kept.append(outcome)


def simulate_scenario(
    scenario: Scenario,
    requests: Iterable[Prepared],
    *,
    settings: SimulationSettings,
    counter: TokenCounter,
    start: dt.datetime,
    retry: RetryPolicy | None = None,
    health: HealthPolicy | None = None,
    progress: Callable[[int], None] | None = None,
    keep_outcomes: bool = True,
    sessions: SessionModel | None = None,
) -> ScenarioRun:
    """Run `requests` (in arrival order) under `scenario`."""
    loop = ScenarioLoop(scenario, settings=settings, counter=counter, start=start, retry=retry,
                        health=health, keep_outcomes=keep_outcomes, sessions=sessions)
    for number, request in enumerate(requests):
        loop.arrive(number, request)
        if progress is not None and number % 1000 == 999:
            progress(loop.done)
    run = loop.finish()
    if progress is not None:
        progress(loop.done)
    return run
