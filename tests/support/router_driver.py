"""One test body, run through `Router` and through `AsyncRouter`.

The `drive` fixture (tests/conftest.py) gives each test a `Driver` in one mode; the test is
written once, always awaiting, and runs in every mode::

    async def test_falls_back(drive: Driver) -> None:
        router = drive.new_router(catalog=catalog, env={})
        completion = await drive.complete(router, prompt="def f():")
        chunks, completion = await drive.stream(router, prompt="def f():")
        async with drive.open_stream(router, prompt="def f():") as s:
            first = await anext(s)

In sync mode the calls are the sync API, made directly (the event loop only waits); in async
mode they are the async API. Mode "async" is `AsyncRouter` on the httpx transport, which respx
intercepts; against real loopback servers "async-httpx" and "async-aiohttp" name the transport.
Every router a driver built is closed at teardown. A folder or module that needs other modes
declares its own fixture: `drive = drive_fixture(*LOOPBACK_MODES)`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Any, TypeVar

import pytest

from starcoder_router import AsyncRouter, AsyncStream, Completion, Router, Stream, StreamChunk

MODES = ("sync", "async")
# Against real servers on loopback, where both async transports can run.
LOOPBACK_MODES = ("sync", "async-httpx", "async-aiohttp")

# A test's router factory: `make(...)` builds a router in the test's mode.
Make = Callable[..., Router | AsyncRouter]

T = TypeVar("T")


class Driver:
    """Builds routers for one mode and calls them the same way in every mode."""

    def __init__(self, mode: str):
        if mode not in MODES + LOOPBACK_MODES:
            raise ValueError(f"unknown mode {mode!r}")
        self.mode = mode
        self.transport = mode.removeprefix("async-") if mode.startswith("async-") else "httpx"
        self._routers: list[Router | AsyncRouter] = []

    @property
    def is_async(self) -> bool:
        return self.mode != "sync"

    def new_router(self, **kwargs: Any) -> Router | AsyncRouter:
        """`Router(**kwargs)` or `AsyncRouter(**kwargs)`, closed when the test ends."""
        router: Router | AsyncRouter = (
            AsyncRouter(transport=self.transport, **kwargs) if self.is_async
            else Router(**kwargs)
        )
        self._routers.append(router)
        return router

    async def complete(self, router: Router | AsyncRouter, **fields: Any) -> Completion:
        if isinstance(router, AsyncRouter):
            return await router.complete(**fields)
        return router.complete(**fields)

    def open_stream(self, router: Router | AsyncRouter, **fields: Any) -> DrivenStream:
        """`router.stream(**fields)`, to be entered with `async with` and read with
        `async for` (or `anext`); the request starts when the block is entered."""
        return DrivenStream(lambda: router.stream(**fields))

    async def stream(self, router: Router | AsyncRouter,
                     **fields: Any) -> tuple[list[StreamChunk], Completion]:
        """All chunks of a stream and its final completion."""
        async with self.open_stream(router, **fields) as s:
            chunks = [chunk async for chunk in s]
        assert s.completion is not None
        return chunks, s.completion

    async def blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """Call a blocking helper. In async mode it runs in a thread, so the event loop goes on
        serving the router's connections meanwhile (closing a cancelled stream, say)."""
        if self.is_async:
            return await asyncio.to_thread(fn, *args)
        return fn(*args)

    async def close(self, router: Router | AsyncRouter) -> None:
        """Close `router` now (closing it again at teardown is harmless)."""
        if isinstance(router, AsyncRouter):
            await router.aclose()
        else:
            router.close()

    async def aclose(self) -> None:
        for router in self._routers:
            await self.close(router)
        self._routers.clear()


def drive_fixture(*modes: str, driver: type[Driver] = Driver) -> Any:
    """A `drive` fixture that runs each test once per mode, closing its routers afterwards;
    `@pytest.mark.parametrize("drive", [...], indirect=True)` narrows a test to some modes."""

    @pytest.fixture(params=modes)
    async def drive(request: pytest.FixtureRequest) -> AsyncIterator[Driver]:
        instance = driver(request.param)
        yield instance
        await instance.aclose()

    return drive


class DrivenStream:
    """A sync `Stream` or an `AsyncStream`, read through the async protocol."""

    def __init__(self, start: Callable[[], Stream | AsyncStream]):
        self._start = start
        self._stream: Stream | AsyncStream | None = None

    @property
    def completion(self) -> Completion | None:
        """The costed completion once the last chunk was read, else None."""
        return self.stream.completion

    @property
    def text(self) -> str:
        return self.stream.text

    @property
    def stream(self) -> Stream | AsyncStream:
        """What `router.stream()` returned."""
        assert self._stream is not None, "enter the stream with `async with` first"
        return self._stream

    async def __aenter__(self) -> DrivenStream:
        stream = self._start()
        self._stream = await stream.__aenter__() if isinstance(stream, AsyncStream) \
            else stream.__enter__()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        stream = self.stream
        if isinstance(stream, AsyncStream):
            await stream.__aexit__(exc_type, exc, tb)
        else:
            stream.__exit__(exc_type, exc, tb)

    def __aiter__(self) -> DrivenStream:
        return self

    async def __anext__(self) -> StreamChunk:
        stream = self.stream
        if isinstance(stream, AsyncStream):
            return await stream.__anext__()
        try:
            return next(stream)
        except StopIteration:
            raise StopAsyncIteration from None
