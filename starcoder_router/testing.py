"""Test helpers for code that uses starcoder-router: a real OpenAI-compatible server on loopback.

`FakeServer` answers `POST /v1/completions` (plain and SSE streaming, with usage) from a
background thread on 127.0.0.1, so your tests and demos exercise the real HTTP path without a
model or an API key. Script failures to test your own retry and fallback handling::

    from starcoder_router import Catalog, CostPolicy, Router
    from starcoder_router.testing import FakeServer, Reply

    with FakeServer() as server:
        server.script(Reply(status=429, headers={"retry-after": "0"}), Reply(text="pass"))
        router = Router(catalog=Catalog.default().with_deployments(server.deployment()),
                        policy=CostPolicy(allow_providers={"openai-compatible"}), env={})
        assert router.complete(prompt="def f():").text == "pass"
        assert len(server.requests) == 2
"""

from __future__ import annotations

import collections
import http.server
import json
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ._routing.catalog import Capability, Deployment
from ._routing.tokens import EstimatingCounter, TokenCounter

__all__ = ["FakeServer", "RecordedRequest", "Reply"]

_DEFAULT_TEXT = "\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n"


@dataclass(frozen=True)
class Reply:
    """One scripted answer. `status` >= 400 sends `error` (or a default OpenAI-style body).
    `chunks` splits the text for streams; `fail_after` cuts a stream after that many chunks;
    `delay_s` waits before answering; `first_chunk_delay_s` sends a stream's headers at once
    and waits before its first chunk (a server slow to its first token); `usage=False` leaves
    usage out. `finish_reason` defaults
    to what a real server says: `"length"` when the text was cut at `max_tokens`, else
    `"stop"`."""

    text: str | None = None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    error: str | dict[str, Any] | None = None
    finish_reason: str | None = None
    delay_s: float = 0.0
    chunks: int | None = None
    fail_after: int | None = None
    usage: bool = True
    model: str | None = None
    chunk_delay_s: float = 0.0
    first_chunk_delay_s: float = 0.0


