"""The gateway's connections: how many a client may hold, how long it may take to send a
request, and what a malformed request gets back.

aiohttp's own answer to a request it cannot parse is a plain-text 400 that repeats the offending
header line, and its `aiohttp.server` logger prints the same line: a bearer key followed by a
stray CR, LF or NUL would land in both. `GuardedHandler` answers such requests with a fixed body
and logs only the error's kind. It also caps open connections, in all and per client address,
before a single byte is read: a client over its cap gets a bare 429 (503 when the gateway is
full) and is closed.

Deadlines: aiohttp closes a connection whose keep-alive timer fires while it is still waiting
for a request's headers, and that timer starts when the connection opens and again when each
answer ends. With `keepalive_timeout = header_timeout_s` it is the headers' deadline (slowloris
gets nowhere). The body's deadline is `read_json`'s (408). A client that stops reading an
answer is closed after `send_timeout_s` (below).

Example (what `app.listen` does)::

    runner = web.AppRunner(app, **RUNNER_OPTIONS)
    await runner.setup()
    await GuardedSite(runner, settings, host="127.0.0.1", port=8080).start()
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from typing import Any

from aiohttp import web

from .settings import ServerSettings

__all__ = [
    "ConnectionGuard",
    "GuardedHandler",
    "GuardedSite",
    "client_of",
    "connection_cap",
    "fit_connections",
    "handler_options",
]

logger = logging.getLogger("starcoder_router.server.connections")

_REFUSALS = {
    429: b"HTTP/1.1 429 Too Many Requests\r\nConnection: close\r\nRetry-After: 1\r\n"
         b"Content-Length: 0\r\n\r\n",
    503: b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\n"
         b"Content-Length: 0\r\n\r\n",
}


class _Quiet:
    """Logs one line for the first of a kind of event, then at most one per `every_s` with the
    count since: a client that sends garbage on purpose cannot flood the log."""

    def __init__(self, level: int, every_s: float = 10.0):
        self._level = level
        self._every_s = every_s
        self._next = 0.0
        self._since = 0

    def log(self, loop: asyncio.AbstractEventLoop, message: str, *args: object) -> None:
        now = loop.time()
        if now < self._next:
            self._since += 1
            return
        if self._since:
            message += f" (and {self._since} more in the last {self._every_s:g} s)"
        logger.log(self._level, message, *args)
        self._next, self._since = now + self._every_s, 0



def client_of(peername: Any) -> str:
    """The address a client's connections are counted under: its IP, or its /64 for IPv6
    (one host usually holds a whole /64)."""
    if not isinstance(peername, tuple) or not peername:
        return "-"
    host = str(peername[0])
    if ":" in host:
        try:
            return str(ipaddress.IPv6Network((host.split("%", maxsplit=1)[0], 64), strict=False))
        except ValueError:
            return host
    return host


class ConnectionGuard:
    """Open connections per client and in all (pure bookkeeping, no I/O), and the site's
    throttled log lines."""

    def __init__(self, total: int, per_client: int):
        self.total = total
        self.per_client = per_client
        self.open = 0
        self._by_client: dict[str, int] = {}
        self.refused = _Quiet(logging.WARNING)
        self.malformed = _Quiet(logging.INFO)
        self.stalled = _Quiet(logging.INFO)

    def enter(self, client: str) -> int | None:
        """Count a new connection; the status to refuse it with when over a cap."""
        if self.open >= self.total:
            return 503
        held = self._by_client.get(client, 0)
        if held >= self.per_client:
            return 429
        self._by_client[client] = held + 1
        self.open += 1
        return None

    def leave(self, client: str) -> None:
        held = self._by_client.get(client, 0) - 1
        if held > 0:
            self._by_client[client] = held
        else:
            self._by_client.pop(client, None)
        self.open = max(0, self.open - 1)


# Each client connection may hold an upstream connection too; the rest is for the store, the
# log files and the listening sockets.
_FDS_PER_CONNECTION = 2
_FDS_SPARE = 256


def fit_connections(wanted: int, soft: int, hard: int) -> tuple[int, int]:
    """(the connection cap that fits the open-file limit, the soft limit to ask for). A cap
    above the limit would not hold: accept() would fail with EMFILE and asyncio would stop
    accepting anyone for a second at a time. Negative limits mean unlimited."""
    need = wanted * _FDS_PER_CONNECTION + _FDS_SPARE
    if soft < 0 or soft >= need:
        return wanted, soft
    target = need if hard < 0 else min(need, hard)
    return min(wanted, max(1, (target - _FDS_SPARE) // _FDS_PER_CONNECTION)), target


def connection_cap(wanted: int) -> int:
    """`wanted`, or less when the process may not open enough files (after raising its soft
    limit as far as the hard one allows)."""
    try:
        import resource
    except ImportError:  # Windows: no such limit to fit
        return wanted
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    cap, target = fit_connections(wanted, soft, hard)
    if target != soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            cap = fit_connections(wanted, soft, soft)[0]
    if cap < wanted:
        logger.warning("max_connections lowered from %d to %d to fit the open-file limit "
                       "(ulimit -n)", wanted, cap)
    return cap


def handler_options(settings: ServerSettings) -> dict[str, Any]:
    """What every connection's `RequestHandler` gets."""
    return {
        "keepalive_timeout": settings.header_timeout_s,  # also the headers' deadline (above)
        # A body the handler did not read is drained for at most this long before closing.
        "lingering_time": min(5.0, settings.body_timeout_s),
        "max_line_size": 8190,
        "max_field_size": 8190,
        "max_headers": 64,
        "auto_decompress": False,  # no inflating of client bodies: read_json refuses them
        "logger": logger,
        "access_log": None,
    }


