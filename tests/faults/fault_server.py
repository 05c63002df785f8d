"""A real loopback server that misbehaves on purpose: our own fault injector.

It speaks OpenAI-compatible `POST /v1/completions` (JSON, or SSE when `stream` is true) and
Ollama's `POST /api/generate` (JSON, or NDJSON when `stream` is true, Ollama's default), and
answers each request with the next fault of a seeded schedule::

    with FaultServer(seed=7, rate=0.2) as server:
        dep = server.deployment("a", protocol="openai")
        ...
        server.served     # Counter: fault name -> requests that got it

Every reply's text starts with `[<tag>-<n>]` (the deployment's name in the URL, and a serial
number), so a test can check that a completion's text came from the deployment that served it.
Usage counts are honest: the prompt's UTF-8 bytes divided by four (never more than a byte bound)
and one token per word.
"""

from __future__ import annotations

import asyncio
import collections
import json
import random
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

from aiohttp import web

from starcoder_router import Deployment

FAULTS = (
    "429_retry_after",  # 429 with Retry-After: 0
    "429_bare",         # 429 without Retry-After
    "500",
    "503",
    "hang",             # never answers (until the client gives up)
    "reset_early",      # TCP reset before any header
    "reset_mid",        # TCP reset halfway through the body or stream
    "cut",              # a stream that ends cleanly but without its end marker
    "malformed",        # a body (or a stream event) that is not JSON
    "error_in_200",     # an error object inside a 200 answer or stream
    "no_usage",         # a good answer without token counts
    "drip",             # a good answer sent one byte at a time
)
# Asked for by name only (not in the default schedule): a 401 that quotes the key it was sent.
ECHO_KEY = "echo_key"

# Words the server answers with; one token each in its usage.
_WORDS = ("alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta")


