"""httpx transports: the sync default, and an async one that respx can intercept in tests.

`timeout` is a total for `send`: httpx's own timeouts bound each socket operation, so a server
that sends a byte just before every read timeout could hold a call for ever. Both transports run
their sockets through `_deadline.py`, which shortens every wait to what is left of the call's
time. For a stream, `timeout` bounds the time to the response headers and then the wait between
chunks, and `total_timeout` the whole stream.
"""

from __future__ import annotations

import contextlib
import functools
import socket
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping

import httpcore
import httpx

from .._errors import ProviderConnectionError, ProviderTimeoutError, ProviderTransportError
from ._deadline import AsyncDeadlineTransport, DeadlineTransport, deadline
from .base import LineSplitter, WireRequest, WireResponse, lines_of

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


def _left(until: float | None) -> float:
    """Seconds to `until` (monotonic), or for ever."""
    return until - time.monotonic() if until is not None else float("inf")


def _mapped(exc: httpx.HTTPError) -> ProviderTransportError:
    if isinstance(exc, httpx.TimeoutException):
        return ProviderTimeoutError(f"timed out: {type(exc).__name__}")
    return ProviderConnectionError(f"connection failed: {type(exc).__name__}: {exc}")


# httpcore's errors, as httpx maps them (httpx/_transports/default.py): a timeout of any kind,
# or a connection that failed or broke.
_CORE_TIMEOUTS = (httpcore.TimeoutException,)
_CORE_ERRORS = (httpcore.NetworkError, httpcore.ProtocolError, httpcore.ProxyError,
                httpcore.UnsupportedProtocol)


@functools.lru_cache(maxsize=256)
def _core_target(url: str) -> tuple[httpcore.URL, tuple[bytes, bytes]]:
    """The parsed URL and Host header of `url` (the same few URLs on every call)."""
    u = httpx.URL(url)
    host = u.netloc.decode("ascii")
    return httpcore.URL(scheme=u.raw_scheme, host=u.raw_host, port=u.port, target=u.raw_path), \
        (b"host", host.encode("ascii"))


def _core_mapped(exc: Exception) -> ProviderTransportError:
    if isinstance(exc, _CORE_TIMEOUTS):
        return ProviderTimeoutError(f"timed out: {type(exc).__name__}")
    return ProviderConnectionError(f"connection failed: {type(exc).__name__}: {exc}")


def _core_request(request: WireRequest, timeout: float, connect: float) -> httpcore.Request:
    """The request httpx would send for `httpx.Request(method, url, headers=..., content=body)`:
    the given headers, Host and Content-Length."""
    url, host = _core_target(request.url)
    body = request.body or b""
    headers = [host, *((k.encode("latin-1"), v.encode("latin-1"))
                       for k, v in request.headers.items())]
    if request.body is not None or request.method in ("POST", "PUT", "PATCH"):
        headers.append((b"content-length", str(len(body)).encode("ascii")))
    c = min(connect, timeout)
    ext = {"timeout": {"connect": c, "read": timeout, "write": timeout, "pool": timeout}}
    return httpcore.Request(request.method.encode("ascii"), url, headers=headers, content=body,
                            extensions=ext)


def _core_headers(resp: httpcore.Response) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in resp.headers}


def _core_send(pool: httpcore.ConnectionPool, request: WireRequest, timeout: float,
               connect: float) -> WireResponse:
    """One request straight on httpcore's pool. `httpx.Client.send` around the same call adds
    auth and redirect handling, cookie extraction and two model objects per request, which we
    never use and which cost more than the rest of the router's request path (see
    benchmarks/profiles/sync.txt)."""
    with deadline(timeout):
        resp = pool.handle_request(_core_request(request, timeout, connect))
        try:
            data = b"".join(resp.stream)  # type: ignore[arg-type]
        finally:
            resp.close()
    head = _core_headers(resp)
    if "content-encoding" in head:  # not asked for, but decoded as httpx would
        decoded = httpx.Response(resp.status, headers=resp.headers, content=data)
        data = decoded.read()
        head = {k.lower(): v for k, v in decoded.headers.items()}
    return WireResponse(resp.status, head, data)


