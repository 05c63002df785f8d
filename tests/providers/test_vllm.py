"""vLLM: the exact requests on the wire, answers, streams, errors, discovery and `/tokenize`.

Router tests run through `Router` and `AsyncRouter(transport="httpx")` (the `drive` fixture);
discovery and tokenize are pure adapter functions, tested on their requests and answers."""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest
import respx

from starcoder_router import (
    AuthenticationError,
    BadRequestError,
    ContextLengthError,
    InvalidResponseError,
    ProviderServerError,
)
from starcoder_router._providers.call import Endpoint, WireRequest, WireResponse
from starcoder_router._providers.local import find_variant
from starcoder_router._providers.vllm import VLLM
from starcoder_router._secrets import Secret
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

URL = COMPLETIONS_URL["vllm"]
MODEL = "bigcode/starcoder2-3b"


_headers = partial(assert_post, url=URL)


async def test_plain_completion_needs_no_key(drive: ProviderDriver, mock: respx.MockRouter) -> None:
    route = mock.post(URL).respond(200, json=fixture_json("vllm/completion.json"))
    router = drive.router("vllm")

    completion = await drive.complete(router, prompt="def add(a, b):", max_tokens=32,
                                      temperature=0.0, top_p=0.9)

    _headers(route.calls.last.request)
    assert body_of(route) == {"model": MODEL, "prompt": "def add(a, b):", "max_tokens": 32,
                              "temperature": 0.0, "top_p": 0.9, "stop": PROMPT_STOPS}
    assert completion.text == "return a + b"
    assert completion.finish_reason == "stop"
    assert completion.request_id == "cmpl-8c1d2e3f"
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens,
            completion.usage.source) == (14, 5, "provider")
    assert completion.cost_usd == 0.0
    assert completion.deployment.is_local


async def test_vllm_api_key_is_sent_as_bearer(
        drive: ProviderDriver, mock: respx.MockRouter) -> None:
    route = mock.post(URL).respond(200, json=fixture_json("vllm/completion.json"))
    router = drive.router("vllm", env={"VLLM_API_KEY": "vllm-secret"})

    await drive.complete(router, prompt="def add(a, b):", max_tokens=32)

    _headers(route.calls.last.request, key="vllm-secret")


async def test_fim_never_sends_suffix(drive: ProviderDriver, mock: respx.MockRouter) -> None:
    route = mock.post(URL).respond(200, json=fixture_json("vllm/completion.json"))
    router = drive.router("vllm")

    await drive.complete(router, prefix="def add(a, b):\n    ", suffix="\n", max_tokens=32)

    _headers(route.calls.last.request)
    assert body_of(route) == {"model": MODEL, "prompt": FIM_PROMPT, "max_tokens": 32,
                              "stop": FIM_STOPS}


async def test_stream(drive: ProviderDriver, mock: respx.MockRouter) -> None:
    route = mock.post(URL).mock(return_value=sse("vllm/stream.sse"))
    router = drive.router("vllm")

    chunks, completion = await drive.stream(router, prefix="def add(a, b):\n    ", suffix="\n",
                                            max_tokens=4)

    _headers(route.calls.last.request, accept="text/event-stream")
    assert body_of(route) == {"model": MODEL, "prompt": FIM_PROMPT, "max_tokens": 4,
                              "stop": FIM_STOPS, "stream": True,
                              "stream_options": {"include_usage": True}}
    assert [(c.text, c.finish_reason) for c in chunks] == [
        ("return", None), (" a + b", None), ("", "length")]
    assert completion.finish_reason == "length"
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (14, 4)


@pytest.mark.parametrize(("requested", "on_wire"), [
    pytest.param({"type": "json_object"}, {"type": "json_object"}, id="json_object"),
    pytest.param({"type": "json_object", "json_schema": SCHEMA},
                 {"type": "json_schema",
                  "json_schema": {"name": "response", "schema": SCHEMA, "strict": True}},
                 id="json_object+schema"),
    pytest.param({"type": "json_schema", "json_schema": {"name": "fn", "schema": SCHEMA}},
                 {"type": "json_schema",
                  "json_schema": {"name": "fn", "schema": SCHEMA, "strict": True}},
                 id="json_schema"),
])
async def test_structured_output_uses_response_format(
        drive: ProviderDriver, mock: respx.MockRouter, requested: dict[str, Any],
        on_wire: dict[str, Any]) -> None:
    answer = fixture_json("vllm/completion.json")
    answer["choices"][0]["text"] = '{"name": "add"}'
    route = mock.post(URL).respond(200, json=answer)
    router = drive.router("vllm")

    completion = await drive.complete(router, prompt="Name it:", max_tokens=32,
                                      response_format=requested)

    # Exactly the OpenAI field: no `structured_outputs`, never the removed `guided_json`.
    assert body_of(route) == {"model": MODEL, "prompt": "Name it:", "max_tokens": 32,
                              "stop": PROMPT_STOPS, "response_format": on_wire}
    assert completion.json() == {"name": "add"}


async def test_401_unauthorized(drive: ProviderDriver, mock: respx.MockRouter) -> None:
    mock.post(URL).respond(401, json=fixture_json("vllm/unauthorized_401.json"))
    router = drive.router("vllm", env={"VLLM_API_KEY": "wrong"})

    with pytest.raises(AuthenticationError) as info:
        await drive.complete(router, prompt="def add(a, b):", max_tokens=32)

    assert info.value.provider_message == "Unauthorized"
    assert info.value.status_code == 401
    assert info.value.retryable is False