class FaultServer:
    """An aiohttp.web server on 127.0.0.1 in a thread of its own (its own event loop)."""

    def __init__(self, *, seed: int = 0, rate: float = 0.0,
                 faults: Mapping[str, float] | None = None, drip_s: float = 0.2,
                 hang_s: float = 30.0):
        self.rate = rate
        self.weights = dict(faults or dict.fromkeys(FAULTS, 1.0))
        self.drip_s = drip_s
        self.hang_s = hang_s
        self._rng = random.Random(seed)
        self._forced: collections.deque[str] = collections.deque()
        self._lock = threading.Lock()
        self.served: collections.Counter[str] = collections.Counter()
        self.replies = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._port = 0

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> FaultServer:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), daemon=True,
                                        name="fault-server")
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the fault server did not start")
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        self._loop = self._thread = None

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _serve(self, ready: threading.Event) -> None:
        loop = self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        app = web.Application()
        app.router.add_post("/{tag}/v1/completions", _hung_up_ok(self._openai))
        app.router.add_post("/{tag}/api/generate", _hung_up_ok(self._ollama))
        app.router.add_get("/stats", self._stats)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                     shutdown_timeout=0.5)
        loop.run_until_complete(self._runner.setup())
        site = web.SockSite(self._runner, _listening_socket())
        loop.run_until_complete(site.start())
        self._port = site._sock.getsockname()[1]  # type: ignore[union-attr]
        ready.set()
        try:
            loop.run_forever()
            # Handlers still hanging or dripping when the server stops.
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        finally:
            loop.close()

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    # -- scheduling -----------------------------------------------------------------------------

    def force(self, *faults: str) -> None:
        """The next requests get these faults, in order, before the schedule resumes."""
        with self._lock:
            self._forced.extend(faults)

    def _next_fault(self) -> str:
        with self._lock:
            if self._forced:
                fault = self._forced.popleft()
            elif self._rng.random() < self.rate:
                names = list(self.weights)
                fault = self._rng.choices(names, [self.weights[n] for n in names])[0]
            else:
                fault = "ok"
            self.served[fault] += 1
        return fault

    def deployment(self, tag: str, *, protocol: str = "openai", input_usd_per_mtok: float = 0.1,
                   output_usd_per_mtok: float = 0.2, context_window: int = 16384) -> Deployment:
        """A priced deployment named `tag` that this server answers for."""
        provider = "ollama" if protocol == "ollama" else "openai-compatible"
        base = f"{self.base}/{tag}" if provider == "ollama" else f"{self.base}/{tag}/v1"
        return Deployment(
            name=tag, provider=provider, variant="starcoder2-3b", model="starcoder2:3b",
            context_window=context_window, base_url=base, input_usd_per_mtok=input_usd_per_mtok,
            output_usd_per_mtok=output_usd_per_mtok, pricing="serverless",
            capabilities=frozenset({"completion", "fim", "streaming", "chat"}),
            source="tests/faults/fault_server.py",
        )

    # -- answering ------------------------------------------------------------------------------

    def _reply(self, request: web.Request, body: dict[str, Any]) -> tuple[str, int, int, str]:
        tag = request.match_info["tag"]
        limit = body.get("max_tokens") or (body.get("options") or {}).get("num_predict") or 16
        n = max(1, min(int(limit), 6))
        with self._lock:
            k = self.replies = self.replies + 1
        rid = f"{tag}-{k}"
        text = " ".join([f"[{rid}]", *(_WORDS[(k + i) % 8] for i in range(n - 1))])
        prompt = len(str(body.get("prompt", "")).encode()) // 4
        return text, max(1, prompt), n, rid

    async def _stats(self, request: web.Request) -> web.StreamResponse:
        """What was served so far, by fault (for a server in another process)."""
        with self._lock:
            return web.json_response(dict(self.served))

    async def _openai(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        fault = self._next_fault()
        early = await self._early(request, fault)
        if early is not None:
            return early
        text, prompt, completion, rid = self._reply(request, body)
        usage = None if fault == "no_usage" else {
            "prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}
        if not body.get("stream"):
            payload: dict[str, Any] = {"id": rid, "object": "text_completion",
                                       "model": body.get("model"),
                                       "choices": [{"index": 0, "text": text,
                                                    "finish_reason": "stop"}]}
            if usage:
                payload["usage"] = usage
            if fault == "error_in_200":
                payload = {"error": {"message": "internal failure", "code": 500}}
            return await self._whole(request, fault, _json_bytes(payload), "application/json")
        words = text.split(" ")
        events = [{"id": rid, "model": body.get("model"), "choices": [
            {"index": 0, "text": (" " if i else "") + w,
             "finish_reason": "stop" if i == len(words) - 1 else None}]}
            for i, w in enumerate(words)]
        if usage:
            events.append({"id": rid, "choices": [], "usage": usage})
        lines = [b"data: " + _json_bytes(e) + b"\n\n" for e in events]
        lines.append(b"data: [DONE]\n\n")
        return await self._stream(request, fault, lines, "text/event-stream",
                                  b'data: {"error": {"message": "boom", "code": 500}}\n\n')

    async def _ollama(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        fault = self._next_fault()
        early = await self._early(request, fault)
        if early is not None:
            return early
        text, prompt, completion, _ = self._reply(request, body)
        final: dict[str, Any] = {"model": body.get("model"), "response": "", "done": True,
                                 "done_reason": "stop"}
        if fault != "no_usage":
            final.update(prompt_eval_count=prompt, eval_count=completion)
        if body.get("stream") is False:
            payload = {**final, "response": text}
            if fault == "error_in_200":
                payload = {"error": "an error was encountered while running the model"}
            return await self._whole(request, fault, _json_bytes(payload), "application/json")
        words = text.split(" ")
        lines = [_json_bytes({"model": body.get("model"), "response": (" " if i else "") + w,
                              "done": False}) + b"\n" for i, w in enumerate(words)]
        lines.append(_json_bytes(final) + b"\n")
        error = b'{"error": "an error was encountered while running the model"}\n'
        return await self._stream(request, fault, lines, "application/x-ndjson", error)

    async def _early(self, request: web.Request, fault: str) -> web.StreamResponse | None:
        """Faults that happen before any answer."""
        if fault in ("429_retry_after", "429_bare", "500", "503"):
            status = int(fault[:3])
            headers = {"retry-after": "0"} if fault == "429_retry_after" else {}
            return web.json_response({"error": {"message": f"injected {status}",
                                                "type": "injected"}},
                                     status=status, headers=headers)
        if fault == "echo_key":
            # A provider that quotes the credentials it was sent back in its error message.
            sent = f"{request.headers.get('authorization')} {request.headers.get('x-api-key')}"
            return web.json_response({"error": {"message": f"invalid credentials: {sent}",
                                                "type": "invalid_api_key"}}, status=401)
        if fault == "hang":
            await asyncio.sleep(self.hang_s)
            return web.json_response({"error": {"message": "too late"}}, status=504)
        if fault == "reset_early":
            _reset(request)
            return web.Response()  # never sent: the connection is gone
        return None

    async def _whole(self, request: web.Request, fault: str, data: bytes,
                     content_type: str) -> web.StreamResponse:
        if fault == "malformed":
            data = data[: len(data) // 2] + b"<html>oops"
        resp = web.StreamResponse(headers={"content-type": content_type})
        resp.content_length = len(data)
        await resp.prepare(request)
        if fault == "reset_mid":
            await resp.write(data[: len(data) // 2])
            await asyncio.sleep(0.01)
            _reset(request)
            return resp
        await self._send(resp, fault, data)
        await resp.write_eof()
        return resp

    async def _stream(self, request: web.Request, fault: str, lines: list[bytes],
                      content_type: str, error_line: bytes) -> web.StreamResponse:
        if fault == "malformed":
            lines.insert(1, error_line.replace(b'{"error"', b"{not json"))
        elif fault == "error_in_200":
            lines.insert(1, error_line)
        elif fault == "cut":
            lines = lines[: len(lines) // 2]
        resp = web.StreamResponse(headers={"content-type": content_type})
        await resp.prepare(request)
        for i, line in enumerate(lines):
            if fault == "reset_mid" and i == len(lines) // 2:
                await asyncio.sleep(0.01)
                _reset(request)
                return resp
            await self._send(resp, fault, line)
        await resp.write_eof()
        return resp

    async def _send(self, resp: web.StreamResponse, fault: str, data: bytes) -> None:
        if fault != "drip":
            await resp.write(data)
            return
        for i in range(len(data)):
            await resp.write(data[i:i + 1])
            await asyncio.sleep(self.drip_s)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _hung_up_ok(handler: Handler) -> Handler:
    """Clients that give up mid-answer (deadlines, cancelled streams) are part of the tests."""

    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except ConnectionResetError:
            return web.Response(status=499)

    return handle


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _reset(request: web.Request) -> None:
    """Close with a TCP RST (SO_LINGER 0), as a crashing server or a load balancer would."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    return sock


class SpawnedFaultServer:
    """The same server in a process of its own, for measurements that must see only the
    client's threads, descriptors and memory (leak checks, the soak)::

        with SpawnedFaultServer(seed=1, rate=0.05) as server:
            dep = server.deployment("a")
    """

    def __init__(self, *, seed: int = 0, rate: float = 0.0, no_slow: bool = True,
                 drip_s: float = 0.2, hang_s: float = 30.0):
        self._argv = [sys.executable, __file__, "--seed", str(seed), "--rate", str(rate),
                      "--drip-s", str(drip_s), "--hang-s", str(hang_s)]
        if no_slow:
            self._argv.append("--no-slow")
        self._proc: subprocess.Popen[str] | None = None
        self.base = ""

    def __enter__(self) -> SpawnedFaultServer:
        self._proc = subprocess.Popen(self._argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      text=True)
        assert self._proc.stdout is not None
        self.base = self._proc.stdout.readline().strip()
        if not self.base.startswith("http://"):
            self.__exit__()
            raise RuntimeError("the fault server process did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.close()  # the server stops at end of input
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()

    def deployment(self, tag: str, **kwargs: Any) -> Deployment:
        return FaultServer.deployment(self, tag, **kwargs)  # type: ignore[arg-type]

    def stats(self) -> dict[str, int]:
        import urllib.request

        with urllib.request.urlopen(self.base + "/stats", timeout=5) as resp:
            return dict(json.loads(resp.read()))


def _main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Serve faults until standard input ends.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rate", type=float, default=0.0)
    parser.add_argument("--no-slow", action="store_true", help="leave out hangs and drips")
    parser.add_argument("--drip-s", type=float, default=0.2)
    parser.add_argument("--hang-s", type=float, default=30.0)
    args = parser.parse_args()
    faults = {f: 1.0 for f in FAULTS if not (args.no_slow and f in ("hang", "drip"))}
    with FaultServer(seed=args.seed, rate=args.rate, faults=faults, drip_s=args.drip_s,
                     hang_s=args.hang_s) as server:
        print(server.base, flush=True)
        sys.stdin.read()


def faults_of(served: collections.Counter[str]) -> Iterator[tuple[str, int]]:
    """The injected faults (not the good answers) and how many of each, for reports."""
    return ((k, v) for k, v in sorted(served.items()) if k != "ok")


if __name__ == "__main__":
    _main()
