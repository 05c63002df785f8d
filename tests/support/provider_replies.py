"""Helpers for the provider tests (fixtures live in providers/conftest.py): recorded replies, one
deployment per provider, and `ProviderDriver`, the `Driver` of support/router_driver.py with a
router per provider, so each test runs through `Router` and `AsyncRouter` with the same code.

Routers are isolated to one deployment, one attempt (`RetryPolicy(max_retries=0)`), a fake clock,
no tokenizer (the conservative estimate) and an explicit `env`, never the real environment.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import respx

from starcoder_router import (
    AsyncRouter,
    Catalog,
    CostPolicy,
    Deployment,
    FakeClock,
    RetryPolicy,
    Router,
)
from support.router_driver import Driver

FIXTURES = Path(__file__).resolve().parents[1] / "providers" / "fixtures"

ALL_CAPS = frozenset({"completion", "fim", "streaming", "structured_output"})

# One deployment per provider, as the tests address it.
DEPLOYMENTS: dict[str, Deployment] = {
    "fireworks": Deployment(provider="fireworks", variant="starcoder2-7b",
                            model="accounts/fireworks/models/starcoder2-7b",
                            context_window=16384, input_usd_per_mtok=0.2,
                            output_usd_per_mtok=0.2, capabilities=ALL_CAPS),
    "deepinfra": Deployment(provider="deepinfra", variant="starcoder2-15b",
                            model="bigcode/starcoder2-15b", context_window=16384,
                            input_usd_per_mtok=0.4, output_usd_per_mtok=0.4,
                            capabilities=ALL_CAPS),
    "vllm": Deployment(provider="vllm", variant="starcoder2-3b", model="bigcode/starcoder2-3b",
                       context_window=16384, capabilities=ALL_CAPS),
    "tgi": Deployment(provider="tgi", variant="starcoder2-15b", model="bigcode/starcoder2-15b",
                      context_window=16384, capabilities=ALL_CAPS),
    "lmstudio": Deployment(provider="lmstudio", variant="starcoder2-7b", model="starcoder2-7b",
                           context_window=16384, capabilities=ALL_CAPS),
}

COMPLETIONS_URL = {
    "fireworks": "https://api.fireworks.ai/inference/v1/completions",
    "deepinfra": "https://api.deepinfra.com/v1/openai/completions",
    "vllm": "http://localhost:8000/v1/completions",
    "tgi": "http://localhost:8080/v1/completions",
    "lmstudio": "http://localhost:1234/v1/completions",
}

# Hosted providers need a key to be routable at all.
KEY_ENV = {"fireworks": {"FIREWORKS_API_KEY": "fw-test-key"},
           "deepinfra": {"DEEPINFRA_API_KEY": "di-test-key"}}

FIM_PROMPT = "<fim_prefix>def add(a, b):\n    <fim_suffix>\n<fim_middle>"
FIM_STOPS = ["<file_sep>", "<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<|endoftext|>"]
PROMPT_STOPS = ["<file_sep>", "<|endoftext|>"]
SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def fixture_json(name: str) -> Any:
    return json.loads(fixture_bytes(name))


def sse(name: str) -> httpx.Response:
    return httpx.Response(200, content=fixture_bytes(name),
                          headers={"content-type": "text/event-stream"})


def assert_post(request: httpx.Request, url: str, *, accept: str = "application/json",
                key: str | None = None) -> None:
    """`request` is a JSON POST to `url` that accepts `accept`, with `key` as its bearer token,
    or with no authorization header at all when `key` is None."""
    assert request.method == "POST"
    assert str(request.url) == url
    assert request.headers["content-type"] == "application/json"
    assert request.headers["accept"] == accept
    if key is None:
        assert "authorization" not in request.headers
    else:
        assert request.headers["authorization"] == "Bearer " + key


def body_of(route: respx.Route, index: int = -1) -> Any:
    """The JSON body of a request a route received (the last one by default)."""
    return json.loads(route.calls[index].request.content)


def catalog_with(*deps: Deployment) -> Catalog:
    """The default catalog with these deployments instead of their providers' packaged ones."""
    default = Catalog.default()
    providers = {d.provider for d in deps}
    return default.without(*(d.name for d in default.deployments if d.provider in providers)) \
        .with_deployments(*deps)


class ProviderDriver(Driver):
    """A `Driver` that builds each router around one provider's deployment."""

    def router(self, provider: str, *, deployment: Deployment | None = None,
               env: Mapping[str, str] | None = None,
               providers: Mapping[str, Any] | None = None,
               retry: RetryPolicy | None = None, clock: FakeClock | None = None,
               ) -> Router | AsyncRouter:
        dep = deployment or DEPLOYMENTS[provider]
        return self.new_router(
            catalog=catalog_with(dep),
            policy=CostPolicy(allow_providers={dep.provider}),
            env=dict(KEY_ENV.get(provider, {}) if env is None else env),
            providers=providers,
            retry=retry or RetryPolicy(max_retries=0),
            tokenizer=False,
            clock=clock or FakeClock(),
        )
