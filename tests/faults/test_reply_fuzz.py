"""Reply fuzzing: mutated JSON bodies and SSE / NDJSON streams for every provider parser, sync
and async, through the real routers.

Each mutated reply either reads as a valid answer (costed within what its request allows) or
fails as a `ProviderError` that falls back to a second deployment, so every plain request
succeeds; a stream may also end in `StreamInterruptedError` once text has reached the caller.
Nothing else may escape, no budget hold may stay open, and no cost may be negative, NaN or
absurd. The replies come from an in-memory transport, so thousands run in seconds.
"""

from __future__ import annotations

import asyncio
import copy
import json
import random
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from fault_support import TrackingStore, assert_costed, budget_policy

from starcoder_router import (
    AsyncRouter,
    Catalog,
    Completion,
    Deployment,
    FakeClock,
    HealthPolicy,
    RetryPolicy,
    Router,
    StreamInterruptedError,
)
from starcoder_router._transports.base import WireRequest, WireResponse, split_lines

ROUNDS = 40
MAX_TOKENS = 8
DEEP = "__DEEP__"
_HOSTILE: list[Any] = [None, True, False, "12", "", {}, [], 1e308, float("nan"), float("inf"),
                       -float("inf"), -5, 10**30, 3.5, "x" * 3000, [[["a"]]], {"a": {"b": 1}},
                       DEEP]

USAGE = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
OPENAI = (
    {"id": "c", "model": "m", "choices": [{"index": 0, "text": "hello world",
                                           "finish_reason": "stop"}], "usage": USAGE},
    [{"id": "c", "model": "m", "choices": [{"index": 0, "text": "hello", "finish_reason": None}]},
     {"id": "c", "choices": [{"index": 0, "text": " world", "finish_reason": "stop"}]},
     {"id": "c", "choices": [], "usage": USAGE}, "[DONE]"],
)
TGI_NATIVE = (
    {"generated_text": "hello world", "details": {"finish_reason": "eos_token",
                                                  "generated_tokens": 2}},
    [{"token": {"id": 1, "text": "hello", "special": False}, "details": None},
     {"token": {"id": 2, "text": " world", "special": False}, "generated_text": "hello world",
      "details": {"finish_reason": "eos_token", "generated_tokens": 2, "input_length": 3}}],
)
LLAMACPP_NATIVE = (
    {"content": "hello world", "stop": True, "stop_type": "eos", "tokens_evaluated": 3,
     "tokens_predicted": 2, "model": "m"},
    [{"content": "hello", "stop": False}, {"content": " world", "stop": False},
     {"content": "", "stop": True, "stop_type": "eos", "tokens_evaluated": 3,
      "tokens_predicted": 2}],
)
OLLAMA_NATIVE = (
    {"model": "m", "response": "hello world", "done": True, "done_reason": "stop",
     "prompt_eval_count": 3, "eval_count": 2},
    [{"model": "m", "response": "hello", "done": False},
     {"model": "m", "response": " world", "done": False},
     {"model": "m", "response": "", "done": True, "done_reason": "stop", "prompt_eval_count": 3,
      "eval_count": 2}],
)
# (provider, api, valid replies, stream framing)
PARSERS = [
    ("openai-compatible", None, OPENAI, "sse"),
    ("fireworks", None, OPENAI, "sse"),
    ("deepinfra", None, OPENAI, "sse"),
    ("vllm", None, OPENAI, "sse"),
    ("lmstudio", None, OPENAI, "sse"),
    ("tgi", "openai", OPENAI, "sse"),
    ("tgi", "native", TGI_NATIVE, "sse"),
    ("llamacpp", "openai", OPENAI, "sse"),
    ("llamacpp", "native", LLAMACPP_NATIVE, "sse"),
    ("ollama", "native", OLLAMA_NATIVE, "ndjson"),
    ("ollama", "openai", OPENAI, "sse"),
]
ENV = {"FIREWORKS_API_KEY": "fw-fuzz", "DEEPINFRA_API_KEY": "di-fuzz"}


