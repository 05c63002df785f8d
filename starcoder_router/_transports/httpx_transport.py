"""httpx transports: the sync default, and an async one that respx can intercept in tests."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Iterator, Mapping

import httpx

from .._errors import ProviderConnectionError, ProviderTimeoutError, ProviderTransportError
from .base import LineSplitter, WireRequest, WireResponse, split_lines

__all__ = ["HttpxAsyncTransport", "HttpxTransport"]

_LIMITS = httpx.Limits(max_connections=256, max_keepalive_connections=256, keepalive_expiry=30)


@functools.lru_cache(maxsize=64)
def _timeout(total: float, connect: float) -> httpx.Timeout:
    return httpx.Timeout(total, connect=min(connect, total))


@functools.lru_cache(maxsize=256)
def _url(url: str) -> httpx.URL:
    return httpx.URL(url)


def _request(request: WireRequest, timeout: float, connect: float) -> httpx.Request:
    """The httpx request, built directly: the client's merging of base URL, default headers,
    cookies and params (which we never use) costs more than the rest of our request path, and
    parsing the same few URLs again on every call is wasted work."""
    return httpx.Request(request.method, _url(request.url), headers=request.headers,
                         content=request.body,
                         extensions={"timeout": _timeout(timeout, connect).as_dict()})


def _mapped(exc: httpx.HTTPError) -> ProviderTransportError:
    if isinstance(exc, httpx.TimeoutException):
        return ProviderTimeoutError(f"timed out: {type(exc).__name__}")
    return ProviderConnectionError(f"connection failed: {type(exc).__name__}: {exc}")


class HttpxTransport:
    """One pooled, keep-alive `httpx.Client`."""

    def __init__(self, client: httpx.Client | None = None):
        self._client = client or httpx.Client(limits=_LIMITS, http2=False)

    def send(self, request: WireRequest, *, timeout: float, connect_timeout: float) -> WireResponse:
        try:
            resp = self._client.send(_request(request, timeout, connect_timeout))
        except httpx.HTTPError as exc:
            raise _mapped(exc) from exc
        return WireResponse(resp.status_code, resp.headers, resp.content)

    def open(self, request: WireRequest, *, timeout: float,
             connect_timeout: float) -> _HttpxStream:
        req = _request(request, timeout, connect_timeout)
        try:
            resp = self._client.send(req, stream=True)
        except httpx.HTTPError as exc:
            raise _mapped(exc) from exc
        return _HttpxStream(resp)

    def close(self) -> None:
        self._client.close()


class _HttpxStream:
    __slots__ = ("_resp", "headers", "status")

    def __init__(self, resp: httpx.Response):
        self._resp = resp
        self.status = resp.status_code
        self.headers: Mapping[str, str] = resp.headers

    def lines(self) -> Iterator[bytes]:
        try:
            yield from split_lines(self._resp.iter_raw())
        except httpx.HTTPError as exc:
            raise _mapped(exc) from exc

    def read(self) -> bytes:
        try:
            return self._resp.read()
        except httpx.HTTPError as exc:
            raise _mapped(exc) from exc

    def close(self) -> None:
        self._resp.close()


class HttpxAsyncTransport:
    """One pooled `httpx.AsyncClient`. Slower than aiohttp under concurrency (see BENCHMARKS.md);
    the choice when tests mock the network with respx."""

    def __init__(self, client: httpx.AsyncClient | None = None):
        self._client = client or httpx.AsyncClient(limits=_LIMITS, http2=False)

    async def asend(self, request: WireRequest, *, timeout: float,
                    connect_timeout: float) -> WireResponse:
        try:
            resp = await self._client.send(_request(request, timeout, connect_timeout))
        except httpx.HTTPError as exc:
            raise _mapped(exc) from exc
        return WireResponse(resp.status_code, resp.headers, resp.content)

    async def aopen(self, request: WireRequest, *, timeout: float,
                    connect_timeout: float) -> _HttpxAsyncStream:
        req = _request(request, timeout, connect_timeout)
        try:
            resp = await self._client.send(req, stream=True)
        except httpx.HTTPError as exc:
            raise _mapped(exc) from exc
        return _HttpxAsyncStream(resp)

    async def aclose(self) -> None:
        await self._client.aclose()


class _HttpxAsyncStream:
    __slots__ = ("_resp", "headers", "status")

    def __init__(self, resp: httpx.Response):
        self._resp = resp
        self.status = resp.status_code
        self.headers: Mapping[str, str] = resp.headers

    async def alines(self) -> AsyncIterator[bytes]:
        splitter = LineSplitter()
        try:
            async for chunk in self._resp.aiter_raw():
                for line in splitter.feed(chunk):
                    yield line
        except httpx.HTTPError as exc:
            raise _mapped(exc) from exc
        for line in splitter.flush():
            yield line

    async def aread(self) -> bytes:
        try:
            return await self._resp.aread()
        except httpx.HTTPError as exc:
            raise _mapped(exc) from exc

    async def aclose(self) -> None:
        await self._resp.aclose()
