"""The simulator: a workload through the router's own routing, budgets and health, on a
simulated clock and with no network.

Each request runs as a generator that drives the router's `RequestRun` exactly as the routers
do (route, wait out a cooling circuit, reserve budget, call, settle or release, back off, fall
back) but yields the seconds it would wait instead of waiting. An event loop resumes the
requests in time order, so requests overlap: reservations of requests in flight count against
budgets, and failures open circuits for the requests behind them.
"""

from __future__ import annotations

import datetime as dt
import heapq
import random
import re
from collections import deque
from collections.abc import Callable, Generator, Sequence
from typing import NamedTuple

from .._clock import Clock
from .._errors import (
    BudgetExceededError,
    NoRouteError,
    ProviderError,
    ProviderServerError,
    ProviderTimeoutError,
)
from .._providers.call import ProviderResult
from .._routing.catalog import Catalog, Deployment
from .._routing.decision import Candidate, RoutingDecision
from .._routing.health import HealthPolicy
from .._routing.policy import CostPolicy
from .._routing.request import CompletionRequest
from .._routing.tokens import TokenCounter
from .._running.core import RouterCore
from .._running.hooks import Hooks
from .._running.retry import RetryPolicy
from .._running.run import RequestRun
from .._running.support import budget_keys_for, note_statuses, soft_limited
from .._stores.base import BudgetKey, Reservation
from .._stores.memory import MemoryStore
from .model import DeploymentBehaviour, SimulationSettings

__all__ = ["Prepared", "RequestOutcome", "Scenario", "ScenarioRun", "SimClock", "simulate_scenario"]

_FOREVER = dt.datetime.max.replace(tzinfo=dt.UTC)
Ranker = Callable[[Sequence[Candidate]], list[Candidate]]


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


class Scenario(NamedTuple):
    """One policy to simulate: the deployments it may use, the policy, whether FIM requests
    may be trimmed, and optionally a ranking that replaces the policy's."""

    name: str
    description: str
    catalog: Catalog
    policy: CostPolicy
    allow_trim: bool = True
    rank: Ranker | None = None


class Prepared(NamedTuple):
    """A workload line made ready once for every scenario."""

    arrival: float
    request: CompletionRequest
    kind: str
    tenant: str
    prompt_tokens: int
    output_tokens: int


class RequestOutcome(NamedTuple):
    """What happened to one request under one scenario."""

    number: int
    arrival: float
    finished: float
    tenant: str
    kind: str
    prompt_tokens: int
    deployment: str | None
    cost_nano: int
    attempts: int
    trimmed_tokens: int
    refused: str | None
    quality: float | None
    budgets: tuple[str, ...] = ()

    @property
    def latency(self) -> float:
        return self.finished - self.arrival


class ScenarioRun(NamedTuple):
    """One scenario's outcomes (in workload order), when each budget period first refused a
    reservation (seconds after the start), and each budget period's limit."""

    outcomes: list[RequestOutcome]
    exhausted: dict[str, float]
    limits_nano: dict[str, int]


class _Context(NamedTuple):
    core: RouterCore
    store: MemoryStore
    clock: SimClock
    settings: SimulationSettings
    scenario: Scenario
    rng: random.Random
    soft: dict[str, float]
    exhausted: dict[str, float]
    keys: dict[tuple[str | None, tuple[str, ...]], tuple[tuple[BudgetKey, ...],
                                                         dt.datetime]]
    behaviours: dict[str, DeploymentBehaviour]
    limits: dict[str, int]


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
    core = RouterCore(catalog=scenario.catalog, policy=scenario.policy, providers=None,
                      counter=counter, retry=retry, health=health, hooks=Hooks(), clock=clock,
                      env={})
    # Plan as if every provider were configured: no API keys are needed to simulate.
    core.provider_status = dict.fromkeys(core.provider_status)
    ctx = _Context(core, MemoryStore(max_ledger_entries=1), clock, settings, scenario,
                   random.Random(settings.seed), {}, {}, {}, {}, {})
    outcomes: list[RequestOutcome | None] = [None] * len(requests)
    heap: list[tuple[float, int, Generator[float, None, RequestOutcome]]] = []
    seq = 0
    nxt = 0
    done = 0
    while nxt < len(requests) or heap:
        if nxt < len(requests) and (not heap or requests[nxt].arrival <= heap[0][0]):
            clock.t = requests[nxt].arrival
            gen = _run(ctx, nxt, requests[nxt])
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
    return ScenarioRun([o for o in outcomes if o is not None], ctx.exhausted, ctx.limits)