# -- mutations ---------------------------------------------------------------------------------

def _paths(obj: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) \
        if isinstance(obj, list) else ()
    for key, value in items:
        yield from _paths(value, (*path, key))


def _mutated(rng: random.Random, obj: Any) -> bytes:
    """`obj` with one hostile change: a value swapped, a key dropped, or its bytes broken."""
    obj = copy.deepcopy(obj)
    path = rng.choice(list(_paths(obj)))
    roll = rng.random()
    if roll < 0.65:
        value = copy.deepcopy(rng.choice(_HOSTILE))
        if not path:
            obj = value
        else:
            parent = obj
            for key in path[:-1]:
                parent = parent[key]
            parent[path[-1]] = value
    elif roll < 0.85 and path:
        parent = obj
        for key in path[:-1]:
            parent = parent[key]
        del parent[path[-1]]
    data = _encode(obj)
    if roll >= 0.85:
        i = rng.randrange(len(data) + 1)
        data = rng.choice([data[:i], data[:i] + bytes([rng.randrange(256)]) + data[i:],
                           data[:i] + data[i + 1:]])
    return data


def _encode(obj: Any) -> bytes:
    text = obj if isinstance(obj, str) and obj == "[DONE]" else json.dumps(obj)
    return text.replace(json.dumps(DEEP), "[" * 100_000 + "]" * 100_000).encode()


def _stream(rng: random.Random, events: list[Any], framing: str) -> bytes:
    lines = [_encode(e) for e in events]
    i = rng.randrange(len(events))
    roll = rng.random()
    if roll < 0.7:
        lines[i] = _mutated(rng, events[i])
    elif roll < 0.8:
        del lines[i]
    elif roll < 0.9:
        lines.insert(i, lines[i])
    else:
        lines = lines[:i]  # cut short
    if framing == "ndjson":
        return b"".join(line + b"\n" for line in lines)
    return b"".join(b"data: " + line + b"\n\n" for line in lines)


# -- an in-memory transport --------------------------------------------------------------------

