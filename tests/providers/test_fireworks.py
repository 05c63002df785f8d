"""Fireworks AI: the exact requests on the wire and how answers, streams and errors read back.

Each test runs through `Router` and `AsyncRouter(transport="httpx")` (the `drive` fixture)."""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest
import respx

from starcoder_router import (
    ContextLengthError,
    NotFoundError,
    ProviderServerError,
    RateLimitError,
)
from support.provider_replies import (
    COMPLETIONS_URL,
    FIM_PROMPT,
    FIM_STOPS,
    PROMPT_STOPS,
    SCHEMA,
    ProviderDriver,
    assert_post,
    body_of,
    fixture_json,
    sse,
)

URL = COMPLETIONS_URL["fireworks"]
MODEL = "accounts/fireworks/models/starcoder2-7b"


_headers = partial(assert_post, url=URL, key="fw-test-key")


async def test_plain_completion(drive: ProviderDriver, mock: respx.MockRouter) -> None:
    route = mock.post(URL).respond(200, json=fixture_json("fireworks/completion.json"),
                                   headers={"x-request-id": "fw-req-1"})
    router = drive.router("fireworks")

    completion = await drive.complete(router, prompt="def add(a, b):", max_tokens=32,
                                      temperature=0.2, seed=7)

    _headers(route.calls.last.request)
    assert body_of(route) == {
        "model": MODEL, "prompt": "def add(a, b):", "max_tokens": 32, "temperature": 0.2,
        "stop": PROMPT_STOPS, "seed": 7, "context_length_exceeded_behavior": "error",
    }
    assert completion.text == "return a + b"
    assert completion.finish_reason == "stop"
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens,
            completion.usage.source) == (14, 5, "provider")
    assert completion.request_id == "fw-req-1"
    assert completion.model == MODEL
    assert completion.cost_usd == pytest.approx(19 * 0.2 / 1e6)


async def test_fim_sends_the_psm_prompt_and_no_suffix(drive: ProviderDriver,
                                                      mock: respx.MockRouter) -> None:
    route = mock.post(URL).respond(200, json=fixture_json("fireworks/completion.json"))
    router = drive.router("fireworks")

    await drive.complete(router, prefix="def add(a, b):\n    ", suffix="\n", max_tokens=32)

    _headers(route.calls.last.request)
    assert body_of(route) == {
        "model": MODEL, "prompt": FIM_PROMPT, "max_tokens": 32, "stop": FIM_STOPS,
        "context_length_exceeded_behavior": "error",
    }


async def test_stream_with_a_usage_only_last_chunk(drive: ProviderDriver,
                                                   mock: respx.MockRouter) -> None:
    route = mock.post(URL).mock(return_value=sse("fireworks/stream_usage_last.sse"))
    router = drive.router("fireworks")

    chunks, completion = await drive.stream(router, prefix="def add(a, b):\n    ", suffix="\n",
                                            max_tokens=32)

    _headers(route.calls.last.request, accept="text/event-stream")
    assert body_of(route) == {
        "model": MODEL, "prompt": FIM_PROMPT, "max_tokens": 32, "stop": FIM_STOPS,
        "stream": True, "stream_options": {"include_usage": True},
        "context_length_exceeded_behavior": "error",
    }
    assert [c.text for c in chunks] == ["return", " a + b", ""]
    assert [c.finish_reason for c in chunks] == [None, None, "stop"]
    assert completion.text == "return a + b"
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens,
            completion.usage.source) == (14, 4, "provider")
    assert completion.request_id == "cmpl-fw-0003"


async def test_stream_without_usage_is_counted(
        drive: ProviderDriver, mock: respx.MockRouter) -> None:
    mock.post(URL).mock(return_value=sse("fireworks/stream_no_usage.sse"))
    router = drive.router("fireworks")

    _, completion = await drive.stream(router, prompt="def add(a, b):", max_tokens=32)

    assert completion.text == "return a + b"
    assert completion.usage.source == "counted"
    assert completion.usage.prompt_tokens > 0
    assert completion.usage.completion_tokens > 0


async def test_usage_headers_fill_in_a_body_without_usage(drive: ProviderDriver,
                                                          mock: respx.MockRouter) -> None:
    mock.post(URL).respond(200, json=fixture_json("fireworks/completion_no_usage.json"),
                           headers={"fireworks-prompt-tokens": "14",
                                    "fireworks-completion-tokens": "32"})
    router = drive.router("fireworks")

    completion = await drive.complete(router, prompt="def add(a, b):", max_tokens=32)

    assert completion.finish_reason == "length"
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens,
            completion.usage.source) == (14, 32, "provider")


