"""`Router`: the synchronous driver of the request flow.

Example::

    from starcoder_router import Router

    with Router() as router:
        print(router.route(prompt="def fib(n):", max_tokens=64).explain())
        completion = router.complete(prefix="def add(a, b):\\n    ", suffix="\\n", max_tokens=32)
        print(completion.text, completion.cost_usd)

Everything a request decides is in `flow.py` and `stream_attempt.py`; this module only performs
their actions with blocking calls. `AsyncRouter` performs the same actions with `await`.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from collections.abc import Generator, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from .._errors import ProviderTransportError, StreamInterruptedError
from .._stores.report import By, spend_report
from .._transports.base import line_batches
from . import actions as act
from .base_router import BaseRouter
from .first_token import pull_sync
from .flow import Flow, complete_flow, stream_flow
from .results import Completion, StreamChunk
from .sessions_run import complete_sync, stream_sync
from .stream_attempt import LOST_HEDGE
from .streams import Stream
from .sync_hedge import race

if TYPE_CHECKING:
    from typing import Unpack

    from .._autocomplete.sessions import AutocompletePolicy
    from .._clock import Clock
    from .._config import ProviderSettings
    from .._fleet import Fleet, FleetPolicy, Hold
    from .._routing.catalog import Catalog
    from .._routing.health import HealthPolicy
    from .._routing.policy import CostPolicy
    from .._routing.request import CompletionRequest, RequestFields
    from .._routing.tokens import TokenCounter
    from .._stores.base import SpendStore
    from .._transports.base import StreamHandle, SyncTransport
    from .hooks import Hooks
    from .retry import HedgePolicy, RetryPolicy
    from .run import RequestRun
    from .stream_attempt import StreamAttempt

__all__ = ["Router"]

# How long `close()` waits for lost hedge legs to end (they are cut off, so usually at once;
# one still waiting for its server's first byte ends when that comes, or at its deadline).
_CLOSE_WAIT_S = 2.0

T = TypeVar("T")


class Router(BaseRouter):
    """Routes and runs StarCoder 2 requests (synchronous). `AsyncRouter` is its async twin.

    With no arguments it uses the default catalog, treats a hosted provider as configured when
    its API key is in the environment, keeps spend in memory, and counts tokens exactly if a
    StarCoder 2 tokenizer can be found locally (else conservatively).
    """

    def __init__(
        self,
        *,
        catalog: Catalog | None = None,
        policy: CostPolicy | None = None,
        providers: Mapping[str, ProviderSettings | Mapping[str, Any]] | None = None,
        tokenizer: str | os.PathLike[str] | TokenCounter | Literal[False] | None = None,
        store: SpendStore | None = None,
        retry: RetryPolicy | None = None,
        health: HealthPolicy | None = None,
        hooks: Hooks | None = None,
        transport: SyncTransport | None = None,
        hedge: HedgePolicy | None = None,
        clock: Clock | None = None,
        env: Mapping[str, str] | None = None,
        autocomplete: AutocompletePolicy | None = None,
        fleet: FleetPolicy | Fleet | None = None,
    ):
        super().__init__(catalog=catalog, policy=policy, providers=providers,
                         tokenizer=tokenizer, store=store, retry=retry, health=health,
                         hooks=hooks, hedge=hedge, clock=clock, env=env,
                         autocomplete=autocomplete, fleet=fleet)
        self._transport = transport
        self._transports: dict[str, SyncTransport] = {}
        # Threads of hedge legs that lost, and of reads cut off at their first-token deadline,
        # still ending: `close()` lets them finish (each books what it cost, if anything)
        # before it closes the connections they use.
        self.hedge_threads: set[threading.Thread] = set()

    # -- the API --------------------------------------------------------------------------------

    def complete(self, request: CompletionRequest | None = None, /,
                 **fields: Unpack[RequestFields]) -> Completion:
        """Route and run a request; returns the costed completion."""
        req = self._request(request, fields, stream=False)
        begin = self._sessions.begin(req)
        if begin is not None:  # a session or the cache applies: see `sessions_run`
            return complete_sync(self, req, begin)
        return self._drive(complete_flow(self._core.start(req), self._hedge))

    def stream(self, request: CompletionRequest | None = None, /,
               **fields: Unpack[RequestFields]) -> Stream:
        """Route and stream a request. Iterate for `StreamChunk`s; use as a context manager so
        an early exit closes the connection. `stream.completion` has usage and cost at the end
        (or, after an early exit, what was delivered and what it cost). The request is sent
        here: routing, budget and provider errors before the first chunk raise from this call."""
        req = self._request(request, fields, stream=True)
        stream = Stream()
        begin = self._sessions.begin(req)
        if begin is not None:
            stream.attach(stream_sync(self, req, begin, stream))
        else:
            stream.attach(self._stream_chunks(self._core.start(req), stream))
        return stream.start()

    def spend_report(self, *, period: str = "day", by: By | None = None,
                     since: dt.datetime | None = None, until: dt.datetime | None = None,
                     tenant: str | None = None) -> str:
        """The spend this router's store recorded, as text tables (see `spend_report`): per
        `period` overall, per tenant and per deployment, or only the `by` one.

            print(router.spend_report(period="day", by="tenant"))
        """
        entries = self._store.ledger(since=since, until=until, tenant=tenant)
        return spend_report(entries, period=period, by=by)

    def close(self) -> None:
        """Close every connection, and the spend store if the router opened it from a config
        file. The router cannot be used afterwards."""
        self._closed = True
        deadline = time.monotonic() + _CLOSE_WAIT_S
        for thread in list(self.hedge_threads):
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        for t in self._transports.values():
            t.close()
        self._transports.clear()
        if self._transport is not None:
            self._transport.close()
        self._close_owned_store()

    def __enter__(self) -> Router:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- performing the flow's actions ---------------------------------------------------------

    def _drive(self, flow: Flow[T]) -> T:
        reply: Any = None
        error: BaseException | None = None
        while True:
            try:
                action = flow.send(reply) if error is None else flow.throw(error)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            reply, error = None, None
            try:
                reply = self.perform(action)
            except BaseException as exc:  # handed to the flow, which frees what it holds
                error = exc

    def perform(self, action: act.Action) -> Any:
        """Carry out one action of the flow and return what the flow asked for."""
        match action:
            case act.Send():
                # The slot is ours from here until the reply is read or the send fails.
                hold = self._core.fleet.acquire(action.deployment, urgent=action.urgent,
                                                limit=action.timeout)
                try:
                    return self._transport_for(action.provider).send(
                        action.wire, timeout=action.timeout,
                        connect_timeout=action.connect_timeout)
                finally:
                    hold.release()
            case act.Reserve():
                return self._store.reserve(action.keys, action.amount_nano, action.ttl_s)
            case act.Book():
                if action.reservation is None:
                    self._store.record(action.keys, action.cost_nano, action.entry)
                else:
                    self._store.settle(action.reservation, action.cost_nano, action.entry)
            case act.Release():
                self._store.release(action.reservation)
            case act.Sleep():
                self._core.clock.sleep(action.seconds)
            case act.StartStream():
                return self._first_chunk(action.attempt, action.first_token_s)
            case act.Drain():
                return self._drain(action.attempt)
            case act.StartHedge():
                return race(self, action)
        return None

    def _transport_for(self, provider: str) -> SyncTransport:
        if self._transport is not None:
            return self._transport
        t = self._transports.get(provider)
        if t is None:
            from .._transports.httpx_transport import HttpxTransport

            t = self._transports[provider] = HttpxTransport()
        return t

    # -- streams ------------------------------------------------------------------------------

    def _stream_chunks(self, run: RequestRun,
                       stream: Stream) -> Generator[StreamChunk | Completion, None, None]:
        """Chunks from the first deployment that starts streaming, then the final `Completion`.
        Falls back only while nothing has reached the caller."""
        attempt, first = self._drive(stream_flow(run, self._hedge))
        stream.attempt = attempt
        chunks: Generator[StreamChunk, None, None] = attempt.chunks
        try:
            yield first
            yield from chunks
        finally:
            chunks.close()
        assert attempt.completion is not None
        yield attempt.completion

    def _first_chunk(self, attempt: StreamAttempt, first_token_s: float | None) -> StreamChunk:
        attempt.chunks = chunks = self.pump(attempt)
        if first_token_s is not None:
            return pull_sync(self, attempt, first_token_s)
        return next(chunks)

    def _drain(self, attempt: StreamAttempt) -> Completion | None:
        chunks: Generator[StreamChunk, None, None] = attempt.chunks
        run = attempt.run
        try:
            # A newer request of its session: stop reading, and close the connection (below;
            # the attempt books what was produced).
            if not run.superseded:
                for _chunk in chunks:
                    if run.superseded:
                        break
        except StreamInterruptedError:
            return None  # booked; nothing reached the caller yet, so the flow falls back
        finally:
            chunks.close()
        return attempt.completion

    def pump(self, attempt: StreamAttempt) -> Generator[StreamChunk, None, None]:
        """Run one streaming attempt: perform what `attempt.pump()` asks, yield its chunks."""
        flow = attempt.pump()
        handle: StreamHandle | None = None
        hold: Hold | None = None  # the deployment's slot, from Open to the stream's end
        batches: Iterator[list[bytes]] = iter(())
        reply: Any = None
        error: BaseException | None = None
        emit = act.Emit
        try:
            while True:
                try:
                    action = flow.send(reply) if error is None else flow.throw(error)
                except StopIteration:
                    return
                reply, error = None, None
                try:
                    if type(action) is list:  # the hot path: pass these on, then read on
                        for i, chunk in enumerate(action):
                            try:
                                yield chunk
                            except BaseException:
                                attempt.withdraw(len(action) - i - 1)
                                raise
                        # (Every read runs under the stream's deadline in the transport.)
                        reply = next(batches, None)
                        continue
                    if type(action) is emit:
                        yield action.chunk
                        continue
                    match action:
                        case act.Open():
                            hold = self._core.fleet.acquire(
                                action.deployment, urgent=action.urgent, limit=action.timeout)
                            handle = self._open(attempt, action)
                            reply = handle.status, handle.headers
                            batches = line_batches(handle)
                        case act.Book() | act.Release():
                            self.perform(action)
                        case _:  # READ_BODY
                            assert handle is not None
                            reply = handle.read()
                except BaseException as exc:  # incl. GeneratorExit: the attempt books itself
                    error = exc
        finally:
            try:
                if handle is not None:
                    handle.close()
            finally:
                if hold is not None:
                    hold.release()

    def _open(self, attempt: StreamAttempt, action: act.Open) -> StreamHandle:
        handle = self._transport_for(action.provider).open(
            action.wire, timeout=action.timeout, connect_timeout=action.connect_timeout,
            total_timeout=action.total_timeout)
        attempt.handle = handle
        if attempt.lost_hedge or attempt.settled:
            # It lost a hedge, or its first-token deadline passed, while connecting: read
            # nothing more.
            handle.close()
            raise ProviderTransportError(LOST_HEDGE if attempt.lost_hedge else
                                         "cancelled while waiting for the reply")
        return handle