@dataclass(frozen=True)
class RecordedRequest:
    """A request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class FakeServer:
    """A loopback OpenAI-compatible completions server for tests and demos.

    Unscripted requests get `text` (a callable receives the request body), cut to at most
    `max_tokens` tokens as `counter` counts them (an estimate unless you pass an exact one), which
    also counts the usage it reports.
    """

    def __init__(self, *, text: str | Callable[[dict[str, Any]], str] = _DEFAULT_TEXT,
                 model: str = "fake-starcoder2", counter: TokenCounter | None = None,
                 latency_s: float = 0.0, port: int = 0):
        """`port` 0 takes a free one (see `base_url`); `starcoder-router fake-server --port N`
        runs one from the command line, as a local stand-in for the CLI or the gateway."""
        self._text = text
        self.port = port
        self.model = model
        self.counter = counter or EstimatingCounter()
        self.latency_s = latency_s
        self.requests: list[RecordedRequest] = []
        self._script: collections.deque[Reply] = collections.deque()
        self._lock = threading.Lock()
        self._httpd: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.connections = 0

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> FakeServer:
        handler = _make_handler(self)
        self._httpd = _QuietServer(("127.0.0.1", self.port), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("the server is not running: call start() or use `with`")
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    # -- scripting ------------------------------------------------------------------------------

    def script(self, *replies: Reply) -> None:
        """Queue replies for the next requests, in order; then back to the default."""
        with self._lock:
            self._script.extend(replies)

    def deployment(self, *, variant: str = "starcoder2-3b", name: str | None = None,
                   context_window: int = 16384, input_usd_per_mtok: float = 0.0,
                   output_usd_per_mtok: float = 0.0,
                   capabilities: Iterable[Capability] = ("completion", "fim", "streaming",
                                                         "structured_output", "chat"),
                   group: str | None = None, parallel: int | None = None,
                   ) -> Deployment:
        """A deployment that points at this server (provider `openai-compatible`); servers
        whose deployments name the same `group` are replicas (`FleetPolicy`)."""
        return Deployment(
            name=name or f"fake/{variant}", provider="openai-compatible", variant=variant,
            model=self.model, context_window=context_window, base_url=self.base_url,
            input_usd_per_mtok=input_usd_per_mtok, output_usd_per_mtok=output_usd_per_mtok,
            pricing="local" if not (input_usd_per_mtok or output_usd_per_mtok) else "serverless",
            capabilities=frozenset(capabilities), source="starcoder_router.testing.FakeServer",
            group=group, parallel=parallel,
        )

    # -- answering ------------------------------------------------------------------------------

    def _next(self) -> Reply:
        with self._lock:
            return self._script.popleft() if self._script else Reply()

    def _completion_text(self, body: dict[str, Any], reply: Reply) -> tuple[str, str]:
        """The text to send and why it ends (`"length"` when cut at `max_tokens`)."""
        if reply.text is not None:
            return reply.text, reply.finish_reason or "stop"
        text = self._text(body) if callable(self._text) else self._text
        cut = self._cut(text, int(body.get("max_tokens", 16)))
        return cut, reply.finish_reason or ("length" if cut != text else "stop")

    def _cut(self, text: str, limit: int) -> str:
        """The longest prefix of `text` (whole words where possible) that counts at most
        `limit` tokens, as a real server stops at `max_tokens`."""
        if self.counter.count(text) <= limit:
            return text
        words = text.split(" ")
        lo, hi = 0, len(words)  # the longest word prefix within the limit
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.counter.count(" ".join(words[:mid])) <= limit:
                lo = mid
            else:
                hi = mid - 1
        cut = " ".join(words[:lo])
        rest = text[len(cut):]
        while rest and self.counter.count(cut + rest[0]) <= limit:  # a long word, by characters
            cut, rest = cut + rest[0], rest[1:]
        return cut


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that hang up mid-answer (cancelled streams) are part of the tests.
        import sys

        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


def _make_handler(server: FakeServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            # Without this, Nagle's algorithm and delayed ACKs add ~40 ms to every answer.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with server._lock:
                server.connections += 1

        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_GET(self) -> None:
            if self.path.rstrip("/").endswith("/models"):
                self._json(200, {"object": "list", "data": [{"id": server.model}]})
            else:
                self._json(404, {"error": {"message": "not found", "type": "not_found_error"}})

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else {}
            except ValueError:
                self._json(400, {"error": {"message": "malformed JSON", "type": "invalid"}})
                return
            server.requests.append(RecordedRequest(
                "POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            reply = server._next()
            delay = reply.delay_s + server.latency_s
            if delay:
                time.sleep(delay)
            if not self.path.endswith("/completions"):
                self._json(404, {"error": {"message": f"no route {self.path}"}})
                return
            if reply.status >= 400:
                err = reply.error if isinstance(reply.error, dict) else {
                    "error": {"message": reply.error or f"scripted error {reply.status}",
                              "type": "scripted"}}
                self._json(reply.status, err, reply.headers)
                return
            text, finish = server._completion_text(body, reply)
            usage = {
                "prompt_tokens": server.counter.count(str(body.get("prompt", ""))),
                "completion_tokens": server.counter.count(text),
            }
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
            model = reply.model or body.get("model") or server.model
            if body.get("stream"):
                self._stream(text, finish, reply, usage, model)
                return
            payload: dict[str, Any] = {
                "id": f"cmpl-{len(server.requests)}", "object": "text_completion",
                "model": model,
                "choices": [{"index": 0, "text": text, "finish_reason": finish}],
            }
            if reply.usage:
                payload["usage"] = usage
            self._json(200, payload, reply.headers)

        def _json(self, status: int, payload: dict[str, Any],
                  headers: dict[str, str] | None = None) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def _stream(self, text: str, finish: str, reply: Reply, usage: dict[str, int],
                    model: str) -> None:
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("transfer-encoding", "chunked")
            for k, v in reply.headers.items():
                self.send_header(k, v)
            self.end_headers()
            n = reply.chunks or max(1, len(text.split(" ")))
            size = max(1, -(-len(text) // n))
            pieces = [text[i:i + size] for i in range(0, len(text), size)] or [""]
            try:
                if reply.first_chunk_delay_s:
                    time.sleep(reply.first_chunk_delay_s)
                for i, piece in enumerate(pieces):
                    if reply.fail_after is not None and i >= reply.fail_after:
                        # Cut the connection mid-stream, as a crashing server would.
                        self.wfile.flush()
                        self.close_connection = True
                        self.connection.shutdown(2)
                        return
                    last = i == len(pieces) - 1
                    self._event({"id": "cmpl-s", "model": model, "choices": [{
                        "index": 0, "text": piece,
                        "finish_reason": finish if last else None}]})
                    if reply.chunk_delay_s:
                        time.sleep(reply.chunk_delay_s)
                if reply.usage:
                    self._event({"id": "cmpl-s", "model": model, "choices": [], "usage": usage})
                self._chunk(b"data: [DONE]\n\n")
                self._chunk(b"")
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

        def _event(self, obj: dict[str, Any]) -> None:
            self._chunk(b"data: " + json.dumps(obj).encode() + b"\n\n")

        def _chunk(self, data: bytes) -> None:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

    return Handler
