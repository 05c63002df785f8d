"""The aiohttp transport: the async default, because it costs several times less CPU per request
than httpx's async pool at high concurrency (figures in BENCHMARKS.md)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Mapping

import aiohttp

from .._errors import ProviderConnectionError, ProviderTimeoutError, ProviderTransportError
from .base import LineSplitter, WireRequest, WireResponse, lines_of

__all__ = ["AiohttpTransport"]


def _mapped(exc: BaseException) -> ProviderTransportError:
    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return ProviderTimeoutError(f"timed out: {type(exc).__name__}")
    return ProviderConnectionError(f"connection failed: {type(exc).__name__}: {exc}")


_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError)


class AiohttpTransport:
    """One pooled, keep-alive `aiohttp.ClientSession`, created in the running loop on first use
    (a session belongs to one event loop; a new loop gets a new session)."""

    def __init__(self, *, limit: int = 256):
        self._limit = limit
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._loop is not loop or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._limit, limit_per_host=0,
                                             keepalive_timeout=30, enable_cleanup_closed=False)
            # auto_decompress stays on; no cookie jar: API calls carry no cookies.
            self._session = aiohttp.ClientSession(connector=connector,
                                                  cookie_jar=aiohttp.DummyCookieJar(),
                                                  skip_auto_headers=("User-Agent",))
            self._loop = loop
        return self._session

    async def asend(self, request: WireRequest, *, timeout: float,
                    connect_timeout: float) -> WireResponse:
        session = self._get_session()
        try:
            async with session.request(request.method, request.url, headers=request.headers,
                                       data=request.body,
                                       timeout=_total(timeout, connect_timeout)) as resp:
                body = await resp.read()
                return WireResponse(resp.status, _lower(resp.headers), body)
        except _ERRORS as exc:
            raise _mapped(exc) from exc

    async def aopen(self, request: WireRequest, *, timeout: float, connect_timeout: float,
                    total_timeout: float | None = None) -> _AiohttpStream:
        session = self._get_session()
        # For a stream, `timeout` bounds the wait for the headers and then between chunks;
        # `total_timeout` the whole stream.
        first = min(timeout, total_timeout or timeout)
        t = aiohttp.ClientTimeout(total=None, connect=min(connect_timeout, first),
                                  sock_read=timeout)
        loop = asyncio.get_running_loop()
        until = loop.time() + total_timeout if total_timeout is not None else None
        try:
            async with asyncio.timeout(first):
                resp = await session.request(request.method, request.url,
                                             headers=request.headers, data=request.body,
                                             timeout=t)
        except _ERRORS as exc:
            raise _mapped(exc) from exc
        return _AiohttpStream(resp, until)

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            # The session's loop may be gone (closed between tests): nothing left to close then.
            with contextlib.suppress(RuntimeError):
                await self._session.close()
        self._session = None


def _total(total: float, connect: float) -> aiohttp.ClientTimeout:
    """A fresh timeout per call: it costs well under a microsecond, while a cache keyed on the
    remaining time (different on every call) grew without bound."""
    return aiohttp.ClientTimeout(total=total, connect=min(connect, total))


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


class _AiohttpStream:
    __slots__ = ("_expired", "_resp", "_until", "headers", "status")

    def __init__(self, resp: aiohttp.ClientResponse, until: float | None = None):
        self._resp = resp
        self._until = until  # event-loop time
        self._expired = False
        self.status = resp.status
        self.headers: Mapping[str, str] = _lower(resp.headers)

    def _expire(self) -> None:
        self._expired = True
        self._resp.close()  # wakes the pending read with a connection error

    def alines(self) -> AsyncIterator[bytes]:
        return lines_of(self.abatches())

    async def abatches(self) -> AsyncGenerator[list[bytes], None]:
        """The complete lines of each HTTP chunk as it arrived (see `aline_batches`)."""
        splitter = LineSplitter()
        feed = splitter.feed
        content = self._resp.content
        # One timer for the whole stream, not a timeout per chunk (that costs a timer handle
        # scheduled and cancelled for every chunk): when the deadline passes, the connection is
        # closed under the pending read.
        watchdog = (asyncio.get_running_loop().call_at(self._until, self._expire)
                    if self._until is not None else None)
        try:
            while True:
                # One HTTP chunk at a time, as it arrived: `iter_any` would first gather
                # everything already buffered, delaying the first event behind the others.
                chunk, chunk_end = await content.readchunk()
                if not chunk:
                    if not chunk_end:
                        break  # (b"", False) is the end of the body
                    continue
                yield feed(chunk)
        except _ERRORS as exc:
            if self._expired:
                raise ProviderTimeoutError("the stream's deadline passed") from exc
            raise _mapped(exc) from exc
        finally:
            if watchdog is not None:
                watchdog.cancel()
        if self._expired:
            raise ProviderTimeoutError("the stream's deadline passed")
        tail = splitter.flush()
        if tail:
            yield tail

    async def aread(self) -> bytes:
        try:
            async with asyncio.timeout_at(self._until):
                return await self._resp.read()
        except _ERRORS as exc:
            raise _mapped(exc) from exc

    async def aclose(self) -> None:
        self._resp.close()