def _run(ctx: _Context, number: int, p: Prepared) -> Generator[float, None, RequestOutcome]:
    """One request, as the router would run it; yields the seconds it waits."""
    core = ctx.core
    request = p.request
    if not ctx.scenario.allow_trim and p.kind == "fim":
        request = request.model_copy(update={"allow_trim": False})
    keys = _budget_keys(ctx, request)
    try:
        run = core.start(request, keys, soft_limited(core, keys, ctx.soft))
    except NoRouteError as err:
        return _outcome(ctx, number, p, None, _Ended(0, refusal_reason(err.decision)), keys)
    if ctx.scenario.rank is not None:
        run.queue = deque(ctx.scenario.rank(run.queue))
    while (cand := run.next_candidate()) is not None:
        ended = yield from _on_deployment(ctx, run, cand, p, keys)
        if ended is not None:
            return _outcome(ctx, number, p, cand, ended, keys, len(run.attempts))
    last = run.exhausted()
    what = "timed out" if isinstance(last, ProviderTimeoutError) else type(last).__name__
    if isinstance(last, ProviderError):
        reason = f"every deployment failed ({what})"
    elif run.decision.ranked:
        reason = "every deployment's circuit open"  # cooling down past the deadline
    else:
        reason = refusal_reason(run.decision)
    return _outcome(ctx, number, p, None, _Ended(0, reason), keys, len(run.attempts))


class _Ended(NamedTuple):
    cost_nano: int
    refused: str | None = None


def _outcome(ctx: _Context, number: int, p: Prepared, cand: Candidate | None, ended: _Ended,
             keys: tuple[BudgetKey, ...], attempts: int = 0) -> RequestOutcome:
    served = cand if ended.refused is None else None
    dep = served.deployment if served is not None else None
    trimmed = served.trimmed if served is not None else None
    cut = trimmed.tokens_before - trimmed.tokens_after if trimmed is not None else 0
    quality = _quality(ctx.core.catalog, ctx.core.policy, dep) if dep is not None else None
    return RequestOutcome(number, p.arrival, ctx.clock.t, p.tenant, p.kind, p.prompt_tokens,
                          dep.name if dep else None, ended.cost_nano, attempts, cut,
                          ended.refused, quality, tuple(k.key for k in keys))


def _on_deployment(ctx: _Context, run: RequestRun, cand: Candidate, p: Prepared,
                   keys: tuple[BudgetKey, ...]) -> Generator[float, None, _Ended | None]:
    """Try one deployment with its retries, as the routers do: how the request ended, or None
    to move on to the next deployment."""
    retry_no = 0
    while True:
        res = yield from _admit(ctx, run, cand, keys)
        if isinstance(res, _Ended) or res is _MOVE_ON:
            return res if isinstance(res, _Ended) else None
        assert not isinstance(res, _MoveOn)
        started = ctx.clock.t
        error, seconds = _attempt(ctx, run, cand, p)
        yield seconds
        if error is not None:
            if res is not None:
                ctx.store.release(res)
            step = run.failed(cand, error, retry_no, started)
            if step.wait is None:
                return None
            yield step.wait
            retry_no += 1
            continue
        request = run.request
        result = ProviderResult(
            text="{}" if request.response_format else "",
            finish_reason="length" if p.output_tokens >= request.max_tokens else "stop",
            prompt_tokens=_sent_tokens(run, cand), completion_tokens=p.output_tokens)
        completion, _ = run.succeeded(cand, result, started, None, retry_no)
        entry = run.ledger_entry(cand, completion.cost_nano, completion.usage, "ok")
        if res is None:
            ctx.store.record(keys, completion.cost_nano, entry)
        else:
            ctx.store.settle(res, completion.cost_nano, entry)
        return _Ended(completion.cost_nano)


class _MoveOn:
    """The deployment cannot be used now (cooling past the deadline, or the budget policy
    chose other deployments)."""


_MOVE_ON = _MoveOn()


