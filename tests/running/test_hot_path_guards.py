"""What the request path builds once or skips stays correct: headers built once per endpoint
are handed out as fresh dicts, and a store with async booking of its own is still awaited."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import httpx
import respx

from starcoder_router import AsyncRouter, Catalog, CostPolicy, Deployment, MemoryStore
from starcoder_router._providers.base import Provider
from starcoder_router._providers.call import Endpoint
from starcoder_router._providers.llamacpp import LlamaCpp
from starcoder_router._secrets import Secret


def test_headers_are_a_fresh_dict_on_every_call() -> None:
    call: Any = SimpleNamespace(endpoint=Endpoint("vllm", "http://h/v1", Secret("k-1"),
                                                  headers=(("x-team", "a"),)))
    first = Provider().headers(call, stream=False)
    first["x-added"] = "1"
    second = Provider().headers(call, stream=False)
    assert second == {"content-type": "application/json", "accept": "application/json",
                      "authorization": "Bearer k-1", "x-team": "a"}
    # A subclass that adds to them (llama.cpp closes its streams) changes its own copy only.
    assert LlamaCpp().headers(call, stream=True)["connection"] == "close"
    assert "connection" not in Provider().headers(call, stream=True)
    other: Any = SimpleNamespace(endpoint=Endpoint("vllm", "http://h/v1", Secret("k-2")))
    assert Provider().headers(other, stream=False)["authorization"] == "Bearer k-2"


class AsyncBookingStore(MemoryStore):
    """A store whose async booking does more than call the sync one."""

    def __init__(self) -> None:
        super().__init__()
        self.async_books = 0

    async def arecord(self, *args: Any, **kw: Any) -> None:
        self.async_books += 1
        self.record(*args, **kw)


async def test_a_store_with_its_own_async_booking_is_awaited() -> None:
    dep = Deployment(provider="vllm", variant="starcoder2-3b", model="m",
                     context_window=16384, base_url="http://127.0.0.1:9/v1")
    store = AsyncBookingStore()
    reply = {"id": "r", "choices": [{"index": 0, "text": "x", "finish_reason": "stop"}],
             "usage": {"prompt_tokens": 3, "completion_tokens": 1}}
    with respx.mock(assert_all_called=False) as mock:
        mock.post("http://127.0.0.1:9/v1/completions").mock(
            return_value=httpx.Response(200, json=reply))
        async with AsyncRouter(catalog=Catalog.default().with_deployments(dep),
                               policy=CostPolicy(allow_providers={"vllm"}), store=store,
                               transport="httpx", tokenizer=False) as router:
            await router.complete(prompt="def f():", max_tokens=4)
    assert store.async_books == 1 and len(store.ledger()) == 1