def _batches(raw: Iterator[bytes], until: float | None) -> Iterator[list[bytes]]:
    """The complete lines of each chunk `raw` reads, then the unterminated last one. With
    `until`, each read runs under the deadline on the thread that makes it (a hedged leg starts
    on its own thread and is read on the caller's); it is set and reset around the read alone,
    since what a generator sets stays visible to the code it yields to."""
    splitter = LineSplitter()
    feed = splitter.feed
    try:
        if until is None:
            for chunk in raw:
                yield feed(chunk)
        else:
            while True:
                with deadline(until - time.monotonic()):
                    got = next(raw, None)
                if got is None:
                    break
                yield feed(got)
    except (*_CORE_TIMEOUTS, *_CORE_ERRORS) as exc:  # read from httpcore directly
        raise _core_mapped(exc) from exc
    except httpx.HTTPError as exc:  # read through httpx
        raise _mapped(exc) from exc
    tail = splitter.flush()
    if tail:
        yield tail


class HttpxTransport:
    """One pooled, keep-alive `httpx.Client`. A client you pass in keeps its own transport, so
    only httpx's per-read timeouts apply to it."""

    def __init__(self, client: httpx.Client | None = None):
        self._pool: httpcore.ConnectionPool | None = None
        if client is None:
            transport = DeadlineTransport(limits=_LIMITS)
            client = httpx.Client(transport=transport)
            # Our own client: plain requests go straight to its pool (`_core_send`).
            self._pool = transport.pool
        self._client = client

    def send(self, request: WireRequest, *, timeout: float, connect_timeout: float) -> WireResponse:
        if self._pool is not None:
            try:
                return _core_send(self._pool, request, timeout, connect_timeout)
            except (*_CORE_TIMEOUTS, *_CORE_ERRORS) as exc:
                raise _core_mapped(exc) from exc
            except httpx.HTTPError as exc:  # raised below the pool too (by test doubles)
                raise _mapped(exc) from exc
        try:
            with deadline(timeout):
                resp = self._client.send(_request(request, timeout, connect_timeout))
        except httpx.HTTPError as exc:
            raise _mapped(exc) from exc
        return WireResponse(resp.status_code, resp.headers, resp.content)

    def open(self, request: WireRequest, *, timeout: float, connect_timeout: float,
             total_timeout: float | None = None) -> _HttpxStream | _CoreStream:
        until = time.monotonic() + total_timeout if total_timeout is not None else None
        if self._pool is not None:
            try:
                with deadline(min(timeout, total_timeout or timeout)):
                    core = self._pool.handle_request(
                        _core_request(request, timeout, connect_timeout))
            except (*_CORE_TIMEOUTS, *_CORE_ERRORS) as exc:
                raise _core_mapped(exc) from exc
            except httpx.HTTPError as exc:  # raised below the pool too (by test doubles)
                raise _mapped(exc) from exc
            return _CoreStream(core, until)
        req = _request(request, timeout, connect_timeout)
        try:
            with deadline(min(timeout, total_timeout or timeout)):
                resp = self._client.send(req, stream=True)
        except httpx.HTTPError as exc:
            raise _mapped(exc) from exc
        return _HttpxStream(resp, until)

    def close(self) -> None:
        self._client.close()


class _HttpxStream:
    __slots__ = ("_resp", "_until", "headers", "status")

    def __init__(self, resp: httpx.Response, until: float | None = None):
        self._resp = resp
        self._until = until
        self.status = resp.status_code
        self.headers: Mapping[str, str] = resp.headers

    def lines(self) -> Iterator[bytes]:
        for batch in self.batches():
            yield from batch

    def batches(self) -> Iterator[list[bytes]]:
        """The complete lines of each read (see `line_batches`)."""
        return _batches(self._resp.iter_raw(), self._until)

    def read(self) -> bytes:
        try:
            with deadline(_left(self._until)):
                return self._resp.read()
        except httpx.HTTPError as exc:
            raise _mapped(exc) from exc

    def close(self) -> None:
        self._resp.close()

    def abort(self) -> None:
        """Cut a stream that another thread is reading (a hedge leg that lost): shut its socket
        down, which ends a read blocked in it at once (closing alone does not wake it). The
        reading thread then closes the response itself: httpcore's connection state is not
        safe to close from a second thread while the first is inside a read."""
        stream = self._resp.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if sock is None:
            self.close()
            return
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


