"""A total time limit for httpx calls.

httpx's timeouts apply to each socket operation (httpcore `_backends/sync.py` sets the socket's
timeout before every `recv`), so a server that sends one byte every 0.2 s never trips a 1 s read
timeout and holds the call for as long as it likes. Our httpx transports therefore send through
a network backend whose every wait is cut to what is left of the current call::

    client = httpx.Client(transport=DeadlineTransport(limits=limits))
    with deadline(1.0):
        client.send(request)   # raises httpx.ReadTimeout (or Connect/Write) after 1 s at most

The async twin works the same way (`AsyncDeadlineTransport`, `with deadline(...)` around the
`await`). It must not be done by cancelling the task instead (`asyncio.timeout`): httpcore 1.0.9
leaves a connection that was being opened when its request was cancelled in the pool for good
(encode/httpcore#1093), which under load leaked a connection every few requests.

The limit lives in a context variable: a blocking call runs on the thread that made it, an
awaited one in its task, and each has at most one call in flight.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

__all__ = ["AsyncDeadlineTransport", "DeadlineTransport", "deadline"]

_until: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "starcoder_router_deadline", default=None)


class deadline:
    """Socket waits inside the block end `seconds` from now at the latest. (A class, not a
    generator context manager: streams enter one per chunk, and this costs a fifth as much.)"""

    __slots__ = ("_token", "_until")

    def __init__(self, seconds: float):
        until = time.monotonic() + seconds
        outer = _until.get()
        self._until = until if outer is None else min(outer, until)

    def __enter__(self) -> None:
        self._token = _until.set(self._until)

    def __exit__(self, *exc: object) -> None:
        _until.reset(self._token)


def _left(timeout: float | None, expired: type[Exception]) -> float | None:
    """`timeout` cut to the time left before the deadline; `expired` once it has passed."""
    until = _until.get()
    if until is None:
        return timeout
    left = until - time.monotonic()
    if left <= 0:
        raise expired("the call's deadline passed")
    return left if timeout is None else min(timeout, left)


class _Stream(httpcore.NetworkStream):
    __slots__ = ("_inner",)

    def __init__(self, inner: httpcore.NetworkStream):
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        return _Stream(self._inner.start_tls(ssl_context, server_hostname,
                                             _left(timeout, httpcore.ConnectTimeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _Backend(httpcore.NetworkBackend):
    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        return _Stream(self._inner.connect_tcp(host, port, _left(timeout, httpcore.ConnectTimeout),
                                               local_address, socket_options))

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        return _Stream(self._inner.connect_unix_socket(
            path, _left(timeout, httpcore.ConnectTimeout), socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class DeadlineTransport(httpx.HTTPTransport):
    """httpx's HTTP/1.1 transport over the deadline-aware backend. Like any explicit transport
    it ignores proxy variables in the environment."""

    def __init__(self, *, limits: httpx.Limits):
        super().__init__(limits=limits)
        # httpx gives no way to choose the network backend, so the pool is built again with
        # it (HTTPTransport sends through `self._pool`; httpx/_transports/default.py).
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_Backend(),
        )

    @property
    def pool(self) -> httpcore.ConnectionPool:
        """The connection pool, for callers that send httpcore requests directly."""
        return self._pool


class _AsyncStream(httpcore.AsyncNetworkStream):
    __slots__ = ("_inner",)

    def __init__(self, inner: httpcore.AsyncNetworkStream):
        self._inner = inner

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._inner.read(max_bytes, _left(timeout, httpcore.ReadTimeout))

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._inner.write(buffer, _left(timeout, httpcore.WriteTimeout))

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                        timeout: float | None = None) -> httpcore.AsyncNetworkStream:
        return _AsyncStream(await self._inner.start_tls(
            ssl_context, server_hostname, _left(timeout, httpcore.ConnectTimeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _AsyncBackend(httpcore.AsyncNetworkBackend):
    def __init__(self) -> None:
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None,
                          ) -> httpcore.AsyncNetworkStream:
        return _AsyncStream(await self._inner.connect_tcp(
            host, port, _left(timeout, httpcore.ConnectTimeout), local_address, socket_options))

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[Any] | None = None,
                                  ) -> httpcore.AsyncNetworkStream:
        return _AsyncStream(await self._inner.connect_unix_socket(
            path, _left(timeout, httpcore.ConnectTimeout), socket_options))

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class AsyncDeadlineTransport(httpx.AsyncHTTPTransport):
    """The async twin of `DeadlineTransport` (asyncio, through anyio)."""

    def __init__(self, *, limits: httpx.Limits):
        super().__init__(limits=limits)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_AsyncBackend(),
        )
