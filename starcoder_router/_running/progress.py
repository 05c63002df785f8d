"""One streaming attempt's bookkeeping, shared by both routers and free of I/O.

The sync and async sessions only move bytes: they hand each line to `StreamProgress.feed` and
yield what it returns, and at the end ask it what to settle. Everything else (first-token
time, the deadline, draining the end marker, costing a finished, interrupted or cancelled
stream, the attempt record) is decided here once.
"""

from __future__ import annotations

from typing import NamedTuple

from .._errors import ProviderError, ProviderTransportError, StreamInterruptedError
from .._providers.base import Provider, StreamDecoder
from .._providers.call import Call
from .._routing.decision import Candidate
from .results import Completion, StreamChunk, Usage
from .run import RequestRun
from .support import interrupted_error, with_context

__all__ = ["END", "Booking", "StreamProgress"]

# Lines read after a stream's end marker before giving up on reusing its connection.
_MAX_DRAIN_LINES = 8


class _End:
    """Returned by `feed` when the stream is over and the connection should be let go."""


END = _End()


class Booking(NamedTuple):
    """What to settle for an attempt: the cost, its usage and the ledger outcome."""

    cost: int
    usage: Usage
    outcome: str
    provider_request_id: str | None = None


class StreamProgress:
    """The state of one streaming attempt."""

    def __init__(self, run: RequestRun, cand: Candidate, provider: Provider, call: Call,
                 started: float, retry_no: int):
        self.run = run
        self.cand = cand
        self.call = call
        self.started = started
        self.retry_no = retry_no
        self.decoder: StreamDecoder = provider.stream_decoder(call)
        self.parts: list[str] = []
        self.ttft: float | None = None
        self.delivered = 0
        self.settled = False
        self.completion: Completion | None = None
        self._drained = 0

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def feed(self, line: bytes) -> StreamChunk | _End | None:
        """The chunk to pass on for `line`, None for a line without text, or END."""
        decoder = self.decoder
        if decoder.finished:
            # Read the little that follows the end marker, so the connection goes back to the
            # pool instead of being dropped; give up on a server that keeps on sending.
            self._drained += 1
            return END if self._drained > _MAX_DRAIN_LINES else None
        now = self.run.core.clock.now()
        if now > self.run.deadline:
            # A server that keeps streaming must not keep the caller past the deadline.
            raise with_context(
                ProviderTransportError("the request deadline passed mid-stream"), self.call)
        delta = decoder.feed(line)
        if not delta:
            return None
        if self.ttft is None:
            self.ttft = now - self.started
        self.parts.append(delta)
        self.delivered += 1
        return StreamChunk(delta, self.delivered - 1)

    def finish(self) -> tuple[Booking, StreamChunk, str | None]:
        """At the end of the stream: what to settle, the last chunk (with the finish reason),
        and what is wrong with structured output, if anything."""
        result = self.decoder.result()
        completion, problem = self.run.succeeded(self.cand, result, self.started, self.ttft,
                                                 self.retry_no)
        self.completion = completion
        booking = Booking(completion.cost_nano, completion.usage,
                          "ok" if problem is None else "error", completion.request_id)
        return booking, StreamChunk("", self.delivered, completion.finish_reason), problem

    def structured_error(self, problem: str) -> ProviderError:
        assert self.completion is not None
        err = self.run.structured_error(self.completion, problem)
        self.completion = None
        return err

    def interrupted(self, err: ProviderError) -> tuple[Booking, StreamInterruptedError]:
        """A failure after output reached the caller: cost what was delivered, and the error
        that says how much it was."""
        run, cand = self.run, self.cand
        text = self.text
        cost, usage = run.partial_cost(cand, text, self.started)
        run.record(cand, "interrupted", self.started, error=err, cost=cost, usage=usage,
                   retry=self.retry_no)
        core = run.core
        core.health.record_failure(cand.deployment.name, core.clock.now(), type(err).__name__)
        return (Booking(cost, usage, "partial"),
                interrupted_error(run, cand, err, text, self.delivered, cost, usage))

    def cancelled(self) -> Booking:
        """The caller stopped early (or the attempt lost a hedge): cost the prompt and what was
        delivered."""
        run, cand = self.run, self.cand
        cost, usage = run.partial_cost(cand, self.text, self.started)
        run.record(cand, "cancelled", self.started, cost=cost, usage=usage, retry=self.retry_no)
        run.core.health.release_probe(cand.deployment.name)
        return Booking(cost, usage, "cancelled")
