"""`AsyncRouter`: the asynchronous twin of `Router`, over the same core.

Example::

    async with AsyncRouter() as router:
        completion = await router.complete(prompt="def fib(n):", max_tokens=64)
        async with router.stream(prefix="def add(a, b):\\n    ", suffix="\\n") as stream:
            async for chunk in stream:
                print(chunk.text, end="")
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

from .._errors import ConfigError, StreamInterruptedError
from .._stores.base import AsyncSpendStore
from .._stores.inline import InlineAsync
from .._stores.report import By, spend_report
from .._transports.base import aline_batches
from . import actions as act
from .async_hedge import race
from .base_router import BaseRouter
from .first_token import pull_async
from .flow import Flow, complete_flow, stream_flow
from .offload import count_off_loop, counts_off_loop
from .results import Completion, StreamChunk
from .sessions_run import complete_async, stream_async
from .streams import AsyncStream

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
    from .._transports.base import AsyncStreamHandle, AsyncTransport
    from .hooks import Hooks
    from .retry import HedgePolicy, RetryPolicy
    from .run import RequestRun
    from .stream_attempt import StreamAttempt

__all__ = ["AsyncRouter"]

# What AsyncRouter calls on its store. Looked up with getattr rather than an isinstance check
# against the Protocol: since Python 3.12 that check ignores methods a wrapper provides through
# __getattr__ (a proxy, a mock), so the same store would pass on 3.11 and be refused on 3.13.
_ASYNC_STORE_METHODS = ("areserve", "asettle", "arelease", "arecord", "astatus", "aclose")

T = TypeVar("T")


class AsyncRouter(BaseRouter):
    """Routes and runs StarCoder 2 requests on asyncio. Same methods and behaviour as `Router`.

    `transport="aiohttp"` (default) is the fast choice under concurrency; `"httpx"` uses
    `httpx.AsyncClient` (which respx can mock in tests); or pass any `AsyncTransport`.
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
        transport: AsyncTransport | Literal["aiohttp", "httpx"] = "aiohttp",
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
        missing = [name for name in _ASYNC_STORE_METHODS
                   if not callable(getattr(self._store, name, None))]
        if missing:
            raise ConfigError(f"{type(self._store).__name__} has no async methods "
                              f"({', '.join(missing)})")
        self._astore = cast(AsyncSpendStore, self._store)
        # A store whose async booking only calls its sync one (memory, SQLite): booked without
        # a coroutine per request. A subclass with its own `arecord`/`asettle` is awaited.
        kind = type(self._store)
        self._books_inline = (getattr(kind, "arecord", None) is InlineAsync.arecord
                              and getattr(kind, "asettle", None) is InlineAsync.asettle)
        if transport not in ("aiohttp", "httpx") and isinstance(transport, str):
            raise ConfigError(f"unknown transport {transport!r}; use 'aiohttp' or 'httpx'")
        self._transport_kind = transport
        self._transports: dict[str, AsyncTransport] = {}
        self._counting = asyncio.Semaphore(1)  # one count off the loop at a time: see offload

    # -- the API --------------------------------------------------------------------------------

    async def complete(self, request: CompletionRequest | None = None, /,
                       **fields: Unpack[RequestFields]) -> Completion:
        """Route and run a request; returns the costed completion."""
        req = self._request(request, fields, stream=False)
        begin = self._sessions.begin(req)
        if begin is not None:  # a session or the cache applies: see `sessions_run`
            return await complete_async(self, req, begin)
        if counts_off_loop(req):  # a large prompt: no coroutine to make for the others
            await count_off_loop(self._core.counter, req, self._counting)
        run = self._core.start(req)
        return await self._drive(complete_flow(run, self._hedge))

    def stream(self, request: CompletionRequest | None = None, /,
               **fields: Unpack[RequestFields]) -> AsyncStream:
        """Route and stream a request: `async with router.stream(...) as s: async for chunk in s`.
        Routing errors raise here, except for a large prompt, which is counted in a worker thread
        first (as `complete()` does) and routed when the block is entered; entering the block
        sends the request, so budget and provider errors before the first chunk raise from
        `async with` (or the first `anext`)."""
        req = self._request(request, fields, stream=True)
        stream = AsyncStream()
        begin = self._sessions.begin(req)
        if begin is not None:  # routed when the block is entered
            stream.attach(stream_async(self, req, begin, stream))
        elif counts_off_loop(req):
            stream.attach(self._counted_stream(req, stream))
        else:
            stream.attach(self._stream_chunks(self._core.start(req), stream))
        return stream

    async def _counted_stream(self, req: CompletionRequest,
                              stream: AsyncStream) -> AsyncGenerator[StreamChunk | Completion,
                                                                     None]:
        await count_off_loop(self._core.counter, req, self._counting)
        chunks = self._stream_chunks(self._core.start(req), stream)
        try:
            async for item in chunks:
                yield item
        finally:
            await chunks.aclose()

    async def spend_report(self, *, period: str = "day", by: By | None = None,
                           since: dt.datetime | None = None, until: dt.datetime | None = None,
                           tenant: str | None = None) -> str:
        """The spend this router's store recorded, as text tables (see `spend_report`).

            print(await router.spend_report(period="day", by="tenant"))
        """
        entries = await self._astore.aledger(since=since, until=until, tenant=tenant)
        return spend_report(entries, period=period, by=by)

    async def close(self) -> None:
        """Close every connection, and the spend store if the router opened it from a config
        file. The router cannot be used afterwards."""
        self._closed = True
        transports = list(self._transports.values())
        self._transports.clear()
        if not isinstance(self._transport_kind, str):
            transports.append(self._transport_kind)
        for t in transports:
            await t.aclose()
        self._close_owned_store()

    aclose = close

    async def __aenter__(self) -> AsyncRouter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- performing the flow's actions ---------------------------------------------------------

    async def _drive(self, flow: Flow[T]) -> T:
        reply: Any = None
        error: BaseException | None = None
        while True:
            try:
                action = flow.send(reply) if error is None else flow.throw(error)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            reply, error = None, None
            try:
                reply = await self.perform(action)
            except BaseException as exc:  # handed to the flow, which frees what it holds
                error = exc

    async def perform(self, action: act.Action) -> Any:
        """Carry out one action of the flow and return what the flow asked for."""
        if self._books_inline and type(action) is act.Book:
            if action.reservation is None:
                self._store.record(action.keys, action.cost_nano, action.entry)
            else:
                self._store.settle(action.reservation, action.cost_nano, action.entry)
            return None
        match action:
            case act.Send():
                # The slot is ours from here until the reply is read or the send fails.
                hold = await self._core.fleet.aacquire(action.deployment, urgent=action.urgent,
                                                       limit=action.timeout)
                try:
                    return await self._transport_for(action.provider).asend(
                        action.wire, timeout=action.timeout,
                        connect_timeout=action.connect_timeout)
                finally:
                    hold.release()
            case act.Reserve():
                return await self._astore.areserve(action.keys, action.amount_nano, action.ttl_s)
            case act.Book():
                if action.reservation is None:
                    await self._astore.arecord(action.keys, action.cost_nano, action.entry)
                else:
                    await self._astore.asettle(action.reservation, action.cost_nano,
                                               action.entry)
            case act.Release():
                await self._astore.arelease(action.reservation)
            case act.Sleep():
                await self._core.clock.asleep(action.seconds)
            case act.StartStream():
                return await self._first_chunk(action.attempt, action.first_token_s)
            case act.Drain():
                return await self._drain(action.attempt)
            case act.StartHedge():
                return await race(self, action)
        return None

    def _transport_for(self, provider: str) -> AsyncTransport:
        kind = self._transport_kind
        if not isinstance(kind, str):
            return kind
        t = self._transports.get(provider)
        if t is None:
            if kind == "aiohttp":
                from .._transports.aiohttp_transport import AiohttpTransport

                t = AiohttpTransport()
            else:
                from .._transports.httpx_transport import HttpxAsyncTransport

                t = HttpxAsyncTransport()
            self._transports[provider] = t
        return t

    # -- streams ------------------------------------------------------------------------------

    async def _stream_chunks(self, run: RequestRun,
                             stream: AsyncStream) -> AsyncGenerator[StreamChunk | Completion, None]:
        """Chunks from the first deployment that starts streaming, then the final `Completion`.
        Falls back only while nothing has reached the caller."""
        attempt, first = await self._drive(stream_flow(run, self._hedge))
        stream.attempt = attempt
        chunks: AsyncGenerator[StreamChunk, None] = attempt.chunks
        try:
            yield first
            async for chunk in chunks:
                yield chunk
        finally:
            # An async generator does not close the one it iterates: do it, so that an early
            # exit by the caller reaches the attempt and books its spend.
            await chunks.aclose()
        assert attempt.completion is not None
        yield attempt.completion

    async def _first_chunk(self, attempt: StreamAttempt,
                           first_token_s: float | None) -> StreamChunk:
        attempt.chunks = chunks = self.pump(attempt)
        if first_token_s is not None:
            return await pull_async(self, attempt, first_token_s)
        return await anext(chunks)

    async def _drain(self, attempt: StreamAttempt) -> Completion | None:
        chunks: AsyncGenerator[StreamChunk, None] = attempt.chunks
        try:
            async for _chunk in chunks:
                pass
        except StreamInterruptedError:
            return None  # booked; nothing reached the caller yet, so the flow falls back
        finally:
            await chunks.aclose()
        return attempt.completion

    async def pump(self, attempt: StreamAttempt) -> AsyncGenerator[StreamChunk, None]:
        """Run one streaming attempt: perform what `attempt.pump()` asks, yield its chunks."""
        flow = attempt.pump()
        handle: AsyncStreamHandle | None = None
        hold: Hold | None = None  # the deployment's slot, from Open to the stream's end
        batches: AsyncIterator[list[bytes]] | None = None
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
                        assert batches is not None
                        # (The transport bounds every read by the stream's deadline.)
                        try:
                            reply = await batches.__anext__()
                        except StopAsyncIteration:
                            reply = None
                        continue
                    if type(action) is emit:
                        yield action.chunk
                        continue
                    match action:
                        case act.Open():
                            hold = await self._core.fleet.aacquire(
                                action.deployment, urgent=action.urgent, limit=action.timeout)
                            handle = await self._transport_for(action.provider).aopen(
                                action.wire, timeout=action.timeout,
                                connect_timeout=action.connect_timeout,
                                total_timeout=action.total_timeout)
                            reply = handle.status, handle.headers
                            batches = aline_batches(handle)
                        case act.Book() | act.Release():
                            await self.perform(action)
                        case _:  # READ_BODY
                            assert handle is not None
                            reply = await handle.aread()
                except BaseException as exc:  # incl. GeneratorExit and CancelledError
                    error = exc
        finally:
            await _end_stream(batches, handle, hold)


async def _end_stream(batches: AsyncIterator[list[bytes]] | None,
                      handle: AsyncStreamHandle | None, hold: Hold | None) -> None:
    """Close what a streaming attempt opened, and free its deployment's slot."""
    try:
        if handle is not None:
            # An async generator is not closed by being dropped: close it, then the handle
            # (ours: its deadline timer goes with it).
            aclose = getattr(batches, "aclose", None)
            if aclose is not None:
                await aclose()
            await handle.aclose()
    finally:
        if hold is not None:
            hold.release()
