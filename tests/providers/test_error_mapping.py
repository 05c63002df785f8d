"""Every failure, for every provider of the OpenAI-compatible family, through `Router` and
`AsyncRouter(transport="httpx")`: the exception class, `retryable`, status and context.

Bodies use each provider's own error shape; provider-specific texts are tested in the
provider's own file. One attempt per test (`max_retries=0`), except where retries are the point.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import logging
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import respx

from starcoder_router import (
    AuthenticationError,
    BadRequestError,
    ContextLengthError,
    FakeClock,
    InvalidResponseError,
    NotFoundError,
    ProviderConnectionError,
    ProviderError,
    ProviderServerError,
    ProviderTimeoutError,
    RateLimitError,
    RetryPolicy,
    StreamInterruptedError,
)
from starcoder_router._providers.registry import provider_class
from support.ports import free_port
from support.provider_replies import COMPLETIONS_URL, DEPLOYMENTS, ProviderDriver, fixture_json

PROVIDERS = ["fireworks", "deepinfra", "vllm", "tgi", "lmstudio"]


def error_body(provider: str, message: str) -> dict[str, Any]:
    """`message` in the provider's error shape."""
    if provider == "tgi":
        return {"error": message, "error_type": "validation"}
    if provider == "lmstudio":
        return {"error": message}
    return {"error": {"message": message, "type": "invalid_request_error", "code": None}}


# (status, body, context_window, prompt_tokens) of each provider's context overflow.
OVERFLOW = {
    "fireworks": (400, fixture_json("fireworks/overflow_400.json"), 32767, 40177),
    "deepinfra": (400, error_body("deepinfra", (
        "This model's maximum context length is 16384 tokens. However, you requested 16500 "
        "tokens (16400 in the messages, 100 in the completion). Please reduce the length of "
        "the messages or completion.")), 16384, 16400),
    "vllm": (400, fixture_json("vllm/overflow_requested_400.json"), 16384, 16400),
    "tgi": (422, fixture_json("tgi/validation_overflow_422.json"), 16384, 16300),
    "lmstudio": (400, fixture_json("lmstudio/overflow_400.json"), 4096, 17000),
}


@dataclass(frozen=True)
class Case:
    status: int
    error: type[ProviderError]
    retryable: bool
    message: str = "something went wrong"
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None  # overrides error_body(provider, message)
    retry_after_in: float | None = None  # send Retry-After as the HTTP date this far ahead


def _http_date(seconds_from_now: float) -> str:
    when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds_from_now)
    return email.utils.format_datetime(when, usegmt=True)


STATUS_CASES = {
    "400-other": Case(400, BadRequestError, False, "Invalid value for 'temperature'"),
    "401": Case(401, AuthenticationError, False, "invalid api key"),
    "403": Case(403, AuthenticationError, False, "not allowed to use this model"),
    "404": Case(404, NotFoundError, False, "model not found"),
    "422": Case(422, BadRequestError, False, body={"detail": [
        {"loc": ["body", "prompt"], "msg": "field required", "type": "value_error.missing"}]}),
    "429-seconds": Case(429, RateLimitError, True, "slow down", {"retry-after": "7"}),
    "429-http-date": Case(429, RateLimitError, True, "slow down", retry_after_in=30),
    "500": Case(500, ProviderServerError, True, "internal error"),
    "503": Case(503, ProviderServerError, True, "Service Unavailable", {"retry-after": "2"}),
}


