"""One streaming attempt of the sync `Router`, and one leg of a hedged request.

The session moves bytes; `StreamProgress` keeps the books. A hedged leg pulls its first chunk on
a thread of its own, so that the router can wait for whichever leg answers first.
"""

from __future__ import annotations

import threading
from collections.abc import Generator
from typing import TYPE_CHECKING

from .._errors import ProviderError, ProviderTransportError
from .._providers.base import Provider
from .._providers.call import Call
from .._routing.decision import Candidate
from .._transports.base import WireResponse
from .progress import END, Booking, StreamProgress
from .results import Completion, StreamChunk
from .run import RequestRun
from .support import with_context

if TYPE_CHECKING:
    import queue

    from .._stores.base import Reservation
    from .._transports.base import StreamHandle
    from .sync_router import Router

__all__ = ["SyncLeg", "SyncStreamSession"]


class SyncLeg:
    """One hedged attempt: its thread pulls the first chunk, then waits to hear whether it won.
    A loser is cancelled by closing its connection; it then books its own spend."""

    def __init__(self, cand: Candidate, res: Reservation | None, session: SyncStreamSession,
                 chunks: Generator[StreamChunk, None, None]):
        self.cand = cand
        self.res = res
        self.session = session
        self.chunks = chunks
        self.first: StreamChunk | None = None
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None
        self._lost = threading.Event()
        self._decided = threading.Event()

    def pull_first(self, reports: queue.Queue[SyncLeg]) -> None:
        try:
            self.first = next(self.chunks)
        except BaseException as exc:
            self.error = exc
        if self._lost.is_set():
            self._book_loss()
            return
        reports.put(self)
        self._decided.wait()
        if self._lost.is_set():
            self._book_loss()

    def cancel(self) -> None:
        self._lost.set()
        self.session.cancel()
        self._decided.set()

    def _book_loss(self) -> None:
        if self.error is None:
            self.chunks.close()  # books the cancelled attempt from inside the session
        else:
            self.session.book_cancelled()


class SyncStreamSession:
    """One streaming attempt: moves the bytes; `StreamProgress` keeps the books. On any end
    (finish, error after output, the caller closing early) exactly what was spent is settled."""

    def __init__(self, router: Router, run: RequestRun, cand: Candidate, provider: Provider,
                 call: Call, res: Reservation | None, started: float, retry_no: int):
        self.router = router
        self.provider = provider
        self.call = call
        self.res = res
        self.progress = StreamProgress(run, cand, provider, call, started, retry_no)
        self._handle: StreamHandle | None = None
        self._cancel_requested = False

    @property
    def delivered(self) -> int:
        return self.progress.delivered

    @property
    def completion(self) -> Completion | None:
        return self.progress.completion

    @property
    def started(self) -> float:
        return self.progress.started

    def cancel(self) -> None:
        """Cancel from another thread (a lost hedge): close the connection under the reader."""
        self._cancel_requested = True
        if self._handle is not None:
            self._handle.close()

    def book_cancelled(self) -> None:
        """Book a leg that lost a hedge before its first chunk (its read failed because we
        closed its connection)."""
        if not self.progress.settled:
            self.progress.settled = True
            self._book(self.progress.cancelled())

    def _book(self, booking: Booking) -> None:
        prog = self.progress
        self.router._settle(prog.run, self.res, prog.cand, booking.cost, booking.usage,
                            booking.outcome, booking.provider_request_id)

    def _open(self) -> StreamHandle:
        call = self.call
        transport = self.router._transport_for(call.deployment.provider)
        try:
            handle = transport.open(self.provider.build(call),
                                    timeout=self.progress.run.timeout_for(call),
                                    connect_timeout=call.endpoint.connect_timeout)
        except ProviderTransportError as exc:
            raise with_context(exc, call) from exc
        self._handle = handle
        if self._cancel_requested:
            handle.close()
        return handle

    def chunks(self) -> Generator[StreamChunk, None, None]:
        handle = self._open()
        prog = self.progress
        try:
            if handle.status >= 400:
                raise self.provider.error(self.call, WireResponse(handle.status, handle.headers,
                                                                  handle.read()))
            for line in handle.lines():
                chunk = prog.feed(line)
                if isinstance(chunk, StreamChunk):
                    yield chunk
                elif chunk is END:
                    break
            booking, last, problem = prog.finish()
            prog.settled = True
            self._book(booking)
            yield last
            if problem is not None:
                raise prog.structured_error(problem)
        except ProviderError as err:
            if not prog.delivered or prog.settled:
                raise
            prog.settled = True
            booking, error = prog.interrupted(err)
            self._book(booking)
            raise error from err
        except GeneratorExit:
            if not prog.settled:
                prog.settled = True
                self._book(prog.cancelled())
            raise
        finally:
            handle.close()
