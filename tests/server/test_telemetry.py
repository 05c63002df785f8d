"""OpenTelemetry: one span per attempt with the GenAI attributes, in the gateway and in the SDK."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from upstream import Reply  # loaded by conftest.py

from starcoder_router import Catalog, CostPolicy, RetryPolicy, Router, otel_hooks
from starcoder_router._server.settings import ServerSettings, TenantSettings
from starcoder_router._server.tenants import hash_key
from starcoder_router.testing import FakeServer


@pytest.fixture
def spans() -> Any:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def test_gateway_attempts_become_genai_spans(serve: Any, upstream: Any, spans: Any) -> None:
    provider, exporter = spans
    tenants = (TenantSettings(name="acme", key_sha256=hash_key("sk-acme")),)
    gw = serve(settings=ServerSettings(tenants=tenants), hooks=otel_hooks(provider),
               retry=RetryPolicy(max_retries=0))
    upstream.script(Reply(status=500))
    r = httpx.post(gw.url + "/v1/completions", headers={"Authorization": "Bearer sk-acme"},
                   json={"model": "starcoder2:cheapest", "prompt": "def add(a, b):",
                         "max_tokens": 8}, timeout=10)
    assert r.status_code == 200
    failed, ok = exporter.get_finished_spans()
    assert failed.name == "text_completion starcoder2:cheapest"
    assert failed.attributes["error.type"] == "ProviderServerError"
    assert failed.attributes["http.response.status_code"] == 500
    assert failed.status.status_code.name == "ERROR"
    assert ok.attributes["gen_ai.request.model"] == "starcoder2:cheapest"
    assert ok.attributes["gen_ai.response.model"] == "mock/starcoder2-7b"
    assert ok.attributes["gen_ai.usage.input_tokens"] == 3
    assert ok.attributes["gen_ai.usage.output_tokens"] == 4
    assert ok.attributes["starcoder_router.tenant"] == "acme"
    assert ok.attributes["starcoder_router.request_id"] == r.headers["x-request-id"]
    assert ok.attributes["starcoder_router.cost_usd"] == pytest.approx(
        float(r.headers["x-starcoder-router-cost-usd"]))
    assert ok.end_time - ok.start_time > 0


def test_the_same_hooks_work_in_the_sdk(spans: Any) -> None:
    provider, exporter = spans
    with FakeServer() as server:
        catalog = Catalog(variants=Catalog.default().variants,
                          deployments=(server.deployment(),))
        with Router(catalog=catalog, policy=CostPolicy(), env={},
                    hooks=otel_hooks(provider)) as router:
            router.complete(prompt="def fib(n):", max_tokens=4)
    (span,) = exporter.get_finished_spans()
    assert span.attributes["gen_ai.operation.name"] == "text_completion"
    assert span.attributes["gen_ai.response.model"] == "fake/starcoder2-3b"
    assert span.attributes["gen_ai.usage.output_tokens"] > 0
    assert "starcoder_router.tenant" not in span.attributes
