"""The client stacks under test, each a small adapter with the same four methods.

Sync stacks have `complete()`, `stream(n)` (yields each text chunk) and `close()`; async stacks
have `acomplete()`, `astream(n)` and `aclose()`. Library imports happen inside the constructors,
so this module imports nothing but the standard library and loads in every benchmark virtualenv.

Every stack sends the same request to the mock server: model `bench-model`, prompt
`def fib(n):`, `max_tokens` 16 (streams: `max_tokens` = the chunk count), and does the least a
caller must do to get the text out (raw stacks parse the JSON; SSE lines are decoded one by one).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

MODEL = "bench-model"
PROMPT = "def fib(n):"
MAX_TOKENS = 16
CONCURRENCY = 64


@dataclass(frozen=True)
class Ctx:
    base: str  # http://127.0.0.1:PORT
    concurrency: int = CONCURRENCY

    @property
    def completions(self) -> str:
        return self.base + "/v1/completions"

    def payload(self, n: int = MAX_TOKENS, *, stream: bool = False) -> dict:
        body: dict = {"model": MODEL, "prompt": PROMPT, "max_tokens": n}
        if stream:
            body["stream"] = True
        return body


@dataclass(frozen=True)
class Stack:
    name: str
    label: str
    env: str  # "project" or "litellm": which virtualenv runs it
    kind: str  # "sync" or "async"
    factory: str  # class name in this module
    imports: tuple[str, ...]
    floor: str | None = None  # the stack its ratios are taken against
    modes: tuple[str, ...] = ("complete", "stream")
    notes: str = ""
    requires: tuple[str, ...] = field(default=())  # public names starcoder_router must export


def _sse_texts(lines: Iterator[str]) -> Iterator[str]:
    for line in lines:
        if line.startswith("data: ") and line != "data: [DONE]":
            for choice in json.loads(line[6:])["choices"]:
                yield choice["text"]


# --- raw sync -----------------------------------------------------------------------------


class HttpxSync:
    def __init__(self, ctx: Ctx) -> None:
        import httpx

        self.ctx = ctx
        self.client = httpx.Client()
        self.payload = ctx.payload()

    def complete(self) -> str:
        return self.client.post(self.ctx.completions, json=self.payload).json()["choices"][0][
            "text"
        ]

    def stream(self, n: int) -> Iterator[str]:
        with self.client.stream("POST", self.ctx.completions,
                                json=self.ctx.payload(n, stream=True)) as r:
            yield from _sse_texts(r.iter_lines())

    def close(self) -> None:
        self.client.close()


class HttpxOllamaSync:
    """Raw NDJSON from Ollama's `/api/generate`: the floor for the Ollama stream."""

    def __init__(self, ctx: Ctx) -> None:
        import httpx

        self.ctx = ctx
        self.client = httpx.Client()

    def complete(self) -> str:
        body = {"model": MODEL, "prompt": PROMPT, "stream": False,
                "options": {"num_predict": MAX_TOKENS}}
        return self.client.post(self.ctx.base + "/api/generate", json=body).json()["response"]

    def stream(self, n: int) -> Iterator[str]:
        body = {"model": MODEL, "prompt": PROMPT, "options": {"num_predict": n}}
        with self.client.stream("POST", self.ctx.base + "/api/generate", json=body) as r:
            for line in r.iter_lines():
                if line:
                    d = json.loads(line)
                    if not d["done"]:
                        yield d["response"]

    def close(self) -> None:
        self.client.close()