@pytest.mark.parametrize("case_id", list(STATUS_CASES))
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_status_mapping(drive: ProviderDriver, mock: respx.MockRouter, provider: str,
                              case_id: str) -> None:
    case = STATUS_CASES[case_id]
    body = case.body if case.body is not None else error_body(provider, case.message)
    headers = dict(case.headers)
    if case.retry_after_in is not None:
        headers["retry-after"] = _http_date(case.retry_after_in)
    route = mock.post(COMPLETIONS_URL[provider]).respond(case.status, json=body, headers=headers)
    router = drive.router(provider)

    with pytest.raises(case.error) as info:
        await drive.complete(router, prompt="def add(a, b):", max_tokens=32)

    err = info.value
    assert type(err) is case.error
    assert err.retryable is case.retryable
    assert err.status_code == case.status
    assert (err.provider, err.deployment) == (provider, DEPLOYMENTS[provider].name)
    assert len(err.attempts) == 1
    assert route.call_count == 1
    if case_id == "429-seconds":
        assert err.retry_after == 7.0  # type: ignore[attr-defined]
    if case_id == "429-http-date":
        assert 25.0 <= err.retry_after <= 30.0  # type: ignore[attr-defined]
    if case_id == "503":
        assert err.retry_after == 2.0  # type: ignore[attr-defined]


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_overflow_is_a_context_length_error(drive: ProviderDriver, mock: respx.MockRouter,
                                                  provider: str) -> None:
    status, body, window, prompt_tokens = OVERFLOW[provider]
    mock.post(COMPLETIONS_URL[provider]).respond(status, json=body)
    router = drive.router(provider)

    with pytest.raises(ContextLengthError) as info:
        await drive.complete(router, prompt="def add(a, b):", max_tokens=32)

    err = info.value
    assert (err.context_window, err.prompt_tokens) == (window, prompt_tokens)
    assert err.retryable is False
    assert err.status_code == status


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_malformed_json(drive: ProviderDriver, mock: respx.MockRouter, provider: str) -> None:
    mock.post(COMPLETIONS_URL[provider]).respond(
        200, content=b'{"id": "cmpl-1", "choices": [{"text": "ret',
        headers={"content-type": "application/json"})
    router = drive.router(provider)

    with pytest.raises(InvalidResponseError) as info:
        await drive.complete(router, prompt="def add(a, b):", max_tokens=32)

    assert info.value.retryable is True
    assert info.value.provider == provider


def _chunk(text: str) -> bytes:
    event = {"id": "cmpl-1", "model": "m",
             "choices": [{"index": 0, "text": text, "finish_reason": None}]}
    return b"data: " + json.dumps(event).encode() + b"\n\n"


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_stream_cut_before_any_text(drive: ProviderDriver, mock: respx.MockRouter,
                                          provider: str) -> None:
    mock.post(COMPLETIONS_URL[provider]).respond(200, content=_chunk(""),
                                                 headers={"content-type": "text/event-stream"})
    router = drive.router(provider)

    with pytest.raises(InvalidResponseError, match="stream ended before") as info:
        await drive.stream(router, prompt="def add(a, b):", max_tokens=32)

    assert info.value.retryable is True
    assert info.value.deployment == DEPLOYMENTS[provider].name


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_stream_cut_after_text(drive: ProviderDriver, mock: respx.MockRouter,
                                     provider: str) -> None:
    mock.post(COMPLETIONS_URL[provider]).respond(200, content=_chunk("return"),
                                                 headers={"content-type": "text/event-stream"})
    router = drive.router(provider)

    with pytest.raises(StreamInterruptedError) as info:
        await drive.stream(router, prompt="def add(a, b):", max_tokens=32)

    # Text had reached the caller, so no fallback: the truncation is the cause.
    assert info.value.delivered_text == "return"
    assert isinstance(info.value.__cause__, InvalidResponseError)


@pytest.mark.parametrize(("raised", "expected"), [
    pytest.param(httpx.ConnectError("[Errno 111] Connection refused"), ProviderConnectionError,
                 id="connection-refused"),
    pytest.param(httpx.ReadTimeout("timed out"), ProviderTimeoutError, id="timeout"),
])
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_transport_failures(drive: ProviderDriver, mock: respx.MockRouter, provider: str,
                                  raised: Exception, expected: type[ProviderError]) -> None:
    mock.post(COMPLETIONS_URL[provider]).mock(side_effect=raised)
    router = drive.router(provider)

    with pytest.raises(expected) as info:
        await drive.complete(router, prompt="def add(a, b):", max_tokens=32)

    assert info.value.retryable is True
    assert info.value.status_code is None
    assert info.value.deployment == DEPLOYMENTS[provider].name


