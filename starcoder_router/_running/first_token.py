"""The first-token deadline: a deployment that sends no output within `first_token_timeout_s`
is given up on, and the next one tried, before anything has reached the caller.

The deadline is the request's (`CompletionRequest.first_token_timeout_s`), else the
deployment's (`Deployment.first_token_timeout_s`), and applies to deployments that stream: a
`complete()` under a deadline is read as a stream, which is the only way to see its first token
(the hedge does the same). Each driver waits for the first chunk in its own way (`pull_sync`,
`pull_async`); when the deadline passes first, it `expire`s the attempt, which closes it to
every later booking, cuts the upstream connection, and throws `FirstTokenTimeoutError` into the
flow, which books what the attempt cost (`timed_out`) and moves on.

Exactly one party books an expired attempt: `expire` marks it settled under the attempt's lock,
so whatever the attempt's own stream does afterwards (a late first chunk, the end of a reply
that had no output, the error from the cut connection) books nothing; the flow books the prompt.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import TYPE_CHECKING, Any

from .._errors import FirstTokenTimeoutError

if TYPE_CHECKING:
    from .._routing.decision import Candidate
    from .._stores.base import LedgerEntry
    from .async_router import AsyncRouter
    from .results import StreamChunk
    from .run import RequestRun
    from .stream_attempt import StreamAttempt
    from .sync_router import Router

__all__ = ["deadline_for", "expire", "pull_async", "pull_sync", "timed_out"]


def deadline_for(run: RequestRun, cand: Candidate) -> float | None:
    """The first-token deadline for `cand`, in seconds, or None when none applies."""
    return cand.deployment.first_token_deadline(run.request.first_token_timeout_s)


def expire(attempt: StreamAttempt) -> bool:
    """The deadline passed: close `attempt` to any later booking. False when it had already
    settled (a reply that ended without output), whose outcome then stands."""
    with attempt.lock:
        if attempt.settled:
            return False
        attempt.settled = True
        return True


def timeout_error(attempt: StreamAttempt, seconds: float) -> FirstTokenTimeoutError:
    dep = attempt.cand.deployment
    return FirstTokenTimeoutError(
        f"no output within the first-token deadline of {seconds:g} s "
        f"(first_token_timeout_s)", timeout_s=seconds,
        provider=dep.provider, model=dep.model, deployment=dep.name)


def timed_out(run: RequestRun, attempt: StreamAttempt,
              err: FirstTokenTimeoutError) -> tuple[int, LedgerEntry]:
    """Record an expired attempt as a failure, tell health (a timeout, as a transport one), and
    say what to book: the prompt, which a hosted provider bills once it has it, as a
    cancelled request (the booking a caller's early close gets)."""
    cand = attempt.cand
    name = cand.deployment.name
    cost, usage = run.partial_cost(cand, attempt.text, attempt.started)
    run.last_error = err
    run.tried.add(name)
    run.record(cand, "error", attempt.started, error=err, cost=cost, usage=usage,
               retry=attempt.retry_no)
    run.core.health.record_failure(name, run.core.clock.now(), err.summary())
    return cost, run.ledger_entry(cand, cost, usage, "cancelled")


# -- the drivers' waits ------------------------------------------------------------------------

class _Pull:
    """The sync wait's meeting point with the thread that reads the first chunk: whichever of
    the two comes second (the chunk after the deadline, or the deadline after the chunk) knows
    it, under `lock`, and ends the attempt."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.expired = False
        self.first: StreamChunk | None = None
        self.error: BaseException | None = None


def pull_sync(router: Router, attempt: StreamAttempt, seconds: float) -> StreamChunk:
    """The first chunk of `attempt` (whose `chunks` the router set), or `FirstTokenTimeoutError`
    after `seconds`. The read runs on a thread of its own, so that the deadline can pass while
    it blocks; on expiry the connection is cut under it, and the thread ends when its read does
    (at once for a cut stream; a server that has not sent its headers yet is not waited for:
    the thread ends when they come, or at the request's timeout, and books nothing)."""
    chunks = attempt.chunks
    pull = _Pull()

    def read_first() -> None:
        try:
            try:
                first, error = next(chunks), None
            except BaseException as exc:
                first, error = None, exc
            with pull.lock:
                if not pull.expired:
                    pull.first, pull.error = first, error
                    pull.done.set()
                    return
            if error is None:
                chunks.close()  # output came after the deadline: end it, booking nothing
        finally:
            router.hedge_threads.discard(thread)

    thread = threading.Thread(target=read_first, daemon=True,
                              name=f"starcoder-router-first-token-{attempt.cand.deployment.name}")
    router.hedge_threads.add(thread)  # `close()` lets it end before closing its connection
    thread.start()
    try:
        in_time = pull.done.wait(seconds)
    except BaseException:
        # Interrupted while waiting (Ctrl-C): book the attempt as cancelled here, since its
        # thread may still be reading, and stop it; the flow then finds it settled.
        book = attempt.cancel_booking()
        if book is not None:
            _stop(pull, attempt)
            router.perform(book)
        raise
    if not in_time and expire(attempt):
        _stop(pull, attempt)
        raise timeout_error(attempt, seconds)
    pull.done.wait()  # the reply ended on its own just as the deadline passed: take it
    if pull.error is not None:
        raise pull.error
    assert pull.first is not None
    return pull.first


def _stop(pull: _Pull, attempt: StreamAttempt) -> None:
    """End a settled attempt whose first chunk is being read on another thread: close it if
    that chunk has just come, else tell the thread to, and cut its connection."""
    from .sync_hedge import cut  # it imports the flow, which imports this module

    with pull.lock:
        pull.expired = True
        late = pull.done.is_set() and pull.error is None
    if late:
        attempt.chunks.close()
    handle = attempt.handle
    if handle is not None:
        cut(handle)


async def pull_async(router: AsyncRouter, attempt: StreamAttempt, seconds: float) -> StreamChunk:
    """The first chunk of `attempt`, or `FirstTokenTimeoutError` after `seconds`; on expiry the
    read is cancelled, which closes its connection, and nothing is left running."""
    chunks = attempt.chunks
    task: asyncio.Future[StreamChunk] = asyncio.ensure_future(anext(chunks))
    try:
        done, _ = await asyncio.wait({task}, timeout=seconds)
        if done or not expire(attempt):
            return await task
    except BaseException:
        # Cancelled while waiting: the attempt books itself as cancelled with its read.
        await _end(task, chunks)
        raise
    await _end(task, chunks)
    raise timeout_error(attempt, seconds)


async def _end(task: asyncio.Future[Any], chunks: Any) -> None:
    task.cancel()
    with contextlib.suppress(BaseException):
        await task
    await chunks.aclose()