@pytest.mark.parametrize(("requested", "on_wire", "reply"), [
    pytest.param({"type": "json_object"}, {"type": "json_object"}, '{"name": "add"}',
                 id="json_object"),
    pytest.param({"type": "json_object", "json_schema": SCHEMA},
                 {"type": "json_object", "schema": SCHEMA}, '{"name": "add"}',
                 id="json_object+schema"),
    pytest.param({"type": "json_schema", "json_schema": {"name": "fn", "schema": SCHEMA}},
                 {"type": "json_schema", "json_schema": {"name": "fn", "schema": SCHEMA}},
                 '{"name": "add"}', id="json_schema"),
    pytest.param({"type": "grammar", "grammar": 'root ::= "yes" | "no"'},
                 {"type": "grammar", "grammar": 'root ::= "yes" | "no"'}, "yes", id="grammar"),
])
async def test_structured_output_forms(drive: ProviderDriver, mock: respx.MockRouter,
                                       requested: dict[str, Any], on_wire: dict[str, Any],
                                       reply: str) -> None:
    answer = fixture_json("fireworks/completion.json")
    answer["choices"][0]["text"] = reply
    route = mock.post(URL).respond(200, json=answer)
    router = drive.router("fireworks")

    completion = await drive.complete(router, prompt="Name the function:", max_tokens=32,
                                      response_format=requested)

    assert body_of(route) == {
        "model": MODEL, "prompt": "Name the function:", "max_tokens": 32, "stop": PROMPT_STOPS,
        "response_format": on_wire, "context_length_exceeded_behavior": "error",
    }
    assert completion.text == reply


async def test_overflow_is_a_context_length_error(
        drive: ProviderDriver, mock: respx.MockRouter) -> None:
    mock.post(URL).respond(400, json=fixture_json("fireworks/overflow_400.json"))
    router = drive.router("fireworks")

    with pytest.raises(ContextLengthError) as info:
        await drive.complete(router, prompt="def add(a, b):", max_tokens=32)

    err = info.value
    assert (err.context_window, err.prompt_tokens) == (32767, 40177)
    assert err.status_code == 400
    assert err.retryable is False
    assert err.deployment == "fireworks/starcoder2-7b"


async def test_retired_model_is_not_found(drive: ProviderDriver, mock: respx.MockRouter) -> None:
    mock.post(URL).respond(404, json=fixture_json("fireworks/not_found_404.json"))
    router = drive.router("fireworks")

    with pytest.raises(NotFoundError) as info:
        await drive.complete(router, prompt="def add(a, b):", max_tokens=32)

    assert info.value.request_id == "fw-req-404-7f3a"
    assert info.value.provider_message == "Model not found, inaccessible, and/or not deployed"
    assert info.value.retryable is False


async def test_429_names_the_rate_limits_it_hit(
        drive: ProviderDriver, mock: respx.MockRouter) -> None:
    mock.post(URL).respond(429, json={"error": {"message": "rate limit exceeded"}}, headers={
        "x-ratelimit-limit-tokens-prompt": "60000",
        "x-ratelimit-limit-tokens-generated": "6000",
        "x-ratelimit-over-limit": "yes",
    })
    router = drive.router("fireworks")

    with pytest.raises(RateLimitError) as info:
        await drive.complete(router, prompt="def add(a, b):", max_tokens=32)

    err = info.value
    assert err.retryable is True
    assert err.retry_after is None  # limits in tokens/s are not a time to wait
    assert "prompt tokens/s 60000" in str(err)
    assert "generated tokens/s 6000" in str(err)
    assert "over limit" in str(err)


async def test_503_service_overloaded_is_a_retryable_server_error(
        drive: ProviderDriver, mock: respx.MockRouter) -> None:
    mock.post(URL).respond(503, json=fixture_json("fireworks/overloaded_503.json"))
    router = drive.router("fireworks")

    with pytest.raises(ProviderServerError) as info:
        await drive.complete(router, prompt="def add(a, b):", max_tokens=32)

    assert not isinstance(info.value, RateLimitError)
    assert info.value.status_code == 503
    assert info.value.retryable is True
    assert info.value.provider_message == "Service Overloaded"


@pytest.mark.parametrize("var", ["FIREWORKS_API_KEY", "FIREWORKS_AI_API_KEY"])
async def test_key_variables(drive: ProviderDriver, mock: respx.MockRouter, var: str) -> None:
    route = mock.post(URL).respond(200, json=fixture_json("fireworks/completion.json"))
    router = drive.router("fireworks", env={var: "fw-from-" + var})

    await drive.complete(router, prompt="def add(a, b):", max_tokens=32)

    assert route.calls.last.request.headers["authorization"] == "Bearer fw-from-" + var
