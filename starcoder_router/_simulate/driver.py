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
from .._routing.cost import token_cost_nano
from .._routing.decision import RoutingDecision
from .._running.actions import Book, Release, Reserve, Send, Sleep
from .._running.flow import complete_flow
from .._running.results import Completion
from .._transports.base import WireRequest, WireResponse
from .provider import DEPLOYMENT, PROMPT_TOKENS, answer
from .records import Prepared, RequestOutcome
from .sessions import SUPERSEDED

if TYPE_CHECKING:
    from .engine import SimContext

__all__ = ["Superseded", "refusal_reason", "run_request"]


class Superseded(Exception):
    """Thrown into a running request when a newer request of its session supersedes it."""


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
    written = 0  # the cost of the output a superseded call had written, booked with it
    while True:
        try:
            action = flow.throw(error) if error is not None else flow.send(reply)
        except StopIteration as stop:
            return _outcome(ctx, number, p, stop.value, cost, keys)
        except StarcoderRouterError as err:
            return _outcome(ctx, number, p, None, cost, keys, refusal_reason(err),
                            len(run.attempts))
        except Superseded:
            return _outcome(ctx, number, p, None, cost, keys, SUPERSEDED, len(run.attempts))
        reply, error = None, None
        if isinstance(action, Sleep):
            try:
                yield action.seconds
            except Superseded as stop:
                run.superseded, error = True, stop
        elif isinstance(action, Send):
            ctx.counts.upstream += 1
            sent = ctx.clock.t
            seconds, reply, error = _send(ctx, action.wire, action.timeout, p)
            try:
                yield seconds
            except Superseded as stop:
                # The flow books the prompt of a call it leaves (`flow._abandon`); the output
                # written by now is added to that booking.
                if reply is not None and reply.status == 200:
                    written = _written_cost(ctx, action.wire, p, seconds, ctx.clock.t - sent)
                run.superseded, reply, error = True, None, stop
        elif isinstance(action, Reserve):
            try:
                reply = ctx.store.reserve(action.keys, action.amount_nano, _HOLD_S)
            except BudgetExceededError as err:
                ctx.exhausted.setdefault(err.status.key, ctx.clock.t)
                error = err
        elif isinstance(action, Book):
            cost, written = cost + _book(ctx, action, action.cost_nano + written), 0
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


def _book(ctx: SimContext, action: Book, amount: int) -> int:
    if action.reservation is None:
        ctx.store.record(action.keys, amount, action.entry)
    else:
        ctx.store.settle(action.reservation, amount, action.entry)
    return amount


def _written_cost(ctx: SimContext, wire: WireRequest, p: Prepared, seconds: float,
                  elapsed: float) -> int:
    """What the output of a call stopped `elapsed` seconds in had cost: the tokens written at
    the deployment's simulated pace (after its time to first token and the prompt's prefill,
    scaled like the call's drawn duration) at its output price."""
    name = wire.headers[DEPLOYMENT]
    b = ctx.behaviour(name)
    head = b.ttft_s + int(wire.headers[PROMPT_TOKENS]) / b.prefill_tokens_per_s
    whole = head + p.output_tokens / b.tokens_per_s
    if whole <= 0 or seconds <= 0:
        return 0
    scale = seconds / whole  # the call's jitter
    writing = elapsed - head * scale
    if writing <= 0:
        return 0
    tokens = min(p.output_tokens, int(writing / scale * b.tokens_per_s))
    dep = ctx.core.catalog.deployment(name)
    return token_cost_nano(tokens, dep.output_usd_per_mtok)


def _outcome(ctx: SimContext, number: int, p: Prepared, completion: Completion | None,
             cost: int, keys: Any, refused: str | None = None,
             attempts: int | None = None) -> RequestOutcome:
    dep = completion.deployment if completion is not None else None
    trimmed = completion.trimmed if completion is not None else None
    cut = trimmed.tokens_before - trimmed.tokens_after if trimmed is not None else 0
    quality = ctx.quality(dep) if dep is not None else None
    if completion is not None:
        attempts = len(completion.attempts)
    return RequestOutcome(number, p.arrival, ctx.clock.t, p.tenant, p.kind, p.prompt_tokens,
                          dep.name if dep else None, cost, attempts or 0, cut, refused,
                          quality, ctx.core.budget_names(keys))


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
