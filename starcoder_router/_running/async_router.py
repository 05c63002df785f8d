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
import contextlib
import os
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any, Literal

from .._clock import Clock
from .._config import ProviderSettings
from .._errors import (
    BudgetExceededError,
    ConfigError,
    ProviderError,
    StreamInterruptedError,
)
from .._providers.base import Provider
from .._providers.call import Call, ProviderResult
from .._routing.catalog import Catalog
from .._routing.decision import Candidate
from .._routing.health import HealthPolicy
from .._routing.policy import CostPolicy
from .._routing.request import CompletionRequest, build_request
from .._routing.tokens import TokenCounter
from .._stores.base import AsyncSpendStore, Reservation, SpendStore
from .async_attempt import AsyncStreamSession, Leg
from .base_router import BaseRouter
from .hooks import Hooks
from .offload import count_off_loop
from .results import Completion, StreamChunk
from .retry import HedgePolicy, RetryPolicy
from .run import RequestRun
from .streams import AsyncStream
from .support import (
    REQUEUE,
    RequestFields,
    Requeue,
    note_statuses,
    store_error,
    with_context,
)

if TYPE_CHECKING:
    from typing import Unpack

    from .._transports.base import AsyncTransport

__all__ = ["AsyncRouter"]


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
    ):
        super().__init__(catalog=catalog, policy=policy, providers=providers,
                         tokenizer=tokenizer, store=store, retry=retry, health=health,
                         hooks=hooks, hedge=hedge, clock=clock, env=env)
        if not isinstance(self._store, AsyncSpendStore):
            raise ConfigError(f"{type(self._store).__name__} has no async methods (areserve...)")
        self._astore: AsyncSpendStore = self._store
        if transport not in ("aiohttp", "httpx") and isinstance(transport, str):
            raise ConfigError(f"unknown transport {transport!r}; use 'aiohttp' or 'httpx'")
        self._transport_kind = transport
        self._transports: dict[str, AsyncTransport] = {}
        self._counting = asyncio.Semaphore(1)  # one count off the loop at a time: see offload

    # -- the API --------------------------------------------------------------------------------

    async def complete(self, request: CompletionRequest | None = None, /,
                       **fields: Unpack[RequestFields]) -> Completion:
        """Route and run a request; returns the costed completion."""
        req = build_request(request, fields)
        if req.stream:
            req = req.model_copy(update={"stream": False})
        await count_off_loop(self._core.counter, req, self._counting)
        run = self._start(req)
        plan = run.hedge_plan(self._hedge)
        if plan is not None:
            won = await self._race(run, *plan, stream=True)
            if won is not None:
                session, chunks, _ = won
                try:
                    async for _chunk in chunks:
                        pass
                except StreamInterruptedError:
                    pass  # booked; nothing reached the caller yet, so fall back below
                else:
                    assert session.completion is not None
                    return session.completion
                finally:
                    await chunks.aclose()
        while (cand := run.next_candidate()) is not None:
            outcome = await self._run_candidate(run, cand)
            if isinstance(outcome, Completion):
                return outcome
        raise run.exhausted()

    def stream(self, request: CompletionRequest | None = None, /,
               **fields: Unpack[RequestFields]) -> AsyncStream:
        """Route and stream a request: `async with router.stream(...) as s: async for chunk in s`.
        Routing errors raise here; provider errors raise while iterating."""
        if request is None:
            fields["stream"] = True  # set before validation: cheaper than copying after
        req = build_request(request, fields)
        if not req.stream:
            req = req.model_copy(update={"stream": True})
        run = self._start(req)
        return AsyncStream(self._stream_chunks(run))

    async def close(self) -> None:
        for t in self._transports.values():
            await t.aclose()
        self._transports.clear()

    aclose = close

    async def __aenter__(self) -> AsyncRouter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- internals ------------------------------------------------------------------------------

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

    async def _reserve(self, run: RequestRun, cand: Candidate) -> Reservation | Requeue | None:
        if not run.budget_keys:
            return None
        try:
            res = await self._astore.areserve(run.budget_keys, run.reserve_amount(cand),
                                              run.reservation_ttl())
        except BudgetExceededError as err:
            if run.budget_exhausted(cand, err):
                return REQUEUE
            run.failed_before_call(err)
            raise
        except Exception as exc:
            raise store_error("reserve", exc) from exc
        note_statuses(self._soft, res)
        return res

    async def _settle(self, run: RequestRun, res: Reservation | None, cand: Candidate, cost: int,
                      usage: Any, outcome: str, provider_request_id: str | None = None) -> None:
        entry = run.ledger_entry(cand, cost, usage, outcome, provider_request_id)
        try:
            if res is None:
                await self._astore.arecord(run.budget_keys, cost, entry)
            else:
                await self._astore.asettle(res, cost, entry)
        except Exception as exc:
            raise store_error("record the spend of", exc, entry) from exc

    async def _release(self, res: Reservation | None) -> None:
        if res is not None:
            try:
                await self._astore.arelease(res)
            except Exception as exc:
                raise store_error("release", exc) from exc

    async def _send(self, provider: Provider, call: Call, timeout: float) -> ProviderResult:
        wire = provider.build(call)
        transport = self._transport_for(call.deployment.provider)
        try:
            resp = await transport.asend(wire, timeout=timeout,
                                         connect_timeout=call.endpoint.connect_timeout)
            if resp.status >= 400:
                raise provider.error(call, resp)
            return provider.parse(call, resp)
        except ProviderError as exc:
            if exc.deployment:
                raise
            raise with_context(exc, call) from exc

    async def _admit(self, run: RequestRun, cand: Candidate) -> Reservation | Requeue | None:
        """Wait while `cand` cools down (if the deadline allows), then hold its budget.
        `Requeue` means: move on (too long a wait, or the budget policy chose other
        deployments)."""
        while (wait := run.cooling_wait(cand)) != 0.0:
            if wait is None:
                return REQUEUE
            await self._core.clock.asleep(wait)
        res = await self._reserve(run, cand)
        if isinstance(res, Requeue):
            self._core.health.release_probe(cand.deployment.name)
        return res

    async def _back_off(self, run: RequestRun, cand: Candidate, err: ProviderError,
                  res: Reservation | None, retry_no: int, started: float) -> bool:
        """After a failed attempt: free its budget, book it, and wait if it is worth trying
        the same deployment again (True) rather than moving on (False)."""
        await self._release(res)
        step = run.failed(cand, err, retry_no, started)
        if step.wait is None:
            return False
        await self._core.clock.asleep(step.wait)
        return True

    async def _run_candidate(self, run: RequestRun, cand: Candidate) -> Completion | None:
        """Try one deployment, with its retries. A completion, or None to move on."""
        clock = self._core.clock
        retry_no = 0
        while not isinstance(res := await self._admit(run, cand), Requeue):
            provider, call = run.call_for(cand)
            started = clock.now()
            try:
                result = await self._send(provider, call, run.timeout_for(call))
            except ProviderError as err:
                if not await self._back_off(run, cand, err, res, retry_no, started):
                    return None
                retry_no += 1
                continue
            completion, problem = run.succeeded(cand, result, started, None, retry_no)
            await self._settle(run, res, cand, completion.cost_nano, completion.usage,
                               "ok" if problem is None else "error", completion.request_id)
            if problem is None:
                return completion
            run.structured_error(completion, problem)
            return None
        return None

    async def _stream_chunks(self, run: RequestRun) -> AsyncIterator[StreamChunk | Completion]:
        """Chunks from the first deployment that starts streaming, then the final `Completion`
        (the stream keeps it). Falls back only while nothing has reached the caller."""
        session, chunks, first = await self._start_streaming(run)
        try:
            yield first
            async for chunk in chunks:
                yield chunk
        finally:
            # An async generator does not close the one it iterates: do it, so that an early
            # exit by the caller reaches the attempt and books its spend.
            await chunks.aclose()
        assert session.completion is not None
        yield session.completion

    async def _start_streaming(
        self, run: RequestRun,
    ) -> tuple[AsyncStreamSession, AsyncGenerator[StreamChunk, None], StreamChunk]:
        """The first attempt to produce a chunk (hedged, when the request hedges); the
        failures before it are retried and fallen back from."""
        plan = run.hedge_plan(self._hedge)
        if plan is not None:
            won = await self._race(run, *plan)
            if won is not None:
                return won
        while (cand := run.next_candidate()) is not None:
            started = await self._first_chunk_from(run, cand)
            if started is not None:
                return started
        raise run.exhausted()

    async def _first_chunk_from(
        self, run: RequestRun, cand: Candidate,
    ) -> tuple[AsyncStreamSession, AsyncGenerator[StreamChunk, None], StreamChunk] | None:
        """Open a stream on one deployment, with its retries, up to its first chunk."""
        clock = self._core.clock
        retry_no = 0
        while not isinstance(res := await self._admit(run, cand), Requeue):
            provider, call = run.call_for(cand)
            session = AsyncStreamSession(self, run, cand, provider, call, res, clock.now(),
                                          retry_no)
            chunks = session.chunks()
            try:
                return session, chunks, await chunks.__anext__()
            except ProviderError as err:
                await chunks.aclose()
                if not await self._back_off(run, cand, err, res, retry_no, session.started):
                    return None
                retry_no += 1
        return None

    async def _race(
        self, run: RequestRun, first: Candidate, second: Candidate, after: float, *,
        stream: bool | None = None,
    ) -> tuple[AsyncStreamSession, AsyncGenerator[StreamChunk, None], StreamChunk] | None:
        """Hedge: start `first`; if it has no first token after `after` seconds, start `second`
        too. The first leg to produce output wins; the other is cancelled (and books what it
        cost). Returns the winner's session, its remaining chunks and its first chunk, or None
        if both failed before any output (their failures are recorded; the caller falls back).
        """
        legs: dict[asyncio.Future[StreamChunk], Leg] = {}
        await self._start_leg(run, first, stream, legs)
        done: set[asyncio.Future[StreamChunk]] = set()
        if legs:
            done, _ = await asyncio.wait(list(legs), timeout=after)
        if done and all(t.exception() is None for t in done):
            run.queue.appendleft(second)  # not needed now; still a fallback
        else:
            await self._start_leg(run, second, stream, legs)  # first is slow, or failed early
        try:
            return await self._first_output(run, legs)
        finally:
            for task, leg in legs.items():
                task.cancel()  # the leg books itself as cancelled, with what it cost
                with contextlib.suppress(BaseException):
                    await task
                await leg.chunks.aclose()

    async def _start_leg(self, run: RequestRun, cand: Candidate, stream: bool | None,
                         legs: dict[asyncio.Future[StreamChunk], Leg]) -> None:
        res = await self._reserve(run, cand)
        if isinstance(res, Requeue):
            return
        provider, call = run.call_for(cand, stream=stream)
        session = AsyncStreamSession(self, run, cand, provider, call, res,
                                      self._core.clock.now(), 0)
        chunks = session.chunks()
        legs[asyncio.ensure_future(chunks.__anext__())] = Leg(cand, res, session, chunks)

    async def _first_output(
        self, run: RequestRun, legs: dict[asyncio.Future[StreamChunk], Leg],
    ) -> tuple[AsyncStreamSession, AsyncGenerator[StreamChunk, None], StreamChunk] | None:
        """Wait for the first leg that produces a chunk; book the ones that fail first."""
        while legs:
            done, _ = await asyncio.wait(list(legs), return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                leg = legs.pop(task)
                exc = task.exception()
                if exc is None:
                    return leg.session, leg.chunks, task.result()
                await leg.chunks.aclose()
                if not isinstance(exc, ProviderError):
                    raise exc
                await self._release(leg.res)
                run.failed(leg.cand, exc, 0, leg.session.started)
        return None