class RawSocketSync:
    """A blocking socket with pre-built request bytes: the least a client can cost. Used to
    measure the mock server's own CPU per request, not as a floor for ratios."""

    def __init__(self, ctx: Ctx) -> None:
        import socket
        from urllib.parse import urlsplit

        u = urlsplit(ctx.base)
        self.sock = socket.create_connection((u.hostname, u.port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

        def request(body: dict) -> bytes:
            data = json.dumps(body).encode()
            return (b"POST /v1/completions HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json"
                    b"\r\nContent-Length: %d\r\n\r\n%s" % (u.netloc.encode(), len(data), data))

        self.request = request
        self.plain = request(ctx.payload())
        self.ctx = ctx

    def _read_head(self) -> tuple[bytes, int | None]:
        while b"\r\n\r\n" not in self.buf:
            self.buf += self.sock.recv(65536)
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                return head, int(value)
        return head, None

    def complete(self) -> str:
        self.sock.sendall(self.plain)
        _, length = self._read_head()
        assert length is not None
        while len(self.buf) < length:
            self.buf += self.sock.recv(65536)
        body, self.buf = self.buf[:length], self.buf[length:]
        return json.loads(body)["choices"][0]["text"]

    def stream(self, n: int) -> Iterator[str]:
        self.sock.sendall(self.request(self.ctx.payload(n, stream=True)))
        self._read_head()
        while not self.buf.endswith(b"0\r\n\r\n"):
            self.buf += self.sock.recv(65536)
        body, self.buf = self.buf, b""
        # One yield per event, without decoding: this stack measures the server, not parsing.
        for _ in range(body.count(b"data: ") - 2):
            yield ""

    def close(self) -> None:
        self.sock.close()


# --- raw async ----------------------------------------------------------------------------


class AiohttpAsync:
    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx
        self.payload = ctx.payload()

    async def start(self) -> None:
        import aiohttp

        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=max(100, self.ctx.concurrency))
        )

    async def acomplete(self) -> str:
        async with self.session.post(self.ctx.completions, json=self.payload) as r:
            return (await r.json())["choices"][0]["text"]

    async def astream(self, n: int) -> AsyncIterator[str]:
        async with self.session.post(self.ctx.completions,
                                     json=self.ctx.payload(n, stream=True)) as r:
            async for raw in r.content:
                line = raw.rstrip(b"\r\n")
                if line.startswith(b"data: ") and line != b"data: [DONE]":
                    for choice in json.loads(line[6:])["choices"]:
                        yield choice["text"]

    async def aclose(self) -> None:
        await self.session.close()


class _HttpxAsyncBase:
    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx
        self.payload = ctx.payload()

    async def acomplete(self) -> str:
        r = await self.client.post(self.ctx.completions, json=self.payload)
        return r.json()["choices"][0]["text"]

    async def astream(self, n: int) -> AsyncIterator[str]:
        async with self.client.stream("POST", self.ctx.completions,
                                      json=self.ctx.payload(n, stream=True)) as r:
            async for line in r.aiter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    for choice in json.loads(line[6:])["choices"]:
                        yield choice["text"]

    async def aclose(self) -> None:
        await self.client.aclose()


class HttpxAsync(_HttpxAsyncBase):
    async def start(self) -> None:
        import httpx

        # httpx keeps only 20 idle connections by default; at c=64 the rest would be reopened
        # on every request, so the floor gets a pool as wide as the concurrency.
        c = self.ctx.concurrency
        self.client = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=max(100, c), max_keepalive_connections=c)
        )


class HttpxAiohttpAsync(_HttpxAsyncBase):
    async def start(self) -> None:
        import aiohttp
        import httpx
        from httpx_aiohttp import AiohttpTransport

        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=max(100, self.ctx.concurrency))
        )
        self.client = httpx.AsyncClient(transport=AiohttpTransport(client=session))


# --- openai -------------------------------------------------------------------------------


class OpenAISync:
    def __init__(self, ctx: Ctx) -> None:
        from openai import OpenAI

        self.client = OpenAI(base_url=ctx.base + "/v1", api_key="bench", max_retries=0)

    def complete(self) -> str:
        r = self.client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=MAX_TOKENS)
        return r.choices[0].text

    def stream(self, n: int) -> Iterator[str]:
        with self.client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=n,
                                            stream=True) as s:
            for chunk in s:
                for choice in chunk.choices:
                    yield choice.text

    def close(self) -> None:
        self.client.close()


