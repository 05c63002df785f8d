"""One simulated request: the router's own request flow, performed in simulated time.

`complete_flow` (the loop `Router` and `AsyncRouter` both perform) decides every step — wait for
a cooling deployment, hold the budget, send, back off, fall back, book the cost — and yields an
action wherever I/O is needed. Here the actions are performed against a `MemoryStore` and the
deployments' simulated behaviour, and every wait is yielded to the event loop (`engine.py`)
instead of slept.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from .._errors import (
    BudgetExceededError,
    NoRouteError,
    ProviderError,
    ProviderTimeoutError,
    StarcoderRouterError,
)
from .._routing.decision import RoutingDecision
from .._running.actions import Book, Release, Reserve, Send, Sleep
from .._running.flow import complete_flow
from .._running.results import Completion
from .._transports.base import WireRequest, WireResponse
from .provider import DEPLOYMENT, PROMPT_TOKENS, answer
from .records import Prepared, RequestOutcome

if TYPE_CHECKING:
    from .engine import SimContext

__all__ = ["refusal_reason", "run_request"]

Waits = Generator[float, None, RequestOutcome]
# MemoryStore times a hold's expiry by the real clock, while the flow's TTL is in simulated
# seconds. The flow settles or releases every hold it takes, so in a simulation a hold simply
# never expires.
_HOLD_S = 1e9


def run_request(ctx: SimContext, number: int, p: Prepared) -> Waits:
    """One request, as the routers run it; yields the seconds it waits."""
    request = p.request
    if not ctx.scenario.allow_trim and p.kind == "fim":
        request = request.model_copy(update={"allow_trim": False})
    keys = ctx.core.budget_keys(request)
    try:
        run = ctx.core.start_prepared(p, request)
    except NoRouteError as err:
        return _outcome(ctx, number, p, None, 0, keys, refusal_reason(err))
    if ctx.scenario.rank is not None:
        run.queue = deque(ctx.scenario.rank(run.queue))
    flow = complete_flow(run, None)
    cost = 0
    reply: Any = None
    error: BaseException | None = None
    while True:
        try:
            action = flow.throw(error) if error is not None else flow.send(reply)
        except StopIteration as stop:
            return _outcome(ctx, number, p, stop.value, cost, keys)
        except StarcoderRouterError as err:
            return _outcome(ctx, number, p, None, cost, keys, refusal_reason(err),
                            len(run.attempts))
        reply, error = None, None
        if isinstance(action, Sleep):
            yield action.seconds
        elif isinstance(action, Send):
            seconds, reply, error = _send(ctx, action.wire, action.timeout, p)
            yield seconds
        elif isinstance(action, Reserve):
            try:
                reply = ctx.store.reserve(action.keys, action.amount_nano, _HOLD_S)
            except BudgetExceededError as err:
                ctx.exhausted.setdefault(err.status.key, ctx.clock.t)
                error = err
        elif isinstance(action, Book):
            cost += action.cost_nano
            if action.reservation is None:
                ctx.store.record(action.keys, action.cost_nano, action.entry)
            else:
                ctx.store.settle(action.reservation, action.cost_nano, action.entry)
        elif isinstance(action, Release):
            ctx.store.release(action.reservation)
        else:  # hedging and streaming are not simulated
            raise TypeError(f"unexpected action {action!r}")


def _send(ctx: SimContext, wire: WireRequest, timeout: float,
          p: Prepared) -> tuple[float, WireResponse | None, ProviderError | None]:
    """One attempt's fate: its duration, and the reply or the transport error it ends with."""
    name = wire.headers[DEPLOYMENT]
    behaviour = ctx.behaviour(name)
    if behaviour.failing_at(ctx.clock.t) or ctx.rng.random() < behaviour.failure_rate:
        return ctx.settings.failed_answer_s, answer(wire, None, status=503), None
    seconds = behaviour.latency(int(wire.headers[PROMPT_TOKENS]), p.output_tokens, ctx.rng)
    if seconds > timeout:
        dep = ctx.core.catalog.deployment(name)
        return timeout, None, ProviderTimeoutError(
            "simulated timeout", provider=dep.provider, model=dep.model, deployment=name)
    return seconds, answer(wire, p.output_tokens), None


def _outcome(ctx: SimContext, number: int, p: Prepared, completion: Completion | None,
             cost: int, keys: Any, refused: str | None = None,
             attempts: int | None = None) -> RequestOutcome:
    dep = completion.deployment if completion is not None else None
    trimmed = completion.trimmed if completion is not None else None
    cut = trimmed.tokens_before - trimmed.tokens_after if trimmed is not None else 0
    quality = None
    if dep is not None:
        quality = ctx.core.catalog.variant(dep.variant).score(ctx.core.policy.ranking_benchmark)
    if completion is not None:
        attempts = len(completion.attempts)
    return RequestOutcome(number, p.arrival, ctx.clock.t, p.tenant, p.kind, p.prompt_tokens,
                          dep.name if dep else None, cost, attempts or 0, cut, refused,
                          quality, tuple(k.key for k in keys))


_NUMBERS = re.compile(r"\$?\d[\d.,]*")


def refusal_reason(err: StarcoderRouterError) -> str:
    """Why a request was not served, in a few words (the same words for the same cause, so
    refusals can be counted by reason)."""
    if isinstance(err, BudgetExceededError):
        return f"budget {err.status.name} exhausted"
    if isinstance(err, ProviderError):
        what = "timed out" if isinstance(err, ProviderTimeoutError) else type(err).__name__
        return f"every deployment failed ({what})"
    if isinstance(err, NoRouteError):
        if err.decision.ranked:
            return "every deployment's circuit open"  # cooling down past the deadline
        return _decision_reason(err.decision)
    return type(err).__name__


def _decision_reason(decision: RoutingDecision) -> str:
    kinds = {_reason_kind(r) for c in decision.candidates for r in c.reasons[:1]}
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
