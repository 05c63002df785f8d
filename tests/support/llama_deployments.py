"""Deployments and raw HTTP calls for the tests that route to a real llama-server.

The servers come from tests/real_servers/conftest.py: `llama_server` (random model, `-c 2048`),
`llama_server_constant` (every token is " x") and `start_llama_server(model, *args)` for others.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import httpx

from starcoder_router import Catalog, Deployment, RetryPolicy, Router, TokenCounter

PROMPT = "def hello_world():\n    "
PREFIX, SUFFIX = "def add(a, b):\n    ", "\n\nprint(add(1, 2))\n"
PSM = f"<fim_prefix>{PREFIX}<fim_suffix>{SUFFIX}<fim_middle>"
# About 1,500 tokens of code: more than a 1,024-token server holds, less than a 2,048 one.
LONG_PROMPT = "    total = accumulate(total, item, weight=3)\n" * 120

Api = Literal["openai", "native"] | None


def deployment(server: Any, *, api: Api = None, name: str = "", window: int | None = None
               ) -> Deployment:
    """A deployment for `server`; `window` overrides the context window it really has."""
    return Deployment(
        name=name, provider="llamacpp", variant="starcoder2-3b", model=server.model_id,
        context_window=window or server.n_ctx, base_url=server.base_url, api=api,
        capabilities=frozenset({"completion", "fim", "streaming", "structured_output"}),
    )


def router_kwargs(counter: TokenCounter, *deps: Deployment) -> dict[str, Any]:
    return {"catalog": Catalog.default().with_deployments(*deps), "env": {},
            "retry": RetryPolicy(max_retries=0), "tokenizer": counter}


def sync_router(counter: TokenCounter, *deps: Deployment) -> Router:
    return Router(**router_kwargs(counter, *deps))


def raw_post(server: Any, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """The server's own answer, without our code in between."""
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        response = client.post(path, json=body)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def slot_busy(server: Any) -> bool:
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        return bool(client.get("/slots").json()[0]["is_processing"])


def seconds_until_idle(server: Any, limit: float = 10.0) -> float:
    """How long the server's only slot stays busy from now (fails past `limit`)."""
    started = time.monotonic()
    while slot_busy(server):
        assert time.monotonic() - started < limit, f"slot still busy after {limit} s"
        time.sleep(0.02)
    return time.monotonic() - started