class OpenAIAsync:
    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx

    async def start(self) -> None:
        from openai import AsyncOpenAI

        self.client = AsyncOpenAI(base_url=self.ctx.base + "/v1", api_key="bench",
                                  max_retries=0)

    async def acomplete(self) -> str:
        r = await self.client.completions.create(model=MODEL, prompt=PROMPT,
                                                 max_tokens=MAX_TOKENS)
        return r.choices[0].text

    async def astream(self, n: int) -> AsyncIterator[str]:
        s = await self.client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=n,
                                                 stream=True)
        async with s:
            async for chunk in s:
                for choice in chunk.choices:
                    yield choice.text

    async def aclose(self) -> None:
        await self.client.close()


class OpenAIAiohttpAsync(OpenAIAsync):
    """`AsyncOpenAI` over its optional aiohttp transport (`DefaultAioHttpClient`)."""

    async def start(self) -> None:
        from openai import AsyncOpenAI, DefaultAioHttpClient

        self.client = AsyncOpenAI(base_url=self.ctx.base + "/v1", api_key="bench",
                                  max_retries=0, http_client=DefaultAioHttpClient())


# --- litellm ------------------------------------------------------------------------------

LITELLM_MODEL = "text-completion-openai/" + MODEL


def _litellm():  # type: ignore[no-untyped-def]
    import litellm

    litellm.suppress_debug_info = True
    litellm.telemetry = False
    return litellm


def _litellm_texts(chunk) -> Iterator[str]:  # type: ignore[no-untyped-def]
    for choice in chunk.choices:
        text = getattr(choice, "text", None)
        if text is None:
            delta = getattr(choice, "delta", None)
            text = getattr(delta, "content", None)
        if text:
            yield text


class LitellmSync:
    def __init__(self, ctx: Ctx) -> None:
        self.litellm = _litellm()
        self.kw = {"model": LITELLM_MODEL, "api_base": ctx.base + "/v1", "api_key": "bench"}

    def complete(self) -> str:
        r = self.litellm.text_completion(prompt=PROMPT, max_tokens=MAX_TOKENS, **self.kw)
        return r.choices[0].text

    def stream(self, n: int) -> Iterator[str]:
        for chunk in self.litellm.text_completion(prompt=PROMPT, max_tokens=n, stream=True,
                                                  **self.kw):
            yield from _litellm_texts(chunk)

    def close(self) -> None:
        pass


class LitellmAsync:
    def __init__(self, ctx: Ctx) -> None:
        self.litellm = _litellm()
        self.kw = {"model": LITELLM_MODEL, "api_base": ctx.base + "/v1", "api_key": "bench"}

    async def start(self) -> None:
        pass

    async def acomplete(self) -> str:
        r = await self.litellm.atext_completion(prompt=PROMPT, max_tokens=MAX_TOKENS, **self.kw)
        return r.choices[0].text

    async def astream(self, n: int) -> AsyncIterator[str]:
        s = await self.litellm.atext_completion(prompt=PROMPT, max_tokens=n, stream=True,
                                                **self.kw)
        async for chunk in s:
            for text in _litellm_texts(chunk):
                yield text

    async def aclose(self) -> None:
        pass


class LitellmSharedSync(LitellmSync):
    """LiteLLM with `litellm.client_session` set once to a client of LiteLLM's own default kind,
    so calls reuse one connection pool (by default each call builds a new client)."""

    def __init__(self, ctx: Ctx) -> None:
        super().__init__(ctx)
        from litellm.llms.openai.common_utils import BaseOpenAILLM

        self.litellm.client_session = BaseOpenAILLM.get_sync_http_client()


class LitellmSharedAsync(LitellmAsync):
    """`litellm.aclient_session` set once, as `LitellmSharedSync` does for sync calls."""

    async def start(self) -> None:
        from litellm.llms.openai.common_utils import BaseOpenAILLM

        self.litellm.aclient_session = BaseOpenAILLM.get_async_http_client()


# litellm 1.110.2's sync Router.text_completion passes the group name on as the provider model
# (`{**litellm_params, **kwargs}` with the caller's `model` last), so a group named anything but
# the provider model fails with "LLM Provider NOT provided"; naming the group after the model
# works for both the sync and the async call.
LITELLM_GROUP = LITELLM_MODEL


