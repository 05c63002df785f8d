"""One streaming attempt, free of I/O and written once for both routers.

`StreamAttempt.pump()` is a generator: it yields `Open`, lists of chunks (pass them on, then
read on), `Emit`, `Book`… and each router drives it with its own I/O (`Router.pump`,
`AsyncRouter.pump`). The lines of a network read are decoded in one go (`feed_lines`), so the
cost of a round trip through the drivers is paid per read, not per event. The attempt keeps the
books: first-token time, the deadline, draining the end marker, and what to settle when the
stream finishes, breaks after output, or is closed early by the caller — on every one of those
paths exactly once (`settled`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Generator
from typing import TYPE_CHECKING, Any, NamedTuple

from .._autocomplete import Shaper
from .._clock import SystemClock
from .._errors import ProviderError, ProviderTransportError, StreamInterruptedError
from .._providers.errormap import UNREADABLE, in_context, unreadable_reply, with_context
from .._transports.base import WireResponse
from .actions import READ_BODY, Book, Emit, Open, PumpAction, Release
from .results import Completion, StreamChunk, Usage

if TYPE_CHECKING:
    from .._providers.base import Provider, StreamDecoder
    from .._providers.call import Call, FinishReason
    from .._routing.decision import Candidate
    from .._stores.base import Reservation
    from .run import RequestRun

__all__ = ["LOST_HEDGE", "StreamAttempt"]

# Lines read after a stream's end marker before giving up on reusing its connection.
_MAX_DRAIN_LINES = 8


class _Booking(NamedTuple):
    cost: int
    usage: Usage
    outcome: str
    provider_request_id: str | None = None


class StreamAttempt:
    """The state of one streaming attempt. `completion` is set once it ends, however it ends:
    the whole answer, or what was delivered before it broke off or was closed."""

    def __init__(self, run: RequestRun, cand: Candidate, provider: Provider, call: Call,
                 reservation: Reservation | None, started: float, retry_no: int):
        self.run = run
        self.cand = cand
        self.provider = provider
        self.call = call
        self.reservation = reservation
        self.started = started
        self.retry_no = retry_no
        self.decoder: StreamDecoder = provider.stream_decoder(call)
        self.parts: list[str] = []
        self.ttft: float | None = None
        self.delivered = 0
        self.settled = False
        self.completion: Completion | None = None
        # Set by the driver: its generator of chunks, and (sync) the open connection, so that a
        # lost hedge leg can be cancelled from another thread by closing it. `lost_hedge` marks
        # an attempt cancelled because the other leg of its hedge answered first: it is
        # recorded as "lost", and never finishes as a success after that.
        self.chunks: Any = None
        self.handle: Any = None
        self.lock = threading.Lock()
        self.lost_hedge = False
        self._drained = 0
        clock = run.core.clock
        # Read per event: the system clock's reading is `time.monotonic()`, called directly.
        self._now = time.monotonic if type(clock) is SystemClock else clock.now
        self._deadline = run.deadline
        # Autocomplete's cut, applied after the stops like one more stop of our own; `cut`
        # turns true when it (or a stop found on our side) ends the completion before the
        # provider did.
        self.shaper = Shaper(run.shaping) if run.shaping is not None else None
        self.cut = False
        # Set by `feed_lines` when reading should stop: the end marker was drained, the cut
        # closed the block, or an error came after some chunks of the same read (`_error`,
        # raised once those are passed on, as if they had been read one by one).
        self._done = False
        self._error: Exception | None = None

    @property
    def text(self) -> str:
        return "".join(self.parts)

    # -- the flow the drivers run ---------------------------------------------------------------

    def pump(self) -> Generator[PumpAction, Any, None]:
        call = self.call
        try:
            status, headers = yield Open(call.deployment.provider, self.provider.build(call),
                                         self.run.timeout_for(call), call.endpoint.connect_timeout,
                                         self.run.remaining(), call.deployment.name,
                                         self.run.urgent)
        except ProviderTransportError as exc:
            raise with_context(exc, call) from exc
        except BaseException:
            # Cancelled while the request was in flight: the provider has the prompt.
            yield from self._book_cancelled()
            raise
        try:
            if status >= 400:
                body = yield READ_BODY
                raise in_context(self.provider.error(call, WireResponse(status, headers, body)),
                                  call)
            out: list[StreamChunk] = []
            while (lines := (yield out)) is not None:
                out = self.feed_lines(lines)
                if self._done:  # the block closed (the driver closes the upstream call), or
                    for chunk in out:  # the end marker was drained, or an error came
                        yield Emit(chunk)
                    if self._error is not None:
                        raise self._error
                    break
            booking, last, problem = self.finish()
            yield from self._book(booking)
            yield Emit(last)
            if problem is not None:
                raise self.structured_error(problem)
        except ProviderError as exc:
            err = in_context(exc, call)
            if not self.delivered or self.settled:
                if err is exc:
                    raise
                raise err from exc
            booking, error = self.interrupted(err)
            yield from self._book(booking)
            raise error from exc
        except BaseException:
            # The caller closed the stream early (GeneratorExit), its task was cancelled, or
            # something nobody foresaw: book what was delivered, exactly once.
            yield from self._book_cancelled()
            raise

    def _book_cancelled(self) -> Generator[PumpAction, Any, None]:
        """Book what was delivered; should even costing it fail, free the hold all the same,
        so that no exception path leaves budget reserved until its time-to-live runs out."""
        try:
            booking = self.cancelled()
        except Exception:
            self.settled = True
            if self.reservation is not None:
                yield Release(self.reservation)
            raise
        yield from self._book(booking)

    def _book(self, booking: _Booking | None) -> Generator[PumpAction, Any, None]:
        if booking is None:
            return
        run = self.run
        entry = run.ledger_entry(self.cand, booking.cost, booking.usage, booking.outcome,
                                 booking.provider_request_id)
        yield Book(self.reservation, run.budget_keys, booking.cost, entry)

    def cancel_booking(self) -> Book | None:
        """For a hedge leg cancelled before its first chunk: what to book (once)."""
        booking = self.cancelled()
        if booking is None:
            return None
        run = self.run
        entry = run.ledger_entry(self.cand, booking.cost, booking.usage, booking.outcome)
        return Book(self.reservation, run.budget_keys, booking.cost, entry)

    # -- bookkeeping ----------------------------------------------------------------------------

    def feed_lines(self, lines: list[bytes]) -> list[StreamChunk]:
        """The chunks to pass on for the lines of one read (often none). Sets `_done` when
        reading should stop."""
        out: list[StreamChunk] = []
        if not lines:
            return out
        decoder = self.decoder
        idle, feed, shaper = decoder.idle, decoder.feed, self.shaper
        clock, deadline = self._now, self._deadline
        try:
            for line in lines:
                if not line and idle(line):
                    continue  # SSE's blank line after each event changes nothing
                if decoder.finished:
                    # Read the little that follows the end marker, so the connection goes
                    # back to the pool instead of being dropped; give up on a server that
                    # keeps on sending.
                    self._drained += 1
                    if self._drained > _MAX_DRAIN_LINES:
                        self._done = True
                        break
                    continue
                now = clock()
                if now > deadline:
                    # A server that keeps streaming must not keep the caller past the deadline
                    # (checked per event: a read may bring many, and the caller may be slow).
                    raise with_context(ProviderTransportError(
                        "the request deadline passed mid-stream"), self.call)
                try:
                    delta = feed(line)
                except UNREADABLE as exc:
                    raise unreadable_reply(exc, self.call) from exc
                if shaper is not None and (delta or decoder.cutter.stopped):
                    ended = decoder.finished or decoder.finish_raw is not None
                    # A stop met on our side ends an autocomplete answer as its cut does: the
                    # upstream call is closed instead of read to its end.
                    delta = shaper.push(delta, end=ended or decoder.cutter.stopped)
                    self.cut = shaper.stopped and not ended
                if delta:
                    if self.ttft is None:
                        self.ttft = now - self.started
                    self.parts.append(delta)
                    out.append(StreamChunk(delta, self.delivered))
                    self.delivered += 1
                if self.cut:
                    self._done = True
                    break
        except Exception as exc:
            if not out:
                raise
            # The chunks before it were read: they go to the caller first, then the error.
            self._error, self._done = exc, True
        return out

    def withdraw(self, n: int) -> None:
        """The caller stopped reading with the last `n` chunks passed on not taken: they were
        never delivered, and the books say so."""
        if n > 0 and not self.settled:
            del self.parts[-n:]
            self.delivered -= n

    def finish(self) -> tuple[_Booking, StreamChunk, str | None]:
        """At the end of the stream: what to settle, the last chunk (with the finish reason),
        and what is wrong with structured output, if anything."""
        if self.cut:
            return self._finish_cut()
        tail = self.shaper.push(None, end=True) if self.shaper is not None else None
        try:
            result = self.decoder.result()
        except UNREADABLE as exc:
            raise unreadable_reply(exc, self.call) from exc
        with self.lock:
            # A lost hedge leg whose reply ended before its cut took hold: it was (or is about
            # to be) recorded as lost, so it must not also succeed.
            if self.settled or self.lost_hedge:
                raise with_context(ProviderTransportError(LOST_HEDGE), self.call)
            self.settled = True
        try:
            completion, problem = self.run.succeeded(self.cand, result, self.started, self.ttft,
                                                     self.retry_no)
        except BaseException:
            self.settled = False  # a bug in costing: the caller's error path books it
            raise
        self.completion = completion
        booking = _Booking(completion.cost_nano, completion.usage,
                           "ok" if problem is None else "error", completion.request_id)
        last = StreamChunk(tail or "", self.delivered, completion.finish_reason)
        if tail:  # the shaper held it back until the end was known
            self.parts.append(tail)
            self.delivered += 1
        return booking, last, problem

    def _finish_cut(self) -> tuple[_Booking, StreamChunk, None]:
        with self.lock:
            self.settled = True
        completion = self.run.cut_short(self.cand, self.text, "".join(self.decoder.parts),
                                        self.started, self.ttft, self.retry_no)
        self.completion = completion
        booking = _Booking(completion.cost_nano, completion.usage, "ok")
        return booking, StreamChunk("", self.delivered, "stop"), None

    def structured_error(self, problem: str) -> ProviderError:
        assert self.completion is not None
        return self.run.structured_error(self.completion, problem)

    def interrupted(self, err: ProviderError) -> tuple[_Booking, StreamInterruptedError]:
        """A failure after output reached the caller: cost what was delivered, and the error
        that says how much it was."""
        self.settled = True
        run, cand = self.run, self.cand
        text = self.text
        cost, usage = run.partial_cost(cand, text, self.started)
        run.record(cand, "interrupted", self.started, error=err, cost=cost, usage=usage,
                   retry=self.retry_no)
        core = run.core
        core.health.record_failure(cand.deployment.name, core.clock.now(), err.summary())
        self.completion = self._partial(text, cost, usage, "error")
        dep = cand.deployment
        out = StreamInterruptedError(
            f"stream from {dep.name} failed after {self.delivered} chunk(s) "
            f"({len(text)} characters) had been delivered: {err}",
            delivered_text=text, delivered_chunks=self.delivered, completion=self.completion,
            provider=dep.provider, model=dep.model, deployment=dep.name,
            status_code=err.status_code, request_id=err.request_id,
        )
        out.attempts = tuple(run.attempts)
        return _Booking(cost, usage, "partial"), out

    def cancelled(self) -> _Booking | None:
        """The caller stopped early (or the attempt lost a hedge): cost the prompt and what was
        delivered. None when the attempt is already settled.

        Two threads may race to cancel a lost sync hedge leg (its own, and the router's when
        the leg does not end in time); the lock is held until the attempt is recorded, so the
        one that gets None knows the record (and its hook) is done."""
        with self.lock:
            if self.settled:
                return None
            self.settled = True
            run, cand = self.run, self.cand
            text = self.text
            cost, usage = run.partial_cost(cand, text, self.started)
            run.record(cand, "lost" if self.lost_hedge else "cancelled", self.started,
                       cost=cost, usage=usage, retry=self.retry_no)
            run.core.health.release_probe(cand.deployment.name)
            self.completion = self._partial(text, cost, usage, "cancelled")
        return _Booking(cost, usage, "cancelled")

    def _partial(self, text: str, cost: int, usage: Usage, reason: FinishReason) -> Completion:
        run = self.run
        return Completion(
            text=text, finish_reason=reason, usage=usage, cost_nano=cost,
            deployment=self.cand.deployment, decision=run.decision,
            attempts=tuple(run.attempts), latency_s=run.attempts[-1].latency_s,
            ttft_s=self.ttft, trimmed=self.cand.trimmed,
            mode=run.shaping.mode if run.shaping is not None else None,
        )

# Why a lost hedge leg's stream ends, should its reply come after all.
LOST_HEDGE = "cancelled: the other leg of the hedge answered first"

