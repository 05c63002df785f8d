"""A loopback mock of the inference servers the router talks to, cheap enough to benchmark clients.

It speaks just enough HTTP/1.1 (keep-alive, Content-Length or chunked request bodies, chunked
responses) on an asyncio Protocol, with uvloop when it is importable:

* `POST /v1/completions` (and `/v1/chat/completions`): plain JSON, or an SSE stream when the body
  says `"stream": true` — one event per token, then a final event with `"choices": []` and
  `usage`, then `data: [DONE]`.
* `POST /api/generate`: Ollama's NDJSON stream (or one JSON object with `"stream": false`); the
  last line has `done: true`, `prompt_eval_count` and `eval_count`.
* `GET /health`, `GET /v1/models`, `GET /api/tags`.
* `GET /stats`: connections accepted, requests served and the server's own CPU seconds, so a
  benchmark can count new connections per request and check that the server stays cheap.

A response has `max_tokens` tokens (Ollama: `options.num_predict`), or `--chunks` when the request
names none; responses are built once per shape and cached, so a request costs a header parse, a
small `json.loads` and one write. `--latency-ms` delays every response; `--chunk-interval-ms`
spaces stream events out instead of writing them at once.

Run: `python benchmarks/mock_server.py --port 0` prints `READY <port>` once it listens.
Binds 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time

_TOKENS = ("    ", "return", " fib", "(", "n", " -", " 1", ")", " +", " fib", "(", "n", " -",
           " 2", ")", "\n")
_CREATED = 1_767_225_600
_REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 405: b"Method Not Allowed"}
_MAX_CACHE = 512
_MAX_TOKENS = 100_000


class Stats:
    __slots__ = ("accepted", "open", "requests", "started")

    def __init__(self) -> None:
        self.accepted = 0
        self.open = 0
        self.requests = 0
        self.started = time.monotonic()

    def as_json(self) -> bytes:
        return json.dumps({
            "accepted": self.accepted,
            "open": self.open,
            "requests": self.requests,
            "cpu_s": time.process_time(),
            "uptime_s": time.monotonic() - self.started,
            "pid": os.getpid(),
            "loop": loop_name(),
        }).encode()


def _text(n: int) -> list[str]:
    return [_TOKENS[i % len(_TOKENS)] for i in range(n)]


def _head(status: int, ctype: bytes, length: int | None) -> bytes:
    framing = b"Transfer-Encoding: chunked" if length is None else b"Content-Length: %d" % length
    return (b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\n%s\r\nx-request-id: mock\r\n\r\n"
            % (status, _REASONS.get(status, b"Error"), ctype, framing))


def _plain(status: int, body: bytes, ctype: bytes = b"application/json") -> bytes:
    return _head(status, ctype, len(body)) + body


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _usage(prompt_tokens: int, n: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": n,
            "total_tokens": prompt_tokens + n}


def build_completion(model: str, n: int, prompt_tokens: int, *, stream: bool, chat: bool
                     ) -> list[bytes]:
    """The response to an OpenAI-compatible request, as the pieces to write (stream: one piece
    per event, the head glued to the first)."""
    obj = "chat.completion" if chat else "text_completion"
    toks = _text(n)
    if not stream:
        text = "".join(toks)
        choice = ({"index": 0, "message": {"role": "assistant", "content": text},
                   "finish_reason": "length"} if chat else
                  {"index": 0, "text": text, "logprobs": None, "finish_reason": "length"})
        body = json.dumps({"id": "cmpl-mock", "object": obj, "created": _CREATED,
                           "model": model, "choices": [choice],
                           "usage": _usage(prompt_tokens, n)}).encode()
        return [_plain(200, body)]
    obj += ".chunk" if chat else ""
    events = []
    for i, tok in enumerate(toks):
        finish = "length" if i == n - 1 else None
        choice = ({"index": 0, "delta": {"content": tok}, "finish_reason": finish} if chat else
                  {"index": 0, "text": tok, "logprobs": None, "finish_reason": finish})
        events.append({"id": "cmpl-mock", "object": obj, "created": _CREATED, "model": model,
                       "choices": [choice]})
    events.append({"id": "cmpl-mock", "object": obj, "created": _CREATED, "model": model,
                   "choices": [], "usage": _usage(prompt_tokens, n)})
    pieces = [_chunk(b"data: " + json.dumps(e).encode() + b"\n\n") for e in events]
    pieces.append(_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
    pieces[0] = _head(200, b"text/event-stream", None) + pieces[0]
    return pieces


def build_ollama(model: str, n: int, prompt_tokens: int, *, stream: bool) -> list[bytes]:
    """The response to Ollama's `/api/generate`."""
    stamp = "2026-01-01T00:00:00Z"
    final = {"model": model, "created_at": stamp, "response": "", "done": True,
             "done_reason": "length", "total_duration": 1000, "load_duration": 10,
             "prompt_eval_count": prompt_tokens, "prompt_eval_duration": 100,
             "eval_count": n, "eval_duration": 800}
    toks = _text(n)
    if not stream:
        final["response"] = "".join(toks)
        return [_plain(200, json.dumps(final).encode())]
    lines = [json.dumps({"model": model, "created_at": stamp, "response": t, "done": False})
             for t in toks]
    lines.append(json.dumps(final))
    pieces = [_chunk(line.encode() + b"\n") for line in lines]
    pieces[-1] += b"0\r\n\r\n"
    pieces[0] = _head(200, b"application/x-ndjson", None) + pieces[0]
    return pieces