def _litellm_router(ctx: Ctx):  # type: ignore[no-untyped-def]
    litellm = _litellm()
    return litellm.Router(model_list=[{
        "model_name": LITELLM_GROUP,
        "litellm_params": {"model": LITELLM_MODEL, "api_base": ctx.base + "/v1",
                           "api_key": "bench"},
    }])


class LitellmRouterSync:
    def __init__(self, ctx: Ctx) -> None:
        self.router = _litellm_router(ctx)

    def complete(self) -> str:
        r = self.router.text_completion(model=LITELLM_GROUP, prompt=PROMPT, max_tokens=MAX_TOKENS)
        return r.choices[0].text

    def stream(self, n: int) -> Iterator[str]:
        for chunk in self.router.text_completion(model=LITELLM_GROUP, prompt=PROMPT, max_tokens=n,
                                                 stream=True):
            yield from _litellm_texts(chunk)

    def close(self) -> None:
        pass


class LitellmRouterAsync:
    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx

    async def start(self) -> None:
        self.router = _litellm_router(self.ctx)

    async def acomplete(self) -> str:
        r = await self.router.atext_completion(model=LITELLM_GROUP, prompt=PROMPT,
                                               max_tokens=MAX_TOKENS)
        return r.choices[0].text

    async def astream(self, n: int) -> AsyncIterator[str]:
        s = await self.router.atext_completion(model=LITELLM_GROUP, prompt=PROMPT, max_tokens=n,
                                               stream=True)
        async for chunk in s:
            for text in _litellm_texts(chunk):
                yield text

    async def aclose(self) -> None:
        pass


# --- starcoder-router ---------------------------------------------------------------------


def starcoder_provider(wanted: str) -> str:
    """`wanted` when the package has that provider's adapter yet; vLLM falls back to the generic
    OpenAI-compatible provider (the same wire format) until its adapter lands."""
    import importlib.util

    if importlib.util.find_spec(f"starcoder_router._providers.{wanted}") is not None:
        return wanted
    if wanted == "vllm":
        return "openai-compatible"
    raise ImportError(f"starcoder_router has no {wanted!r} provider adapter yet")


def _starcoder_kwargs(ctx: Ctx, wanted: str = "vllm") -> tuple[dict, str]:
    from starcoder_router import Catalog, CostPolicy, Deployment

    provider = starcoder_provider(wanted)
    base = ctx.base if provider == "ollama" else ctx.base + "/v1"
    dep = Deployment(provider=provider, variant="starcoder2-3b", model=MODEL,
                     context_window=16384, base_url=base)
    return {"catalog": Catalog.default().with_deployments(dep),
            "policy": CostPolicy(allow_providers={provider})}, provider


def _chunk_text(chunk: object) -> str:
    text = getattr(chunk, "text", chunk)
    return text if isinstance(text, str) else str(text)


class StarcoderSync:
    provider = "vllm"

    def __init__(self, ctx: Ctx) -> None:
        from starcoder_router import Router

        kwargs, self.provider_used = _starcoder_kwargs(ctx, self.provider)
        self.router = Router(**kwargs)

    def complete(self) -> str:
        return self.router.complete(prompt=PROMPT, max_tokens=MAX_TOKENS).text

    def stream(self, n: int) -> Iterator[str]:
        with self.router.stream(prompt=PROMPT, max_tokens=n) as s:
            for chunk in s:
                text = _chunk_text(chunk)
                if text:
                    yield text

    def close(self) -> None:
        close = getattr(self.router, "close", None)
        if close is not None:
            close()


class StarcoderOllamaSync(StarcoderSync):
    provider = "ollama"


