"""One streaming attempt of `AsyncRouter`, and one leg of a hedged request (async).

The session moves bytes; `StreamProgress` keeps the books.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, NamedTuple

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
    from .._stores.base import Reservation
    from .._transports.base import AsyncStreamHandle
    from .async_router import AsyncRouter

__all__ = ["AsyncStreamSession", "Leg"]


class Leg(NamedTuple):
    cand: Candidate
    res: Reservation | None
    session: AsyncStreamSession
    chunks: AsyncGenerator[StreamChunk, None]


class AsyncStreamSession:
    """One streaming attempt (async): moves the bytes; `StreamProgress` keeps the books."""

    def __init__(self, router: AsyncRouter, run: RequestRun, cand: Candidate, provider: Provider,
                 call: Call, res: Reservation | None, started: float, retry_no: int):
        self.router = router
        self.provider = provider
        self.call = call
        self.res = res
        self.progress = StreamProgress(run, cand, provider, call, started, retry_no)

    @property
    def delivered(self) -> int:
        return self.progress.delivered

    @property
    def completion(self) -> Completion | None:
        return self.progress.completion

    @property
    def started(self) -> float:
        return self.progress.started

    async def _book(self, booking: Booking) -> None:
        prog = self.progress
        await self.router._settle(prog.run, self.res, prog.cand, booking.cost, booking.usage,
                                  booking.outcome, booking.provider_request_id)

    async def _open(self) -> AsyncStreamHandle:
        call, prog = self.call, self.progress
        transport = self.router._transport_for(call.deployment.provider)
        try:
            return await transport.aopen(self.provider.build(call),
                                         timeout=prog.run.timeout_for(call),
                                         connect_timeout=call.endpoint.connect_timeout)
        except ProviderTransportError as exc:
            raise with_context(exc, call) from exc
        except asyncio.CancelledError:
            # Cancelled while the request was in flight (e.g. it lost a hedge): the provider
            # has the prompt, so book it.
            prog.settled = True
            await self._book(prog.cancelled())
            raise

    async def chunks(self) -> AsyncGenerator[StreamChunk, None]:
        handle = await self._open()
        prog = self.progress
        try:
            if handle.status >= 400:
                raise self.provider.error(self.call, WireResponse(handle.status, handle.headers,
                                                                  await handle.aread()))
            async for line in handle.alines():
                chunk = prog.feed(line)
                if isinstance(chunk, StreamChunk):
                    yield chunk
                elif chunk is END:
                    break
            booking, last, problem = prog.finish()
            prog.settled = True
            await self._book(booking)
            yield last
            if problem is not None:
                raise prog.structured_error(problem)
        except ProviderError as err:
            if not prog.delivered or prog.settled:
                raise
            prog.settled = True
            booking, error = prog.interrupted(err)
            await self._book(booking)
            raise error from err
        except (GeneratorExit, asyncio.CancelledError):
            # The caller closed the stream early, or its task was cancelled.
            if not prog.settled:
                prog.settled = True
                await self._book(prog.cancelled())
            raise
        finally:
            await handle.aclose()
