"""DeepInfra: the exact requests on the wire and how answers, streams and errors read back.

Each test runs through `Router` and `AsyncRouter(transport="httpx")` (the `drive` fixture)."""

from __future__ import annotations

import logging

import pytest
import respx

from starcoder_router import (
    BadRequestError,
    ContextLengthError,
    NoRouteError,
    RateLimitError,
    StructuredOutputError,
)
from support.provider_replies import (
    COMPLETIONS_URL,
    FIM_PROMPT,
    SCHEMA,
    ProviderDriver,
    body_of,
    fixture_json,
    sse,
)

URL = COMPLETIONS_URL["deepinfra"]
MODEL = "bigcode/starcoder2-15b"


async def test_url_is_exactly_the_openai_path(
        drive: ProviderDriver, mock: respx.MockRouter) -> None:
    route = mock.post(URL).respond(200, json=fixture_json("deepinfra/completion.json"))
    router = drive.router("deepinfra")

    completion = await drive.complete(router, prompt="def add(a, b):", max_tokens=32)

    request = route.calls.last.request
    assert request.method == "POST"
    assert str(request.url) == "https://api.deepinfra.com/v1/openai/completions"
    assert request.headers["authorization"] == "Bearer di-test-key"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["accept"] == "application/json"
    assert body_of(route) == {"model": MODEL, "prompt": "def add(a, b):", "max_tokens": 32,
                              "stop": ["<file_sep>", "<|endoftext|>"]}
    assert completion.text == "return a + b"
    assert completion.warnings == ()
    assert completion.cost_usd == pytest.approx(19 * 0.4 / 1e6)


@pytest.mark.parametrize("var", ["DEEPINFRA_TOKEN", "DEEPINFRA_API_KEY", "DEEPINFRA_API_TOKEN"])
async def test_each_key_variable(drive: ProviderDriver, mock: respx.MockRouter, var: str) -> None:
    route = mock.post(URL).respond(200, json=fixture_json("deepinfra/completion.json"))
    router = drive.router("deepinfra", env={var: "di-from-" + var})

    await drive.complete(router, prompt="def add(a, b):", max_tokens=32)

    assert route.calls.last.request.headers["authorization"] == "Bearer di-from-" + var


async def test_without_a_key_deepinfra_is_not_routable(drive: ProviderDriver) -> None:
    router = drive.router("deepinfra", env={})

    with pytest.raises(NoRouteError, match="DEEPINFRA_API_KEY or DEEPINFRA_TOKEN"):
        await drive.complete(router, prompt="def add(a, b):", max_tokens=32)


async def test_fim_keeps_the_callers_stops_first_and_at_most_four(
        drive: ProviderDriver, mock: respx.MockRouter) -> None:
    route = mock.post(URL).respond(200, json=fixture_json("deepinfra/completion.json"))
    router = drive.router("deepinfra")

    await drive.complete(router, prefix="def add(a, b):\n    ", suffix="\n", max_tokens=32,
                         stop=["\n\n", "# end"])

    assert body_of(route) == {"model": MODEL, "prompt": FIM_PROMPT, "max_tokens": 32,
                              "stop": ["\n\n", "# end", "<file_sep>", "<fim_prefix>"]}


async def test_silent_redirect_warns_on_each_completion_and_logs_once(
        drive: ProviderDriver, mock: respx.MockRouter, caplog: pytest.LogCaptureFixture) -> None:
    mock.post(URL).respond(200, json=fixture_json("deepinfra/completion_redirected.json"))
    router = drive.router("deepinfra")
    caplog.set_level(logging.WARNING, logger="starcoder_router")

    first = await drive.complete(router, prompt="def add(a, b):", max_tokens=32)
    second = await drive.complete(router, prompt="def sub(a, b):", max_tokens=32)

    for completion in (first, second):
        assert completion.model == "Qwen/Qwen2.5-Coder-32B-Instruct"
        assert len(completion.warnings) == 1
        assert "'Qwen/Qwen2.5-Coder-32B-Instruct' for 'bigcode/starcoder2-15b'" in \
            completion.warnings[0]
    logged = [r for r in caplog.records if "redirected" in r.getMessage()]
    assert len(logged) == 1
    assert logged[0].levelno == logging.WARNING


async def test_stream_reads_usage_from_the_finish_chunk(drive: ProviderDriver,
                                                        mock: respx.MockRouter) -> None:
    route = mock.post(URL).mock(return_value=sse("deepinfra/stream_usage_on_finish.sse"))
    router = drive.router("deepinfra")

    chunks, completion = await drive.stream(router, prompt="def add(a, b):", max_tokens=32)

    assert route.calls.last.request.headers["accept"] == "text/event-stream"
    assert body_of(route) == {"model": MODEL, "prompt": "def add(a, b):", "max_tokens": 32,
                              "stop": ["<file_sep>", "<|endoftext|>"], "stream": True,
                              "stream_options": {"include_usage": True}}
    assert [c.text for c in chunks] == ["return", " a + b", ""]
    assert chunks[-1].finish_reason == "stop"
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens,
            completion.usage.source) == (14, 4, "provider")


async def test_stream_redirect_is_flagged_too(
        drive: ProviderDriver, mock: respx.MockRouter) -> None:
    body = sse("deepinfra/stream_usage_on_finish.sse").content.replace(
        b'"model":"bigcode/starcoder2-15b"', b'"model":"Qwen/Qwen2.5-Coder-32B-Instruct"')
    mock.post(URL).respond(200, content=body, headers={"content-type": "text/event-stream"})
    router = drive.router("deepinfra")

    _, completion = await drive.stream(router, prompt="def add(a, b):", max_tokens=32)

    assert len(completion.warnings) == 1


async def test_a_schema_is_sent_as_json_object_and_checked_here(
        drive: ProviderDriver, mock: respx.MockRouter) -> None:
    answer = fixture_json("deepinfra/completion.json")
    answer["choices"][0]["text"] = '{"title": "add"}'  # JSON, but not the schema's shape
    route = mock.post(URL).respond(200, json=answer)
    router = drive.router("deepinfra")

    with pytest.raises(StructuredOutputError, match="does not match the schema"):
        await drive.complete(router, prompt="Name it:", max_tokens=32,
                             response_format={"type": "json_schema", "json_schema": SCHEMA})

    assert body_of(route)["response_format"] == {"type": "json_object"}


async def test_422_detail_is_a_bad_request(drive: ProviderDriver, mock: respx.MockRouter) -> None:
    mock.post(URL).respond(422, json=fixture_json("deepinfra/validation_422.json"))
    router = drive.router("deepinfra")

    with pytest.raises(BadRequestError) as info:
        await drive.complete(router, prompt="def add(a, b):", max_tokens=32)

    assert not isinstance(info.value, ContextLengthError)
    assert info.value.status_code == 422
    assert info.value.provider_message == "body.max_tokens: ensure this value is greater than 0"


async def test_429_rate_limited_is_retryable(drive: ProviderDriver, mock: respx.MockRouter) -> None:
    mock.post(URL).respond(429, json=fixture_json("deepinfra/rate_limited_429.json"))
    router = drive.router("deepinfra")

    with pytest.raises(RateLimitError) as info:
        await drive.complete(router, prompt="def add(a, b):", max_tokens=32)

    assert info.value.retryable is True
    assert info.value.retry_after is None
    assert info.value.provider_message == "Rate limited"
