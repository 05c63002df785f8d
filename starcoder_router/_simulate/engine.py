"""The simulator's clock and event loop: requests overlap in simulated time.

Each request runs as a generator (`driver.run_request`) that drives the router's own request
flow and yields the seconds it would wait instead of waiting. The loop resumes the requests in
time order, so requests overlap: reservations of requests in flight count against budgets, and
failures open circuits for the requests behind them.
"""

from __future__ import annotations

import datetime as dt
import heapq
import random
from collections.abc import Callable, Generator, Sequence
from typing import NamedTuple

from .._clock import Clock
from .._providers.base import Provider
from .._routing.health import HealthPolicy
from .._routing.request import CompletionRequest
from .._routing.tokens import TokenCounter
from .._running.core import RouterCore
from .._running.hooks import Hooks
from .._running.retry import RetryPolicy
from .._stores.base import BudgetKey
from .._stores.memory import MemoryStore
from .driver import run_request
from .model import DeploymentBehaviour, SimulationSettings
from .provider import SimulatedProvider
from .records import Prepared, RequestOutcome, Scenario, ScenarioRun

__all__ = ["SimClock", "SimContext", "SimCore", "simulate_scenario"]

_FOREVER = dt.datetime.max.replace(tzinfo=dt.UTC)


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
        self._keys: dict[tuple[str | None, tuple[str, ...]],
                         tuple[tuple[BudgetKey, ...], dt.datetime]] = {}
        self.limits: dict[str, int] = {}

    def adapter(self, provider: str) -> Provider:
        return self._simulated

    def budget_keys(self, request: CompletionRequest) -> tuple[BudgetKey, ...]:
        if not self.policy.budgets:
            return ()
        now = self.clock.wall()
        memo = self._keys.get((request.tenant, request.tags))
        if memo is not None and now < memo[1]:
            return memo[0]
        keys = super().budget_keys(request)
        for k in keys:
            self.limits[k.key] = k.limit_nano
        ends = [k.resets_at for k in keys if k.resets_at is not None]
        self._keys[(request.tenant, request.tags)] = (keys, min(ends) if ends else _FOREVER)
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

    def behaviour(self, name: str) -> DeploymentBehaviour:
        found = self.behaviours.get(name)
        if found is None:
            dep = self.core.catalog.deployment(name)
            found = self.behaviours[name] = self.settings.behaviour(dep, self.core.catalog)
        return found


def simulate_scenario(
    scenario: Scenario,
    requests: Sequence[Prepared],
    *,
    settings: SimulationSettings,
    counter: TokenCounter,
    start: dt.datetime,
    retry: RetryPolicy | None = None,
    health: HealthPolicy | None = None,
    progress: Callable[[int], None] | None = None,
) -> ScenarioRun:
    """Run `requests` under `scenario`."""
    clock = SimClock(start)
    core = SimCore(scenario, counter=counter, clock=clock, retry=retry, health=health)
    ctx = SimContext(core, MemoryStore(max_ledger_entries=1), clock, settings, scenario,
                     random.Random(settings.seed), {}, {})
    outcomes: list[RequestOutcome | None] = [None] * len(requests)
    heap: list[tuple[float, int, Generator[float, None, RequestOutcome]]] = []
    seq = nxt = done = 0
    while nxt < len(requests) or heap:
        if nxt < len(requests) and (not heap or requests[nxt].arrival <= heap[0][0]):
            clock.t = requests[nxt].arrival
            gen = run_request(ctx, nxt, requests[nxt])
            nxt += 1
        else:
            clock.t, _, gen = heapq.heappop(heap)
        try:
            wait = next(gen)
        except StopIteration as stop:
            out: RequestOutcome = stop.value
            outcomes[out.number] = out
            done += 1
            if progress is not None and done % 1000 == 0:
                progress(done)
            continue
        seq += 1
        heapq.heappush(heap, (clock.t + wait, seq, gen))
    if progress is not None:
        progress(done)
    return ScenarioRun([o for o in outcomes if o is not None], ctx.exhausted, core.limits)