class _CoreStream:
    """A stream read straight from httpcore (our own pool): no httpx response around it, whose
    byte chunker, stream wrappers and per-chunk exception mapping cost more per chunk than our
    own decoding (benchmarks/profiles/stream.txt). Reads, deadlines and `abort` work as in
    `_HttpxStream`."""

    __slots__ = ("_resp", "_until", "headers", "status")

    def __init__(self, resp: httpcore.Response, until: float | None = None):
        self._resp = resp
        self._until = until
        self.status = resp.status
        self.headers: Mapping[str, str] = _core_headers(resp)

    def lines(self) -> Iterator[bytes]:
        for batch in self.batches():
            yield from batch

    def batches(self) -> Iterator[list[bytes]]:
        """The complete lines of each read (see `line_batches`)."""
        return _batches(iter(self._resp.stream), self._until)  # type: ignore[arg-type]

    def read(self) -> bytes:
        try:
            with deadline(_left(self._until)):
                return b"".join(self._resp.stream)  # type: ignore[arg-type]
        except (*_CORE_TIMEOUTS, *_CORE_ERRORS) as exc:
            raise _core_mapped(exc) from exc
        except httpx.HTTPError as exc:
            raise _mapped(exc) from exc

    def close(self) -> None:
        self._resp.close()

    def abort(self) -> None:
        """As `_HttpxStream.abort`: shut the socket down under a read blocked on another
        thread; that thread closes the response."""
        stream = self._resp.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if sock is None:
            self.close()
            return
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


class HttpxAsyncTransport:
    """One pooled `httpx.AsyncClient`. Slower than aiohttp under concurrency (see BENCHMARKS.md);
    the choice when tests mock the network with respx."""

    def __init__(self, client: httpx.AsyncClient | None = None):
        self._client = client or httpx.AsyncClient(transport=AsyncDeadlineTransport(
            limits=_LIMITS))

    async def asend(self, request: WireRequest, *, timeout: float,
                    connect_timeout: float) -> WireResponse:
        try:
            with deadline(timeout):
                resp = await self._client.send(_request(request, timeout, connect_timeout))
        except httpx.HTTPError as exc:
            raise _mapped(exc) from exc
        return WireResponse(resp.status_code, resp.headers, resp.content)

    async def aopen(self, request: WireRequest, *, timeout: float, connect_timeout: float,
                    total_timeout: float | None = None) -> _HttpxAsyncStream:
        req = _request(request, timeout, connect_timeout)
        until = time.monotonic() + total_timeout if total_timeout is not None else None
        try:
            with deadline(min(timeout, total_timeout or timeout)):
                resp = await self._client.send(req, stream=True)
        except httpx.HTTPError as exc:
            raise _mapped(exc) from exc
        return _HttpxAsyncStream(resp, until)

    async def aclose(self) -> None:
        await self._client.aclose()


class _HttpxAsyncStream:
    __slots__ = ("_resp", "_until", "headers", "status")

    def __init__(self, resp: httpx.Response, until: float | None = None):
        self._resp = resp
        self._until = until  # monotonic
        self.status = resp.status_code
        self.headers: Mapping[str, str] = resp.headers

    def alines(self) -> AsyncIterator[bytes]:
        return lines_of(self.abatches())

    async def abatches(self) -> AsyncGenerator[list[bytes], None]:
        """The complete lines of each read (see `aline_batches`)."""
        splitter = LineSplitter()
        raw = self._resp.aiter_raw()
        try:
            while True:
                # Set and reset around the read only: what a generator sets stays visible to
                # the code it yields to.
                with deadline(_left(self._until)):
                    chunk = await anext(raw, None)
                if chunk is None:
                    break
                yield splitter.feed(chunk)
        except httpx.HTTPError as exc:
            raise _mapped(exc) from exc
        tail = splitter.flush()
        if tail:
            yield tail

    async def aread(self) -> bytes:
        try:
            with deadline(_left(self._until)):
                return await self._resp.aread()
        except httpx.HTTPError as exc:
            raise _mapped(exc) from exc

    async def aclose(self) -> None:
        await self._resp.aclose()
