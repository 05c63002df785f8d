"""The OpenAI protocol, driven by the official `openai` client against a real gateway."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from upstream import Reply as upstream_reply  # loaded by conftest.py

from starcoder_router import Budget, CostPolicy, RetryPolicy
from starcoder_router._server.settings import ServerSettings, TenantSettings
from starcoder_router._server.tenants import hash_key

NO_RETRY = RetryPolicy(max_retries=0, backoff_initial_s=0, jitter_s=0)


_clients: list[openai.OpenAI] = []


def client(url: str, key: str = "unused") -> openai.OpenAI:
    c = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=10)
    _clients.append(c)
    return c


@pytest.fixture(autouse=True)
def _close_clients() -> Any:
    yield
    while _clients:
        _clients.pop().close()  # their pooled sockets would warn when collected


def test_completion_reaches_the_upstream_as_written_and_is_costed(serve: Any,
                                                                  upstream: Any) -> None:
    gw = serve()
    raw = client(gw.url).completions.with_raw_response.create(
        model="starcoder2", prompt="def add(a, b):", max_tokens=8, stop=["\n\n"])
    c = raw.parse()
    assert c.choices[0].text == "return a + b"
    assert c.choices[0].finish_reason == "stop"
    assert c.object == "text_completion"
    assert c.usage is not None
    assert (c.usage.prompt_tokens, c.usage.completion_tokens) == (3, 4)
    body = upstream.bodies[-1]
    assert body["prompt"] == "def add(a, b):"
    assert body["max_tokens"] == 8
    assert body["stop"][0] == "\n\n"  # then the router's own StarCoder 2 stops
    # the cheapest base deployment, and its exact price: 3 in at $0.1/M + 4 out at $0.2/M
    assert raw.headers["x-starcoder-router-deployment"] == "mock/starcoder2-3b"
    assert float(raw.headers["x-starcoder-router-cost-usd"]) == pytest.approx(1.1e-6)
    assert raw.headers["x-starcoder-router-attempts"] == "1"
    assert len(raw.headers["x-request-id"]) >= 16


def test_suffix_means_fill_in_the_middle_in_starcoder2_format(serve: Any, upstream: Any) -> None:
    gw = serve()
    c = client(gw.url).completions.create(model="starcoder2", prompt="def add(a, b):\n    ",
                                          suffix="\n\nprint(add(1, 2))\n", max_tokens=8)
    assert c.choices[0].text == "return a + b"
    prompt = upstream.bodies[-1]["prompt"]
    assert prompt == ("<fim_prefix>def add(a, b):\n    <fim_suffix>\n\nprint(add(1, 2))\n"
                      "<fim_middle>")


def test_a_prompt_with_fim_sentinels_passes_through(serve: Any, upstream: Any) -> None:
    gw = serve()
    written = "<fim_prefix>x = <fim_suffix>\n<fim_middle>"
    client(gw.url).completions.create(model="starcoder2", prompt=written, max_tokens=4)
    assert upstream.bodies[-1]["prompt"] == written


def test_variant_names_pin_the_size(serve: Any, upstream: Any) -> None:
    gw = serve()
    raw = client(gw.url).completions.with_raw_response.create(
        model="starcoder2-7b", prompt="x", max_tokens=4)
    assert raw.headers["x-starcoder-router-deployment"] == "mock/starcoder2-7b"
    assert upstream.bodies[-1]["model"] == "mock-starcoder2-7b"
    raw = client(gw.url).completions.with_raw_response.create(
        model="starcoder2:quality", prompt="x", max_tokens=4)
    assert raw.headers["x-starcoder-router-deployment"] == "mock/starcoder2-7b"


def test_stream_with_final_usage_chunk(serve: Any, upstream: Any) -> None:
    gw = serve()
    chunks = list(client(gw.url).completions.create(
        model="starcoder2", prompt="def add(a, b):", max_tokens=8, stream=True,
        stream_options={"include_usage": True}))
    text = "".join(ch.choices[0].text for ch in chunks if ch.choices)
    assert text == "return a + b"
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "stop"
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (3, 4)
    assert upstream.bodies[-1]["stream"] is True


def test_stream_without_include_usage_has_no_usage_chunk(serve: Any) -> None:
    gw = serve()
    chunks = list(client(gw.url).completions.create(model="starcoder2", prompt="x",
                                                    max_tokens=8, stream=True))
    assert all(ch.choices for ch in chunks)
    assert all(ch.usage is None for ch in chunks)


def test_chat_goes_to_an_instruct_deployment(serve: Any, upstream: Any) -> None:
    gw = serve()
    raw = client(gw.url).chat.completions.with_raw_response.create(
        model="starcoder2", max_tokens=8,
        messages=[{"role": "system", "content": "Be brief."},
                  {"role": "user", "content": "Add two numbers."}])
    c = raw.parse()
    assert c.choices[0].message.content == "return a + b"
    assert c.choices[0].message.role == "assistant"
    assert raw.headers["x-starcoder-router-deployment"] == "mock/starcoder2-15b-instruct"
    # rendered in StarCoder2-15B-Instruct's own template
    assert "Be brief." in upstream.bodies[-1]["prompt"]
    # The system text is folded into the instruction (the template has no system turn).
    assert "### Instruction\nBe brief.\n\nAdd two numbers.\n\n### Response\n" in \
        upstream.bodies[-1]["prompt"]


def test_chat_stream(serve: Any) -> None:
    gw = serve()
    chunks = list(client(gw.url).chat.completions.create(
        model="starcoder2", max_tokens=8, stream=True,
        messages=[{"role": "user", "content": "Add two numbers."}],
        stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
        "return a + b"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].usage is not None


def test_models_lists_virtual_names_and_variants(serve: Any) -> None:
    gw = serve()
    ids = [m.id for m in client(gw.url).models.list()]
    assert ids[:5] == ["starcoder2", "starcoder2:cheapest", "starcoder2:quality",
                       "starcoder2:fast", "starcoder2:balanced"]
    assert {"starcoder2-3b", "starcoder2-7b", "starcoder2-15b-instruct"} <= set(ids)
    assert "starcoder2-15b" not in ids  # no deployment serves it here


def test_context_length_is_a_400_with_its_code(serve: Any) -> None:
    gw = serve()
    with pytest.raises(openai.BadRequestError) as info:
        client(gw.url).completions.create(model="starcoder2", prompt="x = 1\n" * 3000,
                                          max_tokens=16)
    assert info.value.status_code == 400
    assert info.value.code == "context_length_exceeded"


def test_unknown_model_is_a_404(serve: Any) -> None:
    gw = serve()
    with pytest.raises(openai.NotFoundError) as info:
        client(gw.url).completions.create(model="gpt-4", prompt="x", max_tokens=4)
    assert info.value.code == "model_not_found"


def test_max_tokens_above_the_cap_is_a_400(serve: Any, upstream: Any) -> None:
    gw = serve(settings=ServerSettings(max_tokens=64))
    with pytest.raises(openai.BadRequestError) as info:
        client(gw.url).completions.create(model="starcoder2", prompt="x", max_tokens=65)
    assert "max_tokens" in info.value.message
    assert upstream.bodies == []


def test_keys_map_to_tenants_and_others_get_401(serve: Any, upstream: Any) -> None:
    tenants = (TenantSettings(name="acme", key_sha256=hash_key("sk-acme")),
               TenantSettings(name="bobco", key_sha256=hash_key("sk-bob")))
    gw = serve(settings=ServerSettings(tenants=tenants))
    for key in ("sk-wrong", "", "sk-acme "[:-2]):
        with pytest.raises(openai.AuthenticationError) as info:
            client(gw.url, key or "x").completions.create(model="starcoder2", prompt="x",
                                                          max_tokens=4)
        assert info.value.status_code == 401
    with pytest.raises(openai.AuthenticationError):
        client(gw.url, "nope").models.list()
    assert upstream.bodies == []
    c = client(gw.url, "sk-bob").completions.create(model="starcoder2", prompt="x", max_tokens=4)
    assert c.choices[0].text == "return a + b"
    ledger = gw.gateway.store.ledger()
    assert [e.tenant for e in ledger] == ["bobco"]


def test_requests_per_minute_limit_is_a_429_with_retry_after(serve: Any) -> None:
    tenants = (TenantSettings(name="acme", key_sha256=hash_key("sk-acme"),
                              requests_per_minute=2),)
    gw = serve(settings=ServerSettings(tenants=tenants))
    c = client(gw.url, "sk-acme")
    c.completions.create(model="starcoder2", prompt="x", max_tokens=4)
    c.completions.create(model="starcoder2", prompt="x", max_tokens=4)
    with pytest.raises(openai.RateLimitError) as info:
        c.completions.create(model="starcoder2", prompt="x", max_tokens=4)
    assert info.value.code == "rate_limit_exceeded"
    assert 1 <= int(info.value.response.headers["retry-after"]) <= 60


def test_tokens_per_minute_limit(serve: Any) -> None:
    # Each request holds its prompt's bound plus max_tokens while it runs, then only what it
    # used (about 11 tokens here) stays counted.
    tenants = (TenantSettings(name="acme", key_sha256=hash_key("sk-acme"),
                              tokens_per_minute=100),)
    gw = serve(settings=ServerSettings(tenants=tenants))
    c = client(gw.url, "sk-acme")
    c.completions.create(model="starcoder2", prompt="def add(a, b):", max_tokens=8)
    c.completions.create(model="starcoder2", prompt="def add(a, b):", max_tokens=8)
    with pytest.raises(openai.RateLimitError):  # ~22 used + a hold of 80 + 33: over 100
        c.completions.create(model="starcoder2", prompt="x", max_tokens=80)


def test_exhausted_tenant_budget_is_a_429(serve: Any) -> None:
    tenants = (TenantSettings(name="acme", key_sha256=hash_key("sk-acme")),)
    policy = CostPolicy(budgets=[Budget(limit_usd=0.000002, period="day", scope="tenant")])
    gw = serve(settings=ServerSettings(tenants=tenants), policy=policy)
    c = client(gw.url, "sk-acme")
    with pytest.raises(openai.RateLimitError) as info:
        c.completions.create(model="starcoder2", prompt="x", max_tokens=64)
    assert info.value.code == "insufficient_quota"
    assert int(info.value.response.headers["retry-after"]) >= 1


def test_every_deployment_failing_is_a_503(serve: Any, upstream: Any) -> None:
    gw = serve(retry=NO_RETRY)
    upstream.script(*[upstream_reply(status=500)] * 4)
    with pytest.raises(openai.InternalServerError) as info:
        client(gw.url).completions.create(model="starcoder2", prompt="x", max_tokens=4)
    assert info.value.status_code == 503
    assert len(upstream.bodies) == 2  # both base deployments were tried


def test_upstream_rate_limits_become_a_429_with_retry_after(serve: Any, upstream: Any) -> None:
    gw = serve(retry=NO_RETRY)
    upstream.script(*[upstream_reply(status=429, headers={"retry-after": "7"})] * 2)
    with pytest.raises(openai.RateLimitError) as info:
        client(gw.url).completions.create(model="starcoder2", prompt="x", max_tokens=4)
    assert info.value.response.headers["retry-after"] == "7"


def test_a_failed_deployment_falls_back_and_says_so(serve: Any, upstream: Any) -> None:
    gw = serve(retry=NO_RETRY)
    upstream.script(upstream_reply(status=500))
    raw = client(gw.url).completions.with_raw_response.create(
        model="starcoder2", prompt="x", max_tokens=4)
    assert raw.headers["x-starcoder-router-deployment"] == "mock/starcoder2-7b"
    assert raw.headers["x-starcoder-router-attempts"] == "2"