def _prompt_tokens(body: dict) -> int:
    """A cheap stand-in for a token count: about four bytes per token."""
    prompt = body.get("prompt")
    if isinstance(prompt, list):
        prompt = "".join(p for p in prompt if isinstance(p, str))
    if not isinstance(prompt, str):
        msgs = body.get("messages") or ()
        prompt = "".join(str(m.get("content", "")) for m in msgs if isinstance(m, dict))
    return max(1, len(prompt) // 4)


class App:
    """Routes a parsed request to its (cached) response pieces."""

    def __init__(self, *, chunks: int) -> None:
        self.chunks = chunks
        self.stats = Stats()
        self._cache: dict[tuple, list[bytes]] = {}
        self._by_body: dict[tuple[bytes, bytes], list[bytes]] = {}
        self._health = _plain(200, b'{"status":"ok"}')
        self._models = _plain(200, json.dumps(
            {"object": "list", "data": [{"id": "bench-model", "object": "model"}]}).encode())
        self._tags = _plain(200, json.dumps(
            {"models": [{"name": "bench-model", "model": "bench-model"}]}).encode())

    def handle(self, method: bytes, path: bytes, body: bytes) -> list[bytes]:
        if method == b"POST":
            # A benchmark sends the same body again and again: answer repeats from a cache
            # keyed on the raw bytes, skipping the JSON parse.
            key = (path, body)
            pieces = self._by_body.get(key)
            if pieces is not None:
                return pieces
            if path in (b"/v1/completions", b"/v1/chat/completions", b"/api/generate"):
                try:
                    req = json.loads(body) if body else {}
                    pieces = self._generate(path, req)
                except (ValueError, TypeError, AttributeError) as exc:
                    return [_error(400, f"bad request: {exc}")]
                if len(self._by_body) >= _MAX_CACHE:
                    self._by_body.clear()
                self._by_body[key] = pieces
                return pieces
            return [_error(404, "not found")]
        if method in (b"GET", b"HEAD"):
            if path == b"/health":
                return [self._health]
            if path == b"/stats":
                return [_plain(200, self.stats.as_json())]
            if path == b"/v1/models":
                return [self._models]
            if path == b"/api/tags":
                return [self._tags]
            return [_error(404, "not found")]
        return [_error(405, "method not allowed")]

    def _generate(self, path: bytes, req: dict) -> list[bytes]:
        model = str(req.get("model") or "bench-model")
        ollama = path == b"/api/generate"
        if ollama:
            stream = req.get("stream", True) is not False
            n = (req.get("options") or {}).get("num_predict")
        else:
            stream = req.get("stream") is True
            n = req.get("max_tokens", req.get("max_completion_tokens"))
        n = int(n) if isinstance(n, int) and n > 0 else self.chunks
        n = min(n, _MAX_TOKENS)
        key = (path, model, n, _prompt_tokens(req), stream)
        pieces = self._cache.get(key)
        if pieces is None:
            if len(self._cache) >= _MAX_CACHE:
                self._cache.clear()
            if ollama:
                pieces = build_ollama(model, n, key[3], stream=stream)
            else:
                pieces = build_completion(model, n, key[3], stream=stream,
                                          chat=path == b"/v1/chat/completions")
            self._cache[key] = pieces
        return pieces


def _error(status: int, message: str) -> bytes:
    return _plain(status, json.dumps({"error": {"message": message, "type": "mock"}}).encode())


class HttpProtocol(asyncio.Protocol):
    """One keep-alive connection: parse requests as they arrive, answer in order."""

    __slots__ = ("app", "buf", "interval", "latency", "loop", "transport")

    def __init__(self, app: App, latency: float, interval: float) -> None:
        self.app = app
        self.buf = b""
        self.latency = latency
        self.interval = interval
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.app.stats.accepted += 1
        self.app.stats.open += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.app.stats.open -= 1
        self.transport = None

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        while buf:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            parsed = _parse_head(buf[:end])
            if parsed is None:
                self._send([_error(400, "malformed request")], close=True)
                buf = b""
                break
            method, path, length, chunked, close = parsed
            start = end + 4
            if chunked:
                decoded = _dechunk(buf, start)
                if decoded is None:
                    break
                body, start = decoded
            else:
                if len(buf) < start + length:
                    break
                body = buf[start:start + length]
                start += length
            buf = buf[start:]
            self.app.stats.requests += 1
            self._send(self.app.handle(method, path, body), close=close)
        self.buf = buf

    def _send(self, pieces: list[bytes], *, close: bool) -> None:
        if self.latency <= 0 and (self.interval <= 0 or len(pieces) == 1):
            self._write(pieces, close)
            return
        if self.interval <= 0 or len(pieces) == 1:
            self.loop.call_later(self.latency, self._write, pieces, close)
            return
        last = len(pieces) - 1
        for i, piece in enumerate(pieces):
            self.loop.call_later(self.latency + i * self.interval, self._write, [piece],
                                 close and i == last)

    def _write(self, pieces: list[bytes], close: bool) -> None:
        t = self.transport
        if t is None:
            return
        if len(pieces) == 1:
            t.write(pieces[0])
        else:
            t.writelines(pieces)
        if close:
            t.close()


def _parse_head(head: bytes) -> tuple[bytes, bytes, int, bool, bool] | None:
    lines = head.split(b"\r\n")
    try:
        method, target, version = lines[0].split(b" ", 2)
    except ValueError:
        return None
    path = target.split(b"?", 1)[0]
    length = 0
    chunked = False
    close = version == b"HTTP/1.0"
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                return None
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            v = value.strip().lower()
            close = v == b"close" or (close and v != b"keep-alive")
    return method, path, length, chunked, close


def _dechunk(buf: bytes, pos: int) -> tuple[bytes, int] | None:
    """Decode a chunked body starting at `pos`; None until it has all arrived."""
    parts = []
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        size = int(buf[pos:eol].split(b";", 1)[0], 16)
        pos = eol + 2
        if size == 0:
            trailer_end = buf.find(b"\r\n", pos)
            while trailer_end > pos:  # skip trailer fields
                pos = trailer_end + 2
                trailer_end = buf.find(b"\r\n", pos)
            if trailer_end < 0:
                return None
            return b"".join(parts), trailer_end + 2
        if len(buf) < pos + size + 2:
            return None
        parts.append(buf[pos:pos + size])
        pos += size + 2


def _install_uvloop(wanted: bool) -> None:
    if not wanted:
        return
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def loop_name() -> str:
    mod = type(asyncio.get_event_loop_policy()).__module__
    if mod.startswith("uvloop"):
        import uvloop

        return f"uvloop {uvloop.__version__}"
    return "asyncio"


async def serve(port: int, *, chunks: int, latency_ms: float, interval_ms: float,
                ready_fd: int | None = None) -> None:
    loop = asyncio.get_running_loop()
    app = App(chunks=chunks)
    server = await loop.create_server(
        lambda: HttpProtocol(app, latency_ms / 1000, interval_ms / 1000),
        host="127.0.0.1", port=port, backlog=1024, reuse_address=True,
    )
    bound = server.sockets[0].getsockname()[1]
    line = f"READY {bound} {loop_name()}\n"
    sys.stdout.write(line)
    sys.stdout.flush()
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    async with server:
        await stop


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--chunks", type=int, default=200,
                   help="tokens per response when the request names no max_tokens")
    p.add_argument("--latency-ms", type=float, default=0.0, help="delay before each response")
    p.add_argument("--chunk-interval-ms", type=float, default=0.0,
                   help="delay between stream events (0: write the whole stream at once)")
    p.add_argument("--cpu", type=int, default=None, help="pin the server to this core")
    p.add_argument("--no-uvloop", action="store_true", help="use the stdlib event loop")
    args = p.parse_args(argv)
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    _install_uvloop(not args.no_uvloop)
    asyncio.run(serve(args.port, chunks=args.chunks, latency_ms=args.latency_ms,
                      interval_ms=args.chunk_interval_ms))


if __name__ == "__main__":
    main()