class StarcoderAsync:
    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx

    async def start(self) -> None:
        from starcoder_router import AsyncRouter

        kwargs, self.provider_used = _starcoder_kwargs(self.ctx)
        self.router = AsyncRouter(**kwargs)
        enter = getattr(self.router, "__aenter__", None)
        if enter is not None:
            await enter()

    async def acomplete(self) -> str:
        return (await self.router.complete(prompt=PROMPT, max_tokens=MAX_TOKENS)).text

    async def astream(self, n: int) -> AsyncIterator[str]:
        s = self.router.stream(prompt=PROMPT, max_tokens=n)
        if hasattr(s, "__await__"):
            s = await s
        async with s:
            async for chunk in s:
                text = _chunk_text(chunk)
                if text:
                    yield text

    async def aclose(self) -> None:
        exit_ = getattr(self.router, "__aexit__", None)
        if exit_ is not None:
            await exit_(None, None, None)


_SC_SYNC = ("Router", "Catalog", "Deployment", "CostPolicy")
_SC_ASYNC = ("AsyncRouter", "Catalog", "Deployment", "CostPolicy")

STACKS: tuple[Stack, ...] = (
    Stack("httpx", "raw httpx.Client", "project", "sync", "HttpxSync", ("httpx",),
          floor=None),
    Stack("openai", "openai.OpenAI", "project", "sync", "OpenAISync", ("openai",),
          floor="httpx"),
    Stack("litellm", "litellm.text_completion", "litellm", "sync", "LitellmSync",
          ("litellm",), floor="httpx"),
    Stack("litellm-shared", "litellm.text_completion, shared client_session", "litellm", "sync",
          "LitellmSharedSync", ("litellm",), floor="httpx"),
    Stack("litellm-router", "litellm.Router.text_completion", "litellm", "sync",
          "LitellmRouterSync", ("litellm",), floor="httpx"),
    Stack("starcoder", "starcoder_router.Router", "project", "sync", "StarcoderSync",
          ("starcoder_router",), floor="httpx", requires=_SC_SYNC),
    Stack("aiohttp", "raw aiohttp.ClientSession", "project", "async", "AiohttpAsync",
          ("aiohttp",), floor=None),
    Stack("httpx-async", "raw httpx.AsyncClient", "project", "async", "HttpxAsync",
          ("httpx",), floor="aiohttp"),
    Stack("httpx-aiohttp", "httpx.AsyncClient + AiohttpTransport", "project", "async",
          "HttpxAiohttpAsync", ("httpx", "httpx_aiohttp"), floor="aiohttp"),
    Stack("openai-async", "openai.AsyncOpenAI", "project", "async", "OpenAIAsync",
          ("openai",), floor="aiohttp"),
    Stack("openai-async-aiohttp", "openai.AsyncOpenAI + DefaultAioHttpClient", "project",
          "async", "OpenAIAiohttpAsync", ("openai",), floor="aiohttp"),
    Stack("litellm-async", "litellm.atext_completion", "litellm", "async", "LitellmAsync",
          ("litellm",), floor="aiohttp"),
    Stack("litellm-shared-async", "litellm.atext_completion, shared aclient_session",
          "litellm", "async", "LitellmSharedAsync", ("litellm",), floor="aiohttp"),
    Stack("litellm-router-async", "litellm.Router.atext_completion", "litellm", "async",
          "LitellmRouterAsync", ("litellm",), floor="aiohttp"),
    Stack("starcoder-async", "starcoder_router.AsyncRouter", "project", "async",
          "StarcoderAsync", ("starcoder_router",), floor="aiohttp", requires=_SC_ASYNC),
    Stack("raw-socket", "blocking socket, pre-built request", "project", "sync",
          "RawSocketSync", ("socket",), floor=None,
          notes="measures the mock server's own cost; not a client"),
    Stack("httpx-ollama", "raw httpx.Client, Ollama NDJSON", "project", "sync",
          "HttpxOllamaSync", ("httpx",), floor=None, modes=("stream",)),
    Stack("starcoder-ollama", "starcoder_router.Router, Ollama", "project", "sync",
          "StarcoderOllamaSync", ("starcoder_router",), floor="httpx-ollama",
          modes=("stream",), requires=_SC_SYNC),
)

BY_NAME = {s.name: s for s in STACKS}