def _admit(ctx: _Context, run: RequestRun, cand: Candidate, keys: tuple[BudgetKey, ...],
           ) -> Generator[float, None, Reservation | _MoveOn | _Ended | None]:
    """Wait out a cooling circuit, then hold the worst case against the budgets."""
    while (wait := run.cooling_wait(cand)) != 0.0:
        if wait is None:
            return _MOVE_ON
        yield wait
    if not keys:
        return None
    try:
        res = ctx.store.reserve(keys, run.reserve_amount(cand), run.reservation_ttl())
    except BudgetExceededError as err:
        ctx.exhausted.setdefault(err.status.key, ctx.clock.t)
        ctx.core.health.release_probe(cand.deployment.name)
        if run.budget_exhausted(cand, err):
            return _MOVE_ON
        run.failed_before_call(err)
        return _Ended(0, f"budget {err.status.name} exhausted")
    note_statuses(ctx.soft, res)
    return res


def _budget_keys(ctx: _Context, request: CompletionRequest) -> tuple[BudgetKey, ...]:
    """The router's budget keys for `request`, remembered until the first of their periods
    ends (working out calendar periods is most of the cost of a simulated request)."""
    if not ctx.core.policy.budgets:
        return ()
    now = ctx.clock.wall()
    memo = ctx.keys.get((request.tenant, request.tags))
    if memo is not None and now < memo[1]:
        return memo[0]
    keys = budget_keys_for(ctx.core, request)
    for k in keys:
        ctx.limits[k.key] = k.limit_nano
    ends = [k.resets_at for k in keys if k.resets_at is not None]
    ctx.keys[(request.tenant, request.tags)] = (keys, min(ends) if ends else _FOREVER)
    return keys


def _attempt(ctx: _Context, run: RequestRun, cand: Candidate,
             p: Prepared) -> tuple[ProviderError | None, float]:
    """Draw one attempt's fate: the error it ends with (None for success) and its duration."""
    dep = cand.deployment
    behaviour = ctx.behaviours.get(dep.name)
    if behaviour is None:
        behaviour = ctx.behaviours[dep.name] = ctx.settings.behaviour(dep, ctx.core.catalog)
    if behaviour.failing_at(ctx.clock.t) or ctx.rng.random() < behaviour.failure_rate:
        return _error(ProviderServerError, dep, "simulated 503", 503), \
            ctx.settings.failed_answer_s
    seconds = behaviour.latency(_sent_tokens(run, cand), p.output_tokens, ctx.rng)
    limit = max(0.001, min(ctx.core.endpoint(dep.provider, dep.base_url).timeout,
                           run.remaining()))
    if seconds > limit:
        return _error(ProviderTimeoutError, dep, "simulated timeout", None), limit
    return None, seconds


def _error(cls: type[ProviderError], dep: Deployment, message: str,
           status: int | None) -> ProviderError:
    return cls(message, provider=dep.provider, model=dep.model, deployment=dep.name,
               status_code=status)


def _sent_tokens(run: RequestRun, cand: Candidate) -> int:
    if cand.count_kind == "exact" and cand.prompt_tokens is not None:
        return cand.prompt_tokens
    assert cand.rendered is not None
    n, _ = run.counts.count(cand.rendered.prompt)
    return n


def _quality(catalog: Catalog, policy: CostPolicy, dep: Deployment) -> float | None:
    return catalog.variant(dep.variant).score(policy.ranking_benchmark)


_NUMBERS = re.compile(r"\$?\d[\d.,]*")


def refusal_reason(decision: RoutingDecision) -> str:
    """Why no deployment could take a request, in a few words (the same words for the same
    cause, so refusals can be counted by reason)."""
    kinds = set()
    for c in decision.candidates:
        for r in c.reasons[:1]:
            kinds.add(_reason_kind(r))
    return "no route: " + " / ".join(sorted(kinds)) if kinds else "no route"


def _reason_kind(reason: str) -> str:
    if "window" in reason:
        return "does not fit the window"
    if reason.startswith("lacks"):
        return reason
    if "per-request cap" in reason:
        return "over the per-request cost cap"
    if "remaining budget" in reason:
        return "over the remaining budget"
    if " < " in reason or (reason.startswith("no ") and "score" in reason):
        return "below the quality floor"
    return _NUMBERS.sub("N", reason)