class _Handle:
    def __init__(self, body: bytes):
        self.status, self.headers, self._body = 200, {}, body

    def lines(self) -> Iterator[bytes]:
        size = max(1, len(self._body) // 3)
        return split_lines(iter([self._body[i:i + size]
                                 for i in range(0, len(self._body), size)]))

    def read(self) -> bytes:
        return self._body

    def close(self) -> None:
        pass

    async def alines(self) -> AsyncIterator[bytes]:
        for line in self.lines():
            yield line

    async def aread(self) -> bytes:
        return self._body

    async def aclose(self) -> None:
        pass


class MemoryTransport:
    """Answers the fuzzed deployment with `answer()`, the fallback with a valid reply."""

    def __init__(self, answer: Callable[[bool], bytes]):
        self.answer = answer

    def _body(self, request: WireRequest) -> bytes:
        stream = request.stream is not None
        if "fallback.invalid" in request.url:
            return _encode(OPENAI[0]) if not stream else b"".join(
                b"data: " + _encode(e) + b"\n\n" for e in OPENAI[1])
        return self.answer(stream)

    def send(self, request: WireRequest, **_: Any) -> WireResponse:
        return WireResponse(200, {}, self._body(request))

    def open(self, request: WireRequest, **_: Any) -> _Handle:
        return _Handle(self._body(request))

    def close(self) -> None:
        pass

    async def asend(self, request: WireRequest, **_: Any) -> WireResponse:
        return self.send(request)

    async def aopen(self, request: WireRequest, **_: Any) -> _Handle:
        return self.open(request)

    async def aclose(self) -> None:
        pass


def _catalog(provider: str, api: str | None) -> Catalog:
    caps = frozenset({"completion", "streaming", "fim"})
    fuzzed = Deployment(name="fuzzed", provider=provider, api=api, variant="starcoder2-15b",
                        model="m", context_window=16384, base_url="http://fuzz.invalid/v1",
                        input_usd_per_mtok=0.1, output_usd_per_mtok=0.2, pricing="serverless",
                        capabilities=caps)
    fallback = Deployment(name="fallback", provider="openai-compatible", variant="starcoder2-15b",
                          model="m", context_window=16384, base_url="http://fallback.invalid/v1",
                          input_usd_per_mtok=1.0, output_usd_per_mtok=2.0,
                          pricing="serverless", capabilities=caps)
    return Catalog.default().with_deployments(fuzzed, fallback)


def _router_args(provider: str, api: str | None, store: TrackingStore,
                 transport: MemoryTransport) -> dict[str, Any]:
    return dict(catalog=_catalog(provider, api),
                policy=budget_policy(provider, "openai-compatible"), store=store,
                tokenizer=False, env=ENV, clock=FakeClock(),
                retry=RetryPolicy(max_retries=0),
                health=HealthPolicy(failure_threshold=10**9, min_requests=10**9),
                transport=transport)


def _check(c: Completion, chunks: list[str] | None) -> None:
    assert_costed(c, MAX_TOKENS)
    if chunks is not None:
        assert "".join(chunks) == c.text  # what the caller read is what was costed
    if c.deployment.name == "fallback":
        assert c.text == "hello world"


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize(("provider", "api", "replies", "framing"), PARSERS,
                         ids=[f"{p}-{a or 'default'}" for p, a, _, _ in PARSERS])
def test_sync_parsers_survive_mutated_replies(provider: str, api: str | None,
                                              replies: tuple[Any, list[Any]], framing: str,
                                              stream: bool) -> None:
    rng = random.Random(f"{provider}-{api}-{stream}")
    transport = MemoryTransport(lambda s: _stream(rng, replies[1], framing) if s
                                else _mutated(rng, replies[0]))
    store = TrackingStore()
    router = Router(**_router_args(provider, api, store, transport))
    for _ in range(ROUNDS):
        if not stream:
            _check(router.complete(prompt="def f():", max_tokens=MAX_TOKENS), None)
            continue
        chunks: list[str] = []
        try:
            with router.stream(prompt="def f():", max_tokens=MAX_TOKENS) as s:
                for chunk in s:
                    chunks.append(chunk.text)
        except StreamInterruptedError as err:
            delivered = err.delivered_text
        else:
            assert s.completion is not None
            _check(s.completion, chunks)
            continue
        assert delivered == "".join(chunks)
    router.close()
    store.assert_balanced()


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize(("provider", "api", "replies", "framing"), PARSERS,
                         ids=[f"{p}-{a or 'default'}" for p, a, _, _ in PARSERS])
def test_async_parsers_survive_mutated_replies(provider: str, api: str | None,
                                               replies: tuple[Any, list[Any]], framing: str,
                                               stream: bool) -> None:
    rng = random.Random(f"async-{provider}-{api}-{stream}")
    transport = MemoryTransport(lambda s: _stream(rng, replies[1], framing) if s
                                else _mutated(rng, replies[0]))
    store = TrackingStore()

    async def run() -> None:
        router = AsyncRouter(**_router_args(provider, api, store, transport))
        for _ in range(ROUNDS):
            if not stream:
                _check(await router.complete(prompt="def f():", max_tokens=MAX_TOKENS), None)
                continue
            chunks: list[str] = []
            try:
                async with router.stream(prompt="def f():", max_tokens=MAX_TOKENS) as s:
                    async for chunk in s:
                        chunks.append(chunk.text)
            except StreamInterruptedError as err:
                delivered = err.delivered_text
            else:
                assert s.completion is not None
                _check(s.completion, chunks)
                continue
            assert delivered == "".join(chunks)
        await router.aclose()

    asyncio.run(run())
    store.assert_balanced()