@pytest.mark.parametrize(("fixture", "window", "prompt_tokens"), [
    pytest.param("vllm/overflow_requested_400.json", 16384, 16400, id="nested-you-requested"),
    pytest.param("vllm/overflow_max_tokens_flat_400.json", 4096, 2778, id="flat-max-tokens"),
])
async def test_overflow_messages(drive: ProviderDriver, mock: respx.MockRouter, fixture: str,
                                 window: int, prompt_tokens: int) -> None:
    mock.post(URL).respond(400, json=fixture_json(fixture))
    router = drive.router("vllm")

    with pytest.raises(ContextLengthError) as info:
        await drive.complete(router, prompt="def add(a, b):", max_tokens=32)

    assert (info.value.context_window, info.value.prompt_tokens) == (window, prompt_tokens)
    assert info.value.retryable is False


async def test_flat_error_shape(drive: ProviderDriver, mock: respx.MockRouter) -> None:
    mock.post(URL).respond(400, json=fixture_json("vllm/bad_request_flat_400.json"))
    router = drive.router("vllm")

    with pytest.raises(BadRequestError) as info:
        await drive.complete(router, prompt="def add(a, b):", max_tokens=32)

    assert not isinstance(info.value, ContextLengthError)
    assert info.value.provider_message == "suffix is not currently supported"


async def test_flat_error_event_inside_a_200_stream(drive: ProviderDriver,
                                                    mock: respx.MockRouter) -> None:
    mock.post(URL).mock(return_value=sse("vllm/stream_error_flat.sse"))
    router = drive.router("vllm")

    with pytest.raises(BadRequestError) as info:
        await drive.stream(router, prompt="def add(a, b):", max_tokens=32)

    assert info.value.status_code == 400
    assert info.value.provider_message == "The model does not support structured output"


# -- discovery and /tokenize (pure adapter functions) ------------------------------------------


def test_probe_lists_models_under_v1() -> None:
    endpoint = Endpoint("vllm", "http://gpu-box:8000/v1", Secret("vllm-secret"))

    (probe,) = VLLM().probe(endpoint)

    assert (probe.method, probe.url, probe.body) == ("GET", "http://gpu-box:8000/v1/models", None)
    assert dict(probe.headers) == {"accept": "application/json",
                                   "authorization": "Bearer vllm-secret"}


def test_discovered_reads_max_model_len_and_infers_the_variant() -> None:
    endpoint = Endpoint("vllm", "http://gpu-box:8000/v1")
    answer = WireResponse(200, {}, fixture_bytes("vllm/models.json"))

    found = VLLM().discovered(endpoint, [answer])

    assert [(d.name, d.variant, d.model, d.context_window) for d in found] == [
        ("vllm/bigcode/starcoder2-15b", "starcoder2-15b", "bigcode/starcoder2-15b", 8192),
        # a --served-model-name alias: the variant comes from `root`
        ("vllm/sc2-instruct", "starcoder2-15b-instruct", "sc2-instruct", 16384),
    ]
    assert all(d.pricing == "local" and d.base_url == "http://gpu-box:8000/v1" for d in found)
    assert found[0].capabilities == {"completion", "fim", "streaming", "structured_output"}
    assert found[1].capabilities == {"completion", "chat", "streaming", "structured_output"}


@pytest.mark.parametrize("answer", [None, WireResponse(401, {}, b'{"error":"Unauthorized"}'),
                                    WireResponse(200, {}, b"<html>")])
def test_discovered_nothing_from_a_failed_probe(answer: WireResponse | None) -> None:
    assert VLLM().discovered(Endpoint("vllm", "http://localhost:8000/v1"), [answer]) == []


def test_tokenize_goes_to_the_server_root() -> None:
    endpoint = Endpoint("vllm", "http://localhost:8000/v1/")

    request = VLLM().tokenize_request(endpoint, "def add(a, b):")

    assert isinstance(request, WireRequest)
    assert (request.method, request.url) == ("POST", "http://localhost:8000/tokenize")
    assert request.json() == {"prompt": "def add(a, b):"}
    assert request.headers["content-type"] == "application/json"
    assert "authorization" not in request.headers


def test_token_count_reads_count() -> None:
    answer = WireResponse(200, {}, fixture_bytes("vllm/tokenize.json"))

    assert VLLM().token_count(answer) == 9


def test_token_count_errors() -> None:
    with pytest.raises(ProviderServerError):
        VLLM().token_count(WireResponse(500, {}, b'{"error":{"message":"boom"}}'))
    with pytest.raises(InvalidResponseError):
        VLLM().token_count(WireResponse(200, {}, b'{"tokens": []}'))


@pytest.mark.parametrize(("names", "variant"), [
    (("bigcode/starcoder2-3b",), "starcoder2-3b"),
    (("TheBloke/starcoder2-7B-GGUF",), "starcoder2-7b"),
    (("bigcode/starcoder2-15b",), "starcoder2-15b"),
    (("bigcode/starcoder2-15b-instruct-v0.1",), "starcoder2-15b-instruct"),
    (("my-alias", "/models/bigcode/starcoder2-7b"), "starcoder2-7b"),
    (("someone/starcoder2-3b-instruct",), None),  # no such release: another model
    (("bigcode/starcoder-15b",), None),  # StarCoder 1
    (("codellama/CodeLlama-7b-hf",), None),
    (("my-alias", None), None),
])
def test_variant_inference(names: tuple[str | None, ...], variant: str | None) -> None:
    assert find_variant(*names) == variant
