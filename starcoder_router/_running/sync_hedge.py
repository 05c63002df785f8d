"""Hedged requests for the sync `Router`: two streaming attempts, each pulling its first chunk
on a thread of its own, so that the router can take whichever answers first.

Every thread ends on its own: a leg that has reported its first chunk (or its failure) has
nothing left to do, and a leg that is still waiting for its server when it loses is cancelled
by closing its connection under it, after which it books what it cost and ends too. No thread
ever waits for a signal that might not come.

Every leg is reported before `race` returns, so the caller's `Completion.attempts` and its
`on_attempt` hooks see the loser (outcome "lost"). The winner waits at most `_LOSER_GRACE_S`
for a cut-off loser to end and book itself. One that does not end by then (still connecting,
or waiting for response headers, where a closed connection does not always wake the reader)
is recorded and booked from here with what it had reached: the prompt, and any output its
thread takes in after that is not costed. Its thread ends when its read does, and books
nothing more; should that thread be the one recording it when the grace ends, its booking
(not its record) may land after `complete()` returns.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from .flow import HedgeOutcome
from .results import StreamChunk

if TYPE_CHECKING:
    from .actions import StartHedge
    from .stream_attempt import StreamAttempt
    from .sync_router import Router

__all__ = ["race"]

logger = logging.getLogger("starcoder_router")

# How long the winner waits for a cancelled loser to finish: usually the closed connection ends
# it at once. One still waiting for its server is not waited for: it is reported from here.
_LOSER_GRACE_S = 0.05


def race(router: Router, action: StartHedge) -> HedgeOutcome:
    """Start `action.first`; if it has no output after `action.after_s`, start the second too.
    The first leg to produce output wins; the other is cancelled and books what it cost."""
    outcome = HedgeOutcome()
    reports: queue.Queue[_Leg] = queue.Queue()
    legs = [_Leg(router, action.first, reports)]
    try:
        early: _Leg | None = reports.get(timeout=action.after_s)
    except queue.Empty:
        early = None
    if early is None or early.error is not None:
        legs.append(_Leg(router, action.second, reports))
    else:
        outcome.unstarted = action.second
    winner: _Leg | None = None
    heard: list[_Leg] = []
    while len(heard) < len(legs) and winner is None:
        leg = early if early is not None else reports.get()
        early = None
        heard.append(leg)
        if leg.error is None:
            winner = leg
        else:
            outcome.failed.append((leg.attempt, leg.error))
    losers: list[_Leg] = []
    for leg in legs:
        if leg is not winner and leg not in heard:
            error = leg.lose()
            if error is not None:  # it failed on its own, just now: the flow frees its hold
                outcome.failed.append((leg.attempt, error))
            else:
                losers.append(leg)
    deadline = time.monotonic() + _LOSER_GRACE_S
    for leg in legs:
        if leg is not winner:
            leg.thread.join(timeout=max(0.0, deadline - time.monotonic()))
    for leg in losers:
        if leg.thread.is_alive():
            leg.report_lost()
    if winner is not None:
        outcome.winner, outcome.first_chunk = winner.attempt, winner.first
    return outcome


class _Leg:
    """One attempt of a hedge and the thread that pulls its first chunk."""

    def __init__(self, router: Router, attempt: StreamAttempt, reports: queue.Queue[_Leg]):
        self.router = router
        self.attempt = attempt
        self.chunks: Generator[StreamChunk, None, None] = router.pump(attempt)
        attempt.chunks = self.chunks
        self.first: StreamChunk | None = None
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._lost = False
        self._reported = False
        self.thread = threading.Thread(
            target=self._pull_first, args=(reports,), daemon=True,
            name=f"starcoder-router-hedge-{attempt.cand.deployment.name}")
        router.hedge_threads.add(self.thread)
        self.thread.start()

    def _pull_first(self, reports: queue.Queue[_Leg]) -> None:
        try:
            try:
                self.first = next(self.chunks)
            except BaseException as exc:
                self.error = exc
            with self._lock:
                if not self._lost:
                    self._reported = True
                    reports.put(self)
                    return
            self._book_loss()  # lost while waiting for its server
        finally:
            self.router.hedge_threads.discard(self.thread)

    def lose(self) -> BaseException | None:
        """This leg lost. If its thread is done, book it now (output it had reached is costed
        as cancelled) or return the failure it ended with, for the flow to book; else cut its
        connection, and the thread books it when its read ends."""
        self.attempt.lost_hedge = True
        with self._lock:
            self._lost = True
            reported = self._reported
        if not reported:
            handle = self.attempt.handle
            if handle is not None:
                cut(handle)
            return None
        if self.error is not None:
            return self.error
        self.chunks.close()  # the attempt books itself as cancelled
        return None

    def _book_loss(self) -> None:
        if self.error is None:
            self.chunks.close()  # the attempt books itself as cancelled
        else:
            self._book_now()  # it failed because we closed it

    def report_lost(self) -> None:
        """The leg is still running after the grace: record it as lost now, with what it had
        reached, and book that. (None from `cancel_booking` means its thread did it first;
        the attempt's lock held until the record was made, so it is made.)"""
        self._book_now()

    def _book_now(self) -> None:
        book = self.attempt.cancel_booking()
        if book is not None:
            try:
                self.router.perform(book)
            except Exception:  # the winner's answer stands; the loser's booking is logged
                logger.exception("could not book a cancelled hedge leg")


def cut(handle: Any) -> None:
    """Close a stream another thread may be blocked reading: `abort()` where the transport has
    it (it wakes the reader at once), else `close()`."""
    abort = getattr(handle, "abort", None)
    (abort or handle.close)()
