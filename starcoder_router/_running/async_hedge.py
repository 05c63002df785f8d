"""Hedged requests for `AsyncRouter`: two streaming attempts as tasks, each pulling its first
chunk; the first to produce output wins, the other task is cancelled (its attempt books what it
cost) and its stream closed. No task outlives the race."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

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
                await attempt.chunks.aclose()  # a second winner loses; a failure is over
                if exc is not None:
                    outcome.failed.append((attempt, exc))
    finally:
        for task, attempt in legs.items():
            task.cancel()  # the attempt books itself as cancelled, with what it cost
            with contextlib.suppress(BaseException):
                await task
            await attempt.chunks.aclose()
    return outcome
