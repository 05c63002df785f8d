"""LM Studio: the exact requests on the wire, answers, streams, the overflow error and discovery.

Router tests run through `Router` and `AsyncRouter(transport="httpx")` (the `drive` fixture)."""

from __future__ import annotations

from functools import partial
from typing import Any

import httpx
import pytest
import respx

from starcoder_router import ContextLengthError
from starcoder_router._providers.call import Endpoint, WireResponse
from starcoder_router._providers.lmstudio import LMStudio
from support.provider_replies import (
    COMPLETIONS_URL,
    FIM_PROMPT,
    FIM_STOPS,
    PROMPT_STOPS,
    SCHEMA,
    ProviderDriver,
    assert_post,
    body_of,
    fixture_bytes,
    fixture_json,
    sse,
)

URL = COMPLETIONS_URL["lmstudio"]
MODEL = "starcoder2-7b"


_headers = partial(assert_post, url=URL)


async def test_plain_completion(drive: ProviderDriver, mock: respx.MockRouter) -> None:
    route = mock.post(URL).respond(200, json=fixture_json("lmstudio/completion.json"))
    router = drive.router("lmstudio")

    completion = await drive.complete(router, prompt="def add(a, b):", max_tokens=32)

    _headers(route.calls.last.request)
    assert body_of(route) == {"model": MODEL, "prompt": "def add(a, b):", "max_tokens": 32,
                              "stop": PROMPT_STOPS}
    assert completion.text == "return a + b"
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (14, 5)
    assert completion.cost_usd == 0.0


async def test_lm_api_token_is_sent_as_bearer(
        drive: ProviderDriver, mock: respx.MockRouter) -> None:
    route = mock.post(URL).respond(200, json=fixture_json("lmstudio/completion.json"))
    router = drive.router("lmstudio", env={"LM_API_TOKEN": "lms-secret"})

    await drive.complete(router, prompt="def add(a, b):", max_tokens=32)

    _headers(route.calls.last.request, key="lms-secret")


async def test_fim_as_psm_prompt(drive: ProviderDriver, mock: respx.MockRouter) -> None:
    route = mock.post(URL).respond(200, json=fixture_json("lmstudio/completion.json"))
    router = drive.router("lmstudio")

    await drive.complete(router, prefix="def add(a, b):\n    ", suffix="\n", max_tokens=32)

    assert body_of(route) == {"model": MODEL, "prompt": FIM_PROMPT, "max_tokens": 32,
                              "stop": FIM_STOPS}


async def test_stream(drive: ProviderDriver, mock: respx.MockRouter) -> None:
    route = mock.post(URL).mock(return_value=sse("lmstudio/stream.sse"))
    router = drive.router("lmstudio")

    chunks, completion = await drive.stream(router, prefix="def add(a, b):\n    ", suffix="\n",
                                            max_tokens=32)

    _headers(route.calls.last.request, accept="text/event-stream")
    assert body_of(route) == {"model": MODEL, "prompt": FIM_PROMPT, "max_tokens": 32,
                              "stop": FIM_STOPS, "stream": True,
                              "stream_options": {"include_usage": True}}
    assert [(c.text, c.finish_reason) for c in chunks] == [
        ("return", None), (" a + b", None), ("", "stop")]
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens,
            completion.usage.source) == (14, 4, "provider")


@pytest.mark.parametrize(("requested", "schema", "name"), [
    # json_object is unsupported: the most permissive schema asks for the same thing.
    pytest.param({"type": "json_object"}, {"type": "object"}, "response", id="json_object"),
    pytest.param({"type": "json_object", "json_schema": SCHEMA}, SCHEMA, "response",
                 id="json_object+schema"),
    pytest.param({"type": "json_schema", "json_schema": {"name": "fn", "schema": SCHEMA}},
                 SCHEMA, "fn", id="json_schema"),
])
async def test_structured_output_is_always_json_schema(
        drive: ProviderDriver, mock: respx.MockRouter, requested: dict[str, Any],
        schema: dict[str, Any], name: str) -> None:
    answer = fixture_json("lmstudio/completion.json")
    answer["choices"][0]["text"] = '{"name": "add"}'
    route = mock.post(URL).respond(200, json=answer)
    router = drive.router("lmstudio")

    completion = await drive.complete(router, prompt="Name it:", max_tokens=32,
                                      response_format=requested)

    assert body_of(route) == {
        "model": MODEL, "prompt": "Name it:", "max_tokens": 32, "stop": PROMPT_STOPS,
        "response_format": {"type": "json_schema",
                            "json_schema": {"name": name, "schema": schema, "strict": True}},
    }
    assert completion.json() == {"name": "add"}


async def test_overflow_reports_the_loaded_window(
        drive: ProviderDriver, mock: respx.MockRouter) -> None:
    mock.post(URL).respond(400, json=fixture_json("lmstudio/overflow_400.json"))
    router = drive.router("lmstudio")

    with pytest.raises(ContextLengthError) as info:
        await drive.complete(router, prompt="def add(a, b):", max_tokens=32)

    # LM Studio may load a model with less than its maximum window; this is the one it serves.
    assert (info.value.context_window, info.value.prompt_tokens) == (4096, 17000)


# -- discovery (pure adapter functions) --------------------------------------------------------


def test_probes_native_listing_then_v1() -> None:
    native, v1 = LMStudio().probe(Endpoint("lmstudio", "http://localhost:1234/v1"))

    assert (native.method, native.url) == ("GET", "http://localhost:1234/api/v0/models")
    assert (v1.method, v1.url) == ("GET", "http://localhost:1234/v1/models")
    assert dict(native.headers) == dict(v1.headers) == {"accept": "application/json"}


def test_discovered_from_native_lists_loaded_models() -> None:
    endpoint = Endpoint("lmstudio", "http://localhost:1234/v1")
    native = WireResponse(200, {}, fixture_bytes("lmstudio/api_v0_models.json"))

    found = LMStudio().discovered(endpoint, [native, None])

    assert [(d.model, d.variant, d.context_window) for d in found] == [
        ("second-state/starcoder2-7b-gguf", "starcoder2-7b", 16384),
        ("my-coder-3b", "starcoder2-3b", 8192),  # arch "starcoder2" names the family
    ]
    assert all(d.pricing == "local" and d.provider == "lmstudio" for d in found)


def test_discovered_lists_every_starcoder2_model_when_none_is_loaded() -> None:
    listing = fixture_json("lmstudio/api_v0_models.json")
    for entry in listing["data"]:
        entry["state"] = "not-loaded"
    native = WireResponse(200, {}, httpx.Response(200, json=listing).content)

    found = LMStudio().discovered(Endpoint("lmstudio", "http://localhost:1234/v1"),
                                  [native, None])

    assert [d.variant for d in found] == ["starcoder2-7b", "starcoder2-15b-instruct",
                                          "starcoder2-3b"]


@pytest.mark.parametrize("native", [None, WireResponse(404, {}, b'{"error":"Unexpected"}')])
def test_discovered_falls_back_to_v1_models(native: WireResponse | None) -> None:
    v1 = WireResponse(200, {}, fixture_bytes("lmstudio/v1_models.json"))

    found = LMStudio().discovered(Endpoint("lmstudio", "http://localhost:1234/v1"), [native, v1])

    assert [(d.model, d.variant, d.context_window) for d in found] == [
        ("starcoder2-15b-instruct-v0.1", "starcoder2-15b-instruct", 16384)]
    assert found[0].capabilities == {"completion", "chat", "streaming", "structured_output"}