async def test_a_real_refused_connection(drive: ProviderDriver) -> None:
    base_url = f"http://127.0.0.1:{free_port()}/v1"
    router = drive.router("vllm", providers={"vllm": {"base_url": base_url}})

    with pytest.raises(ProviderConnectionError) as info:
        await drive.complete(router, prompt="def add(a, b):", max_tokens=32)

    assert info.value.deployment == "vllm/starcoder2-3b"


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_retry_after_is_waited_on_the_clock(drive: ProviderDriver, mock: respx.MockRouter,
                                                  provider: str) -> None:
    ok = fixture_json("vllm/completion.json")
    route = mock.post(COMPLETIONS_URL[provider]).mock(side_effect=[
        httpx.Response(429, json=error_body(provider, "slow down"), headers={"retry-after": "3"}),
        httpx.Response(200, json=ok),
    ])
    clock = FakeClock()
    router = drive.router(provider, clock=clock, retry=RetryPolicy(max_retries=1, jitter_s=0))

    completion = await drive.complete(router, prompt="def add(a, b):", max_tokens=32)

    assert completion.text == "return a + b"
    assert clock.sleeps == [3.0]
    assert route.call_count == 2
    assert [a.outcome for a in completion.attempts] == ["error", "ok"]


# -- keys never leak -----------------------------------------------------------------------------

LEAKY_KEY = "sk-LEAKCHECK-7c1f9e2d4b6a8f0e1d3c5b7a"

KEY_SETUP: dict[str, dict[str, Any]] = {
    "fireworks": {"env": {"FIREWORKS_API_KEY": LEAKY_KEY}},
    "deepinfra": {"env": {"DEEPINFRA_TOKEN": LEAKY_KEY}},
    "vllm": {"env": {"VLLM_API_KEY": LEAKY_KEY}},
    "tgi": {"env": {"API_KEY": LEAKY_KEY}, "providers": {"tgi": {"api_key_env": "API_KEY"}}},
    "lmstudio": {"env": {"LM_API_TOKEN": LEAKY_KEY}},
}


# What each provider says when asked for a GBNF grammar it cannot take (Fireworks takes them).
GRAMMAR_REFUSALS = {"deepinfra": "does not take GBNF grammars", "vllm": "GBNF",
                    "lmstudio": "GBNF", "tgi": "not GBNF"}


@pytest.mark.parametrize("provider", list(GRAMMAR_REFUSALS))
async def test_grammars_are_refused_before_sending(drive: ProviderDriver, mock: respx.MockRouter,
                                                   provider: str) -> None:
    route = mock.route().respond(500)  # any request at all would be a failure
    router = drive.router(provider)

    with pytest.raises(BadRequestError, match=GRAMMAR_REFUSALS[provider]):
        await drive.complete(router, prompt="yes or no:", max_tokens=4,
                             response_format={"type": "grammar", "grammar": 'root ::= "yes"'})

    assert not route.called


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_keys_never_appear_in_errors_reprs_or_logs(
        drive: ProviderDriver, mock: respx.MockRouter, caplog: pytest.LogCaptureFixture,
        provider: str, stream: bool) -> None:
    caplog.set_level(logging.DEBUG)
    # A server that echoes the key back, as some do ("Incorrect API key provided: ...").
    route = mock.post(COMPLETIONS_URL[provider]).respond(
        401, json=error_body(provider, f"Incorrect API key provided: {LEAKY_KEY}"))
    router = drive.router(provider, **KEY_SETUP[provider])

    with pytest.raises(AuthenticationError) as info:
        if stream:
            await drive.stream(router, prompt="def add(a, b):", max_tokens=32)
        else:
            await drive.complete(router, prompt="def add(a, b):", max_tokens=32)

    assert route.calls.last.request.headers["authorization"] == "Bearer " + LEAKY_KEY
    err = info.value
    shown = [str(err), repr(err), err.message, err.provider_message or "", repr(err.attempts),
             repr(router), caplog.text]
    for text in shown:
        assert LEAKY_KEY not in text
        assert LEAKY_KEY[-8:] not in text
    assert "***" in (err.provider_message or "")


@pytest.mark.parametrize("provider", PROVIDERS)
def test_wire_request_repr_hides_the_key(provider: str) -> None:
    from starcoder_router._providers.call import Call, Endpoint
    from starcoder_router._routing.render import render
    from starcoder_router._routing.request import CompletionRequest
    from starcoder_router._secrets import Secret

    adapter = provider_class(provider)()
    request = CompletionRequest(prompt="def add(a, b):", max_tokens=8)
    endpoint = Endpoint(provider, adapter.default_base_url, Secret(LEAKY_KEY))
    wire = adapter.build(Call(DEPLOYMENTS[provider], request, render(request), endpoint))

    assert wire.headers["authorization"] == "Bearer " + LEAKY_KEY
    assert LEAKY_KEY not in repr(wire)
    assert LEAKY_KEY not in repr(adapter)
    assert LEAKY_KEY not in repr(endpoint)
