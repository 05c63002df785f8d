"""What every stand-in shares: a configurable behaviour, a token count, a scripted "model", and
an aiohttp server on 127.0.0.1 in a thread of its own.

The "model" writes a fixed token script, greedy whatever the sampler says: a line of code, a
`<file_sep>`, another file, then `<|endoftext|>`. What the server does with the special tokens
is the behaviour's `specials`:

* "match": rendered into the text that stops are matched on (TGI, LM Studio, Fireworks as we
  believe), so a `<file_sep>` stop fires;
* "shown": in the reply text, but stops are not matched on it;
* "hidden": left out of the text and of stop matching (vLLM's `skip_special_tokens`, llama.cpp
  unless the token is in `preserved_tokens`); `stop_token_ids` still fire.

Counting is StarCoder 2's own tokenizer (the file tests/conftest.py reads), so a
server's usage and the router's exact counts can be compared.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import re
import socket
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from aiohttp import web

from starcoder_router._routing.render import (
    SPECIAL_TOKEN_IDS,
    SPECIAL_TOKENS,
    escape_special_tokens,
)

_ROOT = Path(__file__).resolve().parents[3]
TOKENIZER_JSON = (Path(os.environ.get("STARCODER_ROUTER_SHARED", _ROOT.parent / "shared"))
                  / "data" / "starcoder2-tokenizer" / "tokenizer.json")

Specials = Literal["match", "shown", "hidden"]

EOS = "<|endoftext|>"
SCRIPT: tuple[str, ...] = ("\n", "x5", " =", " 5", "\n", "<file_sep>", "m6", ".py", "\n", "y",
                           " =", " 6", "\n", EOS)
JSON_SCRIPT: tuple[str, ...] = ("{", '"a"', ":", " 1", "}", EOS)

TOKEN_PATTERN = re.compile("|".join(map(re.escape, sorted(SPECIAL_TOKENS, key=len, reverse=True)))
                    + r"|\s*[^\s<]+|\s+|<")


@dataclass(frozen=True)
class Behaviour:
    """How one stand-in behaves; the defaults are the provider's documented behaviour."""

    model: str = "starcoder2"
    window: int = 16384
    max_stop: int | None = None
    specials: Specials = "match"
    usage_plain: bool = True
    usage_stream: bool = True
    bos_tokens: int = 0
    sentinels_as_text: bool = False
    rate_limited: int = 0  # the first N completion requests answer 429
    retry_after: str | None = None
    api_key: str | None = None
    structured: bool = True
    cost_per_mtok: tuple[float, float] | None = None  # reports usage.estimated_cost
    truncates: bool = False  # Ollama before `truncate: false`: keeps the window, says nothing
    refuses_control_regex: bool = False  # TGI: a regex with a control-character class is 422
    token_delay_s: float = 0.0  # before every streamed event
    first_token_delay_s: float = 0.0  # once more, before a stream's first event

    def but(self, **changes: Any) -> Behaviour:
        return replace(self, **changes)


def count(text: str, b: Behaviour) -> int:
    """The prompt's tokens as StarCoder 2's tokenizer counts them; with `sentinels_as_text`,
    as a server that reads control strings as plain text would."""
    if b.sentinels_as_text:
        text = escape_special_tokens(text)
    return len(_tokenizer().encode(text, add_special_tokens=False).ids)


@functools.cache
def _tokenizer() -> Any:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(TOKENIZER_JSON))


@dataclass
class Generation:
    tokens: list[str]
    text: str
    finish: Literal["stop", "length"]
    stop_hit: str | None = None


def generate(b: Behaviour, max_tokens: int, *, stops: Sequence[str] = (),
             stop_ids: Sequence[int] = (), preserved: Sequence[str] = (),
             structured: bool = False) -> Generation:
    """The scripted model's output under `b`'s stop rules."""
    script = JSON_SCRIPT if structured else SCRIPT
    out: list[str] = []
    text = matched = ""  # what the reply shows; what stops are matched against
    for i in range(max_tokens):
        tok = script[i % len(script)]
        out.append(tok)
        special = tok in SPECIAL_TOKEN_IDS
        if special and SPECIAL_TOKEN_IDS[tok] in stop_ids:
            return Generation(out, text, "stop", tok)
        if tok == EOS:
            return Generation(out, text, "stop")
        before = len(text)
        if not special or b.specials != "hidden" or tok in preserved:
            text += tok
        if not special or b.specials == "match" or tok in preserved:
            matched += tok
        for stop in stops:
            if matched.endswith(stop) or stop in matched[-len(tok) - len(stop):]:
                at = text.find(stop, max(0, before - len(stop)))
                return Generation(out, text[:at] if at >= 0 else text[:before], "stop", stop)
    return Generation(out, text, "length")


Handler = Callable[["StandIn", web.Request, dict[str, Any]], Awaitable[web.StreamResponse]]


@dataclass
class StandIn:
    """A provider stand-in on a loopback port. `received` keeps every request body."""

    provider: str
    behaviour: Behaviour
    routes: dict[str, Handler]  # path suffix -> handler
    received: list[dict[str, Any]] = field(default_factory=list)
    completions: int = 0  # completion requests past the key check
    requests: int = 0  # every request, refused or not
    answered: list[tuple[int, int]] = field(default_factory=list)  # usage of each reply sent
    _loop: asyncio.AbstractEventLoop | None = None
    _runner: web.AppRunner | None = None
    _thread: threading.Thread | None = None
    port: int = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> StandIn:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), daemon=True,
                                        name=f"stand-in-{self.provider}")
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the stand-in did not start")
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        self._loop = self._thread = None

    def __enter__(self) -> StandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _cleanup(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _serve(self, ready: threading.Event) -> None:
        loop = self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                     shutdown_timeout=0.5)
        loop.run_until_complete(self._runner.setup())
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        site = web.SockSite(self._runner, sock)
        loop.run_until_complete(site.start())
        self.port = sock.getsockname()[1]
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        b = self.behaviour
        self.requests += 1
        if b.api_key and request.headers.get("authorization") != f"Bearer {b.api_key}":
            return web.json_response({"error": {"message": "invalid API key"}}, status=401)
        try:
            body = await request.json() if request.can_read_body else {}
        except ValueError:
            return web.json_response({"error": "body is not JSON"}, status=400)
        self.received.append(body)
        for suffix, handler in self.routes.items():
            if request.path.endswith(suffix):
                self.completions += 1
                if self.completions <= b.rate_limited:
                    headers = {"retry-after": b.retry_after} if b.retry_after else {}
                    return web.json_response({"error": {"message": "rate limited"}},
                                             status=429, headers=headers)
                return await handler(self, request, body)
        return web.json_response({"error": f"no route {request.path}"}, status=404)


async def sse(request: web.Request, events: Sequence[Any], *, done: bool = True,
              delay: float = 0.0, first: float = 0.0) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await resp.prepare(request)
    if first:
        await asyncio.sleep(first)
    for event in events:
        if delay:
            await asyncio.sleep(delay)
        await resp.write(b"data: " + json.dumps(event).encode() + b"\n\n")
    if done:
        await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp


async def ndjson(request: web.Request, lines: Sequence[Any], delay: float = 0.0,
                 first: float = 0.0) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"content-type": "application/x-ndjson"})
    await resp.prepare(request)
    if first:
        await asyncio.sleep(first)
    for line in lines:
        if delay:
            await asyncio.sleep(delay)
        await resp.write(json.dumps(line).encode() + b"\n")
    await resp.write_eof()
    return resp