class GuardedHandler(web.RequestHandler):
    """aiohttp's connection handler with the caps and the quiet error answer above."""

    def __init__(self, manager: Any, *, guard: ConnectionGuard, send_timeout_s: float,
                 **kwargs: Any):
        super().__init__(manager, **kwargs)
        self._guard = guard
        self._send_timeout_s = send_timeout_s
        self._stalled: asyncio.TimerHandle | None = None
        self._client = "-"
        self._admitted = False
        self.served = 0  # requests answered on this connection (the app's middleware counts)

    # A client that stops reading (a stream it asked for, left unread) fills the socket's
    # buffers; the transport then pauses writing. Paused for longer than the send deadline,
    # the connection is closed, which cancels the handler and closes its upstream stream.
    # One timer per stall, nothing per chunk.
    def pause_writing(self) -> None:
        super().pause_writing()
        if self._stalled is None:
            self._stalled = self._loop.call_later(self._send_timeout_s, self._give_up)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._stalled is not None:
            self._stalled.cancel()
            self._stalled = None

    def _give_up(self) -> None:
        self._stalled = None
        self._guard.stalled.log(self._loop, "closed a connection from %s: it stopped reading",
                                self._client)
        if self.transport is not None:
            # close() would wait for the unsent bytes to go out, which is never.
            self.transport.abort()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._client = client_of(transport.get_extra_info("peername"))
        refused = self._guard.enter(self._client)
        if refused is not None:
            self._guard.refused.log(self._loop, "refused a connection from %s: %s", self._client,
                                    "too many connections" if refused == 503 else
                                    "too many connections from this client")
            assert isinstance(transport, asyncio.Transport)
            transport.write(_REFUSALS[refused])
            transport.close()
            return
        self._admitted = True
        super().connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._stalled is not None:
            self._stalled.cancel()
            self._stalled = None
        if not self._admitted:
            return
        self._admitted = False
        self._guard.leave(self._client)
        super().connection_lost(exc)

    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        # aiohttp's message and exception name the header line it choked on: neither is kept.
        if status >= 500:
            logger.error("request from %s failed: %s", self._client, type(exc).__name__,
                         exc_info=exc if not isinstance(exc, ValueError) else None)
        else:
            self._guard.malformed.log(self._loop, "rejected a malformed request from %s (%s)",
                                      self._client,
                                      type(exc).__name__ if exc is not None else status)
        if request.writer.output_size > 0:
            raise ConnectionError("the answer had started")
        text = "malformed HTTP request" if status < 500 else "internal error"
        body = {"error": {"message": text, "type": "invalid_request_error" if status < 500
                          else "server_error", "param": None, "code": f"http_{status}"}}
        response = web.Response(status=status, body=json.dumps(body).encode(),
                                content_type="application/json")
        response.force_close()
        return response

    def log_exception(self, *args: Any, **kw: Any) -> None:
        exc = kw.get("exc_info")
        logger.error("connection from %s failed: %s", self._client,
                     type(exc).__name__ if isinstance(exc, BaseException) else "error")


class GuardedSite(web.TCPSite):
    """A TCP site whose connections are `GuardedHandler`s under one `ConnectionGuard`."""

    def __init__(self, runner: web.BaseRunner, settings: ServerSettings, *, host: str,
                 port: int, reuse_port: bool | None = None):
        super().__init__(runner, host, port, reuse_port=reuse_port)
        self.guard = ConnectionGuard(connection_cap(settings.max_connections),
                                     settings.max_connections_per_client)
        self._options = handler_options(settings)
        self._send_timeout_s = settings.send_timeout_s

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        guard, options, send_timeout_s = self.guard, self._options, self._send_timeout_s

        def connection() -> GuardedHandler:
            return GuardedHandler(server, guard=guard, send_timeout_s=send_timeout_s, loop=loop,
                                  **options)

        self._server = await loop.create_server(
            connection, self._host, self._port, backlog=self._backlog,
            reuse_address=self._reuse_address, reuse_port=self._reuse_port)
        self._bound_port = self._server.sockets[0].getsockname()[1]
