"""TGI: both APIs (`/v1/completions` and native `/generate`), their exact requests on the wire,
finish reasons, errors (also inside streams), discovery from `/info` and `/tokenize`.

Router tests run through `Router` and `AsyncRouter(transport="httpx")` (the `drive` fixture)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import respx

from starcoder_router import (
    AuthenticationError,
    BadRequestError,
    ContextLengthError,
    ProviderServerError,
    RateLimitError,
)
from starcoder_router._providers.call import Endpoint, WireRequest, WireResponse
from starcoder_router._providers.tgi import TGI
from support.provider_replies import (
    COMPLETIONS_URL,
    DEPLOYMENTS,
    FIM_PROMPT,
    SCHEMA,
    ProviderDriver,
    assert_post,
    body_of,
    fixture_bytes,
    fixture_json,
    sse,
)

V1 = COMPLETIONS_URL["tgi"]
GENERATE = "http://localhost:8080/generate"
GENERATE_STREAM = "http://localhost:8080/generate_stream"
NATIVE = DEPLOYMENTS["tgi"].model_copy(update={"api": "native"})
# TGI takes at most 4 stop sequences; <|endoftext|> is its EOS anyway.
FIM_STOPS_4 = ["<file_sep>", "<fim_prefix>", "<fim_middle>", "<fim_suffix>"]


# -- OpenAI-compatible /v1/completions (the default) -------------------------------------------


async def test_v1_plain_completion(drive: ProviderDriver, mock: respx.MockRouter) -> None:
    route = mock.post(V1).respond(200, json=fixture_json("tgi/v1_completion.json"))
    router = drive.router("tgi")

    completion = await drive.complete(router, prompt="def add(a, b):", max_tokens=32,
                                      temperature=0.0, top_p=1.0, seed=3)

    assert_post(route.calls.last.request, V1)
    # model "tgi" (anything else is taken as a LoRA adapter id); top_p=1 would be a 422.
    assert body_of(route) == {"model": "tgi", "prompt": "def add(a, b):", "max_tokens": 32,
                              "temperature": 0.0, "stop": ["<file_sep>", "<|endoftext|>"],
                              "seed": 3}
    assert completion.text == "return a + b"
    assert completion.finish_reason == "stop"
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (14, 5)


async def test_v1_fim_without_suffix_and_four_stops(drive: ProviderDriver,
                                                    mock: respx.MockRouter) -> None:
    route = mock.post(V1).respond(200, json=fixture_json("tgi/v1_completion.json"))
    router = drive.router("tgi")

    await drive.complete(router, prefix="def add(a, b):\n    ", suffix="\n", max_tokens=32,
                         top_p=0.95)

    assert body_of(route) == {"model": "tgi", "prompt": FIM_PROMPT, "max_tokens": 32,
                              "top_p": 0.95, "stop": FIM_STOPS_4}


async def test_v1_stop_sequence_is_cut_from_the_text(drive: ProviderDriver,
                                                     mock: respx.MockRouter) -> None:
    mock.post(V1).respond(200, json=fixture_json("tgi/v1_completion_stop_sequence.json"))
    router = drive.router("tgi")

    completion = await drive.complete(router, prompt="### Question\nHow?\n", max_tokens=32,
                                      stop=["### Instruction"])

    assert completion.text == "Use a list comprehension.\n"
    assert completion.finish_reason == "stop"
    assert completion.raw_finish_reason == "stop_sequence"


async def test_v1_stream_maps_eos_token_and_drops_its_text(drive: ProviderDriver,
                                                           mock: respx.MockRouter) -> None:
    route = mock.post(V1).mock(return_value=sse("tgi/v1_stream.sse"))
    router = drive.router("tgi")

    chunks, completion = await drive.stream(router, prefix="def add(a, b):\n    ", suffix="\n",
                                            max_tokens=32)

    assert_post(route.calls.last.request, V1, accept="text/event-stream")
    # Usage always ends a /v1 stream, so no stream_options.
    assert body_of(route) == {"model": "tgi", "prompt": FIM_PROMPT, "max_tokens": 32,
                              "stop": FIM_STOPS_4, "stream": True}
    assert [(c.text, c.finish_reason) for c in chunks] == [
        ("return", None), (" a + b", None), ("", "stop")]
    assert completion.text == "return a + b"
    assert completion.raw_finish_reason == "eos_token"
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens,
            completion.usage.source) == (14, 3, "provider")


# -- native /generate and /generate_stream -----------------------------------------------------


async def test_native_generate(drive: ProviderDriver, mock: respx.MockRouter) -> None:
    route = mock.post(GENERATE).respond(200, json=fixture_json("tgi/generate.json"),
                                        headers={"x-prompt-tokens": "14",
                                                 "x-generated-tokens": "5"})
    router = drive.router("tgi", deployment=NATIVE)

    completion = await drive.complete(router, prefix="def add(a, b):\n    ", suffix="\n",
                                      max_tokens=32, temperature=0.0, top_p=1.0, seed=3)

    assert_post(route.calls.last.request, GENERATE)
    # temperature 0 (greedy) and top_p 1 are TGI's defaults and would be refused if sent.
    assert body_of(route) == {"inputs": FIM_PROMPT,
                              "parameters": {"max_new_tokens": 32, "details": True,
                                             "stop": FIM_STOPS_4, "seed": 3}}
    assert completion.text == "return a + b"
    assert completion.finish_reason == "stop"
    assert completion.raw_finish_reason == "eos_token"
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens,
            completion.usage.source) == (14, 5, "provider")


async def test_native_sampling_parameters(drive: ProviderDriver, mock: respx.MockRouter) -> None:
    route = mock.post(GENERATE).respond(200, json=fixture_json("tgi/generate.json"))
    router = drive.router("tgi", deployment=NATIVE)

    await drive.complete(router, prompt="def add(a, b):", max_tokens=8, temperature=0.6,
                         top_p=0.9, extra_body={"top_k": 20})

    assert body_of(route) == {"inputs": "def add(a, b):",
                              "parameters": {"max_new_tokens": 8, "details": True,
                                             "temperature": 0.6, "top_p": 0.9,
                                             "stop": ["<file_sep>", "<|endoftext|>"],
                                             "top_k": 20}}


async def test_native_stream_skips_special_tokens(
        drive: ProviderDriver, mock: respx.MockRouter) -> None:
    route = mock.post(GENERATE_STREAM).mock(return_value=sse("tgi/generate_stream.sse"))
    router = drive.router("tgi", deployment=NATIVE)

    chunks, completion = await drive.stream(router, prefix="def add(a, b):\n    ", suffix="\n",
                                            max_tokens=32)

    assert_post(route.calls.last.request, GENERATE_STREAM, accept="text/event-stream")
    assert body_of(route) == {"inputs": FIM_PROMPT,
                              "parameters": {"max_new_tokens": 32, "details": True,
                                             "stop": FIM_STOPS_4}}
    assert [(c.text, c.finish_reason) for c in chunks] == [
        ("return", None), (" a + b", None), ("", "stop")]
    assert completion.text == "return a + b"
    assert completion.raw_finish_reason == "stop_sequence"
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (14, 3)


@pytest.mark.parametrize(("requested", "grammar"), [
    pytest.param({"type": "json_object"}, {"type": "json", "value": {"type": "object"}},
                 id="json_object"),
    pytest.param({"type": "json_schema", "json_schema": SCHEMA},
                 {"type": "json", "value": SCHEMA}, id="json_schema"),
])
async def test_structured_output_goes_native_with_a_grammar(
        drive: ProviderDriver, mock: respx.MockRouter, requested: dict[str, Any],
        grammar: dict[str, Any]) -> None:
    # /v1/completions cannot constrain output, so even the default deployment uses /generate.
    v1 = mock.post(V1).respond(500)
    route = mock.post(GENERATE).respond(200, json=fixture_json("tgi/generate_json.json"))
    router = drive.router("tgi")

    completion = await drive.complete(router, prompt="Name it:", max_tokens=16,
                                      response_format=requested)

    assert not v1.called
    assert body_of(route) == {"inputs": "Name it:",
                              "parameters": {"max_new_tokens": 16, "details": True,
                                             "stop": ["<file_sep>", "<|endoftext|>"],
                                             "grammar": grammar}}
    assert completion.json() == {"name": "add"}


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("native", [False, True], ids=["v1", "native"])
@pytest.mark.parametrize(("status", "fixture", "kind", "retryable"), [
    pytest.param(422, "tgi/suffix_422.json", BadRequestError, False, id="422-validation"),
    pytest.param(429, "tgi/overloaded_429.json", RateLimitError, True, id="429-overloaded"),
    pytest.param(424, "tgi/generation_424.json", ProviderServerError, True, id="424-generation"),
    pytest.param(500, "tgi/incomplete_500.json", ProviderServerError, True, id="500-incomplete"),
])
async def test_error_statuses(
        drive: ProviderDriver, mock: respx.MockRouter, native: bool, status: int,
        fixture: str, kind: type[Exception], retryable: bool) -> None:
    mock.post(GENERATE if native else V1).respond(status, json=fixture_json(fixture))
    router = drive.router("tgi", deployment=NATIVE if native else None)

    with pytest.raises(kind) as info:
        await drive.complete(router, prompt="def add(a, b):", max_tokens=32)

    err = info.value
    assert type(err) is kind
    assert (err.status_code, err.retryable) == (status, retryable)  # type: ignore[attr-defined]
    assert err.provider_message == fixture_json(fixture)["error"]  # type: ignore[attr-defined]


@pytest.mark.parametrize(("fixture", "window", "prompt_tokens"), [
    pytest.param("tgi/validation_overflow_422.json", 16384, 16300, id="inputs+max_new_tokens"),
    pytest.param("tgi/input_length_422.json", 4096, 5000, id="max-input-tokens"),
])
async def test_422_overflows(
        drive: ProviderDriver, mock: respx.MockRouter, fixture: str, window: int,
        prompt_tokens: int) -> None:
    mock.post(V1).respond(422, json=fixture_json(fixture))
    router = drive.router("tgi")

    with pytest.raises(ContextLengthError) as info:
        await drive.complete(router, prompt="def add(a, b):", max_tokens=256)

    assert (info.value.context_window, info.value.prompt_tokens) == (window, prompt_tokens)
    assert info.value.status_code == 422


async def test_max_new_tokens_limit_is_not_an_overflow(drive: ProviderDriver,
                                                       mock: respx.MockRouter) -> None:
    mock.post(V1).respond(422, json={
        "error": "Input validation error: `max_new_tokens` must be <= 1024. Given: 4096",
        "error_type": "validation"})
    router = drive.router("tgi")

    with pytest.raises(BadRequestError) as info:
        await drive.complete(router, prompt="def add(a, b):", max_tokens=4096)

    assert type(info.value) is BadRequestError


async def test_401_with_an_empty_body(drive: ProviderDriver, mock: respx.MockRouter) -> None:
    mock.post(V1).respond(401, content=b"")
    router = drive.router("tgi")

    with pytest.raises(AuthenticationError) as info:
        await drive.complete(router, prompt="def add(a, b):", max_tokens=32)

    assert info.value.status_code == 401
    assert info.value.provider_message == ""


@pytest.mark.parametrize("native", [False, True], ids=["v1", "native"])
async def test_error_event_inside_a_200_stream(drive: ProviderDriver, mock: respx.MockRouter,
                                               native: bool) -> None:
    mock.post(GENERATE_STREAM if native else V1).mock(
        return_value=sse("tgi/stream_overloaded.sse"))
    router = drive.router("tgi", deployment=NATIVE if native else None)

    with pytest.raises(RateLimitError) as info:
        await drive.stream(router, prompt="def add(a, b):", max_tokens=32)

    assert info.value.provider_message == "Model is overloaded"
    assert info.value.retryable is True


async def test_api_key_is_never_read_from_a_bare_api_key_variable(
        drive: ProviderDriver, mock: respx.MockRouter) -> None:
    route = mock.post(V1).respond(200, json=fixture_json("tgi/v1_completion.json"))
    router = drive.router("tgi", env={"API_KEY": "some-other-service"})

    await drive.complete(router, prompt="def add(a, b):", max_tokens=32)

    assert "authorization" not in route.calls.last.request.headers


async def test_api_key_when_configured(drive: ProviderDriver, mock: respx.MockRouter) -> None:
    route = mock.post(V1).respond(200, json=fixture_json("tgi/v1_completion.json"))
    router = drive.router("tgi", env={"API_KEY": "tgi-secret"},
                          providers={"tgi": {"api_key_env": "API_KEY"}})

    await drive.complete(router, prompt="def add(a, b):", max_tokens=32)

    assert route.calls.last.request.headers["authorization"] == "Bearer tgi-secret"


# -- discovery and /tokenize (pure adapter functions) ------------------------------------------


def test_probe_reads_info_at_the_root() -> None:
    (probe,) = TGI().probe(Endpoint("tgi", "http://localhost:8080/v1"))

    assert (probe.method, probe.url, probe.body) == ("GET", "http://localhost:8080/info", None)
    assert dict(probe.headers) == {"accept": "application/json"}


def test_discovered_window_keeps_both_limits() -> None:
    endpoint = Endpoint("tgi", "http://localhost:8080/v1")
    answer = WireResponse(200, {}, fixture_bytes("tgi/info.json"))

    (dep,) = TGI().discovered(endpoint, [answer])

    # max_input_tokens 8191 and max_total_tokens 16384: prompts longer than 8191 are refused.
    assert (dep.name, dep.variant, dep.model, dep.context_window) == (
        "tgi/bigcode/starcoder2-15b", "starcoder2-15b", "bigcode/starcoder2-15b", 8192)
    assert dep.pricing == "local"
    assert dep.base_url == "http://localhost:8080/v1"


def test_discovered_nothing_for_another_model() -> None:
    info = fixture_json("tgi/info.json") | {"model_id": "mistralai/Mistral-7B-v0.1"}
    answer = WireResponse(200, {}, httpx.Response(200, json=info).content)

    assert TGI().discovered(Endpoint("tgi", "http://localhost:8080/v1"), [answer]) == []


def test_tokenize() -> None:
    request = TGI().tokenize_request(Endpoint("tgi", "http://localhost:8080/v1"), "def add(")

    assert isinstance(request, WireRequest)
    assert (request.method, request.url) == ("POST", "http://localhost:8080/tokenize")
    assert request.json() == {"inputs": "def add("}
    assert TGI().token_count(WireResponse(200, {}, fixture_bytes("tgi/tokenize.json"))) == 3
