"""Small pieces both routers use around the core: request fields, budget bookkeeping, stores,
and adding provider context to errors raised below the provider boundary."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypedDict

from .._errors import (
    ProviderError,
    StarcoderRouterError,
    StoreError,
    StreamInterruptedError,
)
from .._providers.call import Call
from .._routing.decision import Candidate
from .._routing.request import Message, RepoFile, ResponseFormat
from .._stores.base import BudgetKey, LedgerEntry, Reservation
from .core import RouterCore
from .results import Completion, Usage
from .run import RequestRun

__all__ = [
    "REQUEUE",
    "RequestFields",
    "Requeue",
    "budget_keys_for",
    "interrupted_error",
    "note_statuses",
    "soft_limited",
    "store_error",
    "with_context",
]


class RequestFields(TypedDict, total=False):
    """The keyword arguments `complete()`, `stream()` and `route()` accept (CompletionRequest's
    fields)."""

    prompt: str
    prefix: str
    suffix: str
    repo_name: str
    path: str
    files: Sequence[RepoFile | tuple[str, str]]
    messages: Sequence[Message | Mapping[str, str]]
    max_tokens: int
    temperature: float
    top_p: float
    stop: str | Sequence[str]
    response_format: ResponseFormat | Mapping[str, Any] | Literal["json"]
    stream: bool
    seed: int
    tenant: str
    tags: Sequence[str]
    timeout: float
    allow_trim: bool
    hedge: bool
    special_tokens: Literal["escape", "reject", "keep"]
    extra_body: dict[str, Any]


class Requeue:
    """Returned instead of a reservation when the budget policy rebuilt the candidate queue."""


REQUEUE = Requeue()


def budget_keys_for(core: RouterCore, request: Any) -> tuple[BudgetKey, ...]:
    budgets = core.policy.budgets
    if not budgets:
        return ()
    from .._stores.periods import applicable_keys  # zoneinfo and calendar maths, only with budgets

    return applicable_keys(budgets, tenant=request.tenant, tags=request.tags,
                           now=core.clock.wall())


def soft_limited(core: RouterCore, keys: tuple[BudgetKey, ...], seen: dict[str, float]) -> bool:
    """Past the soft limit of any budget (as of the last reservation we saw)?"""
    limit = core.policy.soft_limit
    if limit is None or not keys:
        return False
    return any(seen.get(k.key, 0.0) >= limit for k in keys)


def note_statuses(seen: dict[str, float], reservation: Reservation) -> None:
    """Remember how used each budget is, for the soft limit. Our own hold is left out: it is a
    worst case, and counting it would flip the objective back and forth as requests of
    different sizes come and go."""
    for s in reservation.statuses:
        used = s.spent_nano + s.reserved_nano - reservation.amount_nano
        seen[s.key] = used / s.limit_nano if s.limit_nano else 1.0


def store_error(action: str, exc: Exception, entry: LedgerEntry | None = None) -> Exception:
    """Our own errors pass through; a backend's failure becomes a `StoreError`."""
    if isinstance(exc, StarcoderRouterError):
        return exc
    what = f"{action} a reservation" if entry is None else f"{action} a request"
    return StoreError(f"the spend store failed to {what}: {type(exc).__name__}: {exc}",
                      unrecorded=entry)


def with_context(exc: ProviderError, call: Call) -> ProviderError:
    """The same error, naming the provider, model and deployment of `call`."""
    dep = call.deployment
    new = type(exc).__new__(type(exc))
    new.__dict__.update(exc.__dict__)
    new.provider, new.model, new.deployment = dep.provider, dep.model, dep.name
    if not new.message.startswith(dep.provider):
        new.message = f"{dep.provider}: {new.message}"
    Exception.__init__(new, new.message)
    return new


def interrupted_error(run: RequestRun, cand: Candidate, err: ProviderError, text: str,
                      delivered: int, cost: int, usage: Usage) -> StreamInterruptedError:
    dep = cand.deployment
    partial = Completion(
        text=text, finish_reason="error", usage=usage, cost_nano=cost, deployment=dep,
        decision=run.decision, attempts=tuple(run.attempts), latency_s=run.attempts[-1].latency_s,
        trimmed=cand.trimmed,
    )
    out = StreamInterruptedError(
        f"stream from {dep.name} failed after {delivered} chunk(s) "
        f"({len(text)} characters) had been delivered: {err}",
        delivered_text=text, delivered_chunks=delivered, completion=partial,
        provider=dep.provider, model=dep.model, deployment=dep.name,
        status_code=err.status_code, request_id=err.request_id,
    )
    out.attempts = tuple(run.attempts)
    return out
