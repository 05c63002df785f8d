"""The request flow, written once for both routers: generators that yield actions.

`complete_flow` and `stream_flow` decide every step of a request — wait for a cooling
deployment, hold the budget, send, read the reply, book the cost, back off, fall back — and
yield an action (`actions.py`) wherever I/O is needed. `Router` performs the actions with
blocking calls and `AsyncRouter` with `await` (httpx's `_auth.py` drives one `auth_flow`
generator from a sync and an async loop the same way), so the two routers cannot drift.

Ownership of budget holds: whoever takes a reservation frees it on every path. Here that is
the `try` around each attempt: a provider error releases it and books the failure; any other
exception (a bug, a cancelled task, Ctrl-C) releases it too, then goes on up. So a driver
runs a flow to its end and hands every exception back with `throw()`; it never closes one
half-way, which would leave nobody to perform the `Release` the flow then asks for.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any, TypeVar

from .._errors import (
    BudgetExceededError,
    FirstTokenTimeoutError,
    ProviderError,
    StarcoderRouterError,
    StoreError,
    StructuredOutputError,
)
from .._providers.errormap import UNREADABLE, in_context, unreadable_reply
from . import first_token
from .actions import (
    Action,
    Book,
    Drain,
    Release,
    Reserve,
    Send,
    Sleep,
    StartHedge,
    StartStream,
)
from .results import Completion, StreamChunk
from .stream_attempt import StreamAttempt

if TYPE_CHECKING:
    from .._providers.base import Provider
    from .._providers.call import Call, ProviderResult
    from .._routing.decision import Candidate
    from .._stores.base import LedgerEntry, Reservation
    from .._transports.base import WireResponse
    from .retry import HedgePolicy
    from .run import RequestRun

__all__ = ["Flow", "HedgeOutcome", "complete_flow", "read_reply", "stream_flow"]

T = TypeVar("T")
Flow = Generator[Action, Any, T]


class _MoveOn:
    """`admit`'s answer when this candidate is to be skipped: its cooling wait is too long, or
    the budget policy rebuilt the queue."""


MOVE_ON = _MoveOn()


class HedgeOutcome:
    """What a driver sends back for `StartHedge`: the winning attempt and its first chunk (or
    None), the attempts that failed before output with their errors, and the second attempt if
    it was never started."""

    __slots__ = ("failed", "first_chunk", "unstarted", "winner")

    def __init__(self) -> None:
        self.winner: StreamAttempt | None = None
        self.first_chunk: StreamChunk | None = None
        self.failed: list[tuple[StreamAttempt, BaseException]] = []
        self.unstarted: StreamAttempt | None = None


# -- the two entry points ----------------------------------------------------------------------

def complete_flow(run: RequestRun, hedge: HedgePolicy | None, *,
                  drained: bool = False) -> Flow[Completion]:
    """A whole `complete()`: the costed completion, or the error that ended it. `drained`
    streams each attempt that can stream and reads it to its end (the sync router's way to
    stop a call that a newer request superseded: between two chunks)."""
    plan = run.hedge_plan(hedge)
    if plan is not None:
        won = yield from _hedge(run, *plan, stream=True)
        if won is not None:
            completion = yield from _drain(won[0])
            if completion is not None:
                return completion
    while (cand := run.next_candidate()) is not None:
        # Read as a stream, to see its first token in time, or to stop at the next chunk once
        # a newer request of its session supersedes it (`sessions_run.py`).
        if (first_token.deadline_for(run, cand) is not None
                or (drained and cand.deployment.supports("streaming"))):
            completion = yield from _try_streamed(run, cand)
        else:
            completion = yield from _try_deployment(run, cand)
        if completion is not None:
            return completion
    raise run.exhausted()


def stream_flow(run: RequestRun,
                hedge: HedgePolicy | None) -> Flow[tuple[StreamAttempt, StreamChunk]]:
    """A `stream()` up to its first chunk: the attempt that produced it (the driver goes on
    reading it) and that chunk. Falls back only while nothing has reached the caller."""
    plan = run.hedge_plan(hedge)
    if plan is not None:
        won = yield from _hedge(run, *plan, stream=None)
        if won is not None:
            return won
    while (cand := run.next_candidate()) is not None:
        started = yield from _first_chunk_from(run, cand)
        if started is not None:
            return started
    raise run.exhausted()


# -- one deployment ----------------------------------------------------------------------------

def _try_deployment(run: RequestRun, cand: Candidate) -> Flow[Completion | None]:
    """Try one deployment, with its retries: a completion, or None to move on."""
    retry_no = 0
    while not isinstance(res := (yield from _admit(run, cand)), _MoveOn):
        provider, call = run.call_for(cand)
        started = run.now()
        try:
            resp = yield Send(call.deployment.provider, provider.build(call), run.timeout_for(call),
                              call.endpoint.connect_timeout, call.deployment.name, run.urgent)
            result = read_reply(provider, call, resp)
            completion, problem = run.succeeded(cand, result, started, None, retry_no)
        except ProviderError as exc:
            err = in_context(exc, call)
            if not (yield from _back_off(run, cand, err, res, retry_no, started)):
                return None
            retry_no += 1
            continue
        except BaseException:
            yield from _abandon(run, res, cand, started, retry_no)
            raise
        yield from _book(run, res, cand, completion.cost_nano, completion,
                         "ok" if problem is None else "error")
        if problem is None:
            return completion
        run.structured_error(completion, problem)
        return None
    return None


def _try_streamed(run: RequestRun, cand: Candidate) -> Flow[Completion | None]:
    """Try one deployment for a `complete()` by streaming it and reading it to the end."""
    started = yield from _first_chunk_from(run, cand, stream=True)
    if started is None:
        return None
    try:
        return (yield from _drain(started[0]))
    except StructuredOutputError:  # booked, and the run's last error: as `_try_deployment`
        return None


def _first_chunk_from(run: RequestRun, cand: Candidate, *, stream: bool | None = None
                      ) -> Flow[tuple[StreamAttempt, StreamChunk] | None]:
    """Open a stream on one deployment, with its retries, up to its first chunk. Past its
    first-token deadline, the attempt is booked and the next deployment tried."""
    retry_no = 0
    while not isinstance(res := (yield from _admit(run, cand)), _MoveOn):
        provider, call = run.call_for(cand, stream=stream)
        attempt = StreamAttempt(run, cand, provider, call, res, run.now(), retry_no)
        if stream:
            # Read whole, as the reply it stands for: shaped once at its end, exactly as a
            # plain reply is, not cut (and costed) on the fly.
            attempt.shaper = None
        try:
            first = yield StartStream(attempt, first_token.deadline_for(run, cand))
        except FirstTokenTimeoutError as err:
            yield from book_entry(run, res, *first_token.timed_out(run, attempt, err))
            return None
        except ProviderError as err:
            if not (yield from _back_off(run, cand, err, res, retry_no, attempt.started)):
                return None
            retry_no += 1
            continue
        except BaseException:
            if not attempt.settled:
                yield from _release(res)
            raise
        return attempt, first
    return None


def read_reply(provider: Provider, call: Call, resp: WireResponse) -> ProviderResult:
    """The provider's answer in our terms. Everything that goes wrong reading it is a
    `ProviderError` naming the deployment, so the flow can fall back; a reply that breaks the
    adapter in a way nobody foresaw becomes an `InvalidResponseError`, never a bare exception."""
    try:
        if resp.status >= 400:
            raise provider.error(call, resp)
        return provider.parse(call, resp)
    except UNREADABLE as exc:
        raise unreadable_reply(exc, call, resp.status) from exc


# -- admission, back-off and the books ---------------------------------------------------------

def _admit(run: RequestRun, cand: Candidate) -> Flow[Reservation | _MoveOn | None]:
    """Wait while `cand` cools down (if worth it), then hold its budget."""
    while (wait := run.cooling_wait(cand)) != 0.0:
        if wait is None:
            return MOVE_ON
        yield Sleep(wait)
    try:
        res = yield from _hold(run, cand)
    except BaseException:
        run.core.health.release_probe(cand.deployment.name)
        raise
    if isinstance(res, _MoveOn):
        run.core.health.release_probe(cand.deployment.name)
    return res


def _hold(run: RequestRun, cand: Candidate) -> Flow[Reservation | _MoveOn | None]:
    """Hold `cand`'s worst-case cost against every budget that applies (hedge legs come here
    directly: they do not wait for cooling deployments)."""
    if not run.budget_keys:
        return None
    try:
        res: Reservation = yield Reserve(run.budget_keys, run.reserve_amount(cand),
                                         run.reservation_ttl())
    except BudgetExceededError as err:
        if run.budget_exhausted(cand, err):
            return MOVE_ON
        run.failed_before_call(err)
        raise
    except Exception as exc:
        raise _store_error("reserve", exc) from exc
    run.core.note_reservation(res)
    return res


def _back_off(run: RequestRun, cand: Candidate, err: ProviderError, res: Reservation | None,
              retry_no: int, started: float) -> Flow[bool]:
    """After a failed attempt: free its budget, book it, and wait if it is worth trying the
    same deployment again (True) rather than moving on (False)."""
    yield from _release(res)
    step = run.failed(cand, err, retry_no, started)
    if step.wait is None:
        return False
    yield Sleep(step.wait)
    return True


def _book(run: RequestRun, res: Reservation | None, cand: Candidate, cost: int,
          completion: Completion, outcome: str) -> Flow[None]:
    entry = run.ledger_entry(cand, cost, completion.usage, outcome, completion.request_id)
    yield from book_entry(run, res, cost, entry)


def book_entry(run: RequestRun, res: Reservation | None, cost: int,
               entry: LedgerEntry) -> Flow[None]:
    """Settle `res` (or record the entry alone) at `cost`."""
    try:
        yield Book(res, run.budget_keys, cost, entry)
    except Exception as exc:
        raise _store_error("record the spend of", exc, entry) from exc


def _abandon(run: RequestRun, res: Reservation | None, cand: Candidate, started: float,
             retry_no: int) -> Flow[None]:
    """A call left before its reply (cancelled, or a bug): free its hold. A superseded one
    is booked instead, at the cost of its prompt, which the provider has read."""
    if not run.superseded:
        yield from _release(res)
        return
    try:
        cost, usage = run.partial_cost(cand, "", started)
        run.record(cand, "cancelled", started, cost=cost, usage=usage, retry=retry_no)
        run.core.health.release_probe(cand.deployment.name)
    except Exception:
        yield from _release(res)
        raise
    yield from book_entry(run, res, cost, run.ledger_entry(cand, cost, usage, "cancelled"))


def _release(res: Reservation | None) -> Flow[None]:
    if res is None:
        return
    try:
        yield Release(res)
    except Exception as exc:
        raise _store_error("release", exc) from exc


def _store_error(action: str, exc: Exception, entry: LedgerEntry | None = None) -> Exception:
    """Our own errors pass through; a backend's failure becomes a `StoreError`."""
    if isinstance(exc, StarcoderRouterError):
        return exc
    what = f"{action} a reservation" if entry is None else f"{action} a request"
    return StoreError(f"the spend store failed to {what}: {type(exc).__name__}: {exc}",
                      unrecorded=entry)


