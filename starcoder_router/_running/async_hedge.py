"""Hedged requests for `AsyncRouter`: two streaming attempts as tasks, each pulling its first
chunk; the first to produce output wins, the other task is cancelled (its attempt is recorded as
"lost" and books what it cost) and its stream closed. No task outlives the race."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from .actions import Release
from .flow import HedgeOutcome
from .results import StreamChunk

if TYPE_CHECKING:
    from .actions import StartHedge
    from .async_router import AsyncRouter
    from .stream_attempt import StreamAttempt

__all__ = ["race"]


async def race(router: AsyncRouter, action: StartHedge) -> HedgeOutcome:
    """Start `action.first`; if it has no output after `action.after_s`, start the second too."""
    outcome = HedgeOutcome()
    legs: dict[asyncio.Future[StreamChunk], StreamAttempt] = {}

    def start(attempt: StreamAttempt) -> None:
        attempt.chunks = chunks = router.pump(attempt)
        legs[asyncio.ensure_future(anext(chunks))] = attempt

    start(action.first)
    try:
        done, _ = await asyncio.wait(list(legs), timeout=action.after_s)
        if done and all(t.exception() is None for t in done):
            outcome.unstarted = action.second
        else:
            start(action.second)  # the first is slow, or failed early
        while legs and outcome.winner is None:
            done, _ = await asyncio.wait(list(legs), return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                attempt = legs.pop(task)
                exc = task.exception()
                if exc is None and outcome.winner is None:
                    outcome.winner, outcome.first_chunk = attempt, task.result()
                    continue
                attempt.lost_hedge = exc is None
                await attempt.chunks.aclose()  # a second winner loses; a failure is over
                if exc is not None:
                    outcome.failed.append((attempt, exc))
    except BaseException:
        # Cancelled (or worse) mid-race: nobody will read the outcome, so the holds of the legs
        # that failed before output are freed here; the others book themselves.
        await _end_legs(legs, outcome, lost=False)
        for attempt, _ in outcome.failed:
            if not attempt.settled and attempt.reservation is not None:
                await router.perform(Release(attempt.reservation))
        raise
    await _end_legs(legs, outcome, lost=True)
    return outcome


async def _end_legs(legs: dict[asyncio.Future[StreamChunk], StreamAttempt],
                    outcome: HedgeOutcome, *, lost: bool) -> None:
    """Cancel the legs still running (each records itself as `lost` the race, or cancelled
    with the caller, and books what it cost) and note the ones that failed on their own before
    they could be, for the flow to book. Each is awaited, so all are reported on return."""
    for task, attempt in legs.items():
        attempt.lost_hedge = lost
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        await attempt.chunks.aclose()
        error = None if task.cancelled() else task.exception()
        if error is not None and not attempt.settled:
            outcome.failed.append((attempt, error))
    legs.clear()