# -- hedging -----------------------------------------------------------------------------------

def _hedge(run: RequestRun, first: Candidate, second: Candidate, after: float, *,
           stream: bool | None) -> Flow[tuple[StreamAttempt, StreamChunk] | None]:
    """Race two streaming attempts (see `HedgePolicy`). Both budgets are held up front; the
    driver starts the second only if the first is slow, and reports what happened."""
    attempts: list[StreamAttempt] = []
    try:
        for cand in (first, second):
            res = yield from _hold(run, cand)
            if isinstance(res, _MoveOn):
                continue
            provider, call = run.call_for(cand, stream=stream)
            attempts.append(StreamAttempt(run, cand, provider, call, res, run.now(), 0))
    except BaseException:
        for a in attempts:
            yield from _release(a.reservation)
        raise
    if len(attempts) < 2:
        # Only one leg could be admitted: no race, it is the next candidate like any other.
        for a in attempts:
            yield from _release(a.reservation)
            run.queue.appendleft(a.cand)
        return None
    try:
        outcome: HedgeOutcome = yield StartHedge(attempts[0], attempts[1], after)
    except BaseException:
        for a in attempts:
            if a.chunks is None:  # never started: its hold is still ours
                yield from _release(a.reservation)
        raise
    if outcome.unstarted is not None:
        yield from _release(outcome.unstarted.reservation)
        run.queue.appendleft(outcome.unstarted.cand)  # not needed now; still a fallback
    unforeseen: BaseException | None = None
    for attempt, err in outcome.failed:
        if not isinstance(err, ProviderError):
            unforeseen = unforeseen or err
        if attempt.settled:
            continue
        yield from _release(attempt.reservation)
        if isinstance(err, ProviderError):
            run.failed(attempt.cand, err, 0, attempt.started)
    if unforeseen is not None:
        raise unforeseen
    if outcome.winner is None or outcome.first_chunk is None:
        return None
    return outcome.winner, outcome.first_chunk


def _drain(attempt: StreamAttempt) -> Flow[Completion | None]:
    """A hedged `complete()` has its winner's first chunk: the driver reads the rest. None when
    the stream broke before the end (it booked itself; nothing reached the caller yet)."""
    completion: Completion | None = yield Drain(attempt)
    return completion
