"""Ollama through `Router` and `AsyncRouter` (httpx transport, so respx sees the wire): the
exact request on the wire, replies, NDJSON streams, the truncation warning and every error
mapping. Each test runs in both modes (the `drive` fixture)."""

from __future__ import annotations

import json
import logging

import httpx
import pytest
import respx

from starcoder_router import (
    BadRequestError,
    ContextLengthError,
    InvalidResponseError,
    NotFoundError,
    ProviderError,
    ProviderServerError,
    StreamInterruptedError,
    Usage,
)
from support.local_replies import (
    FIM_STOPS,
    OLLAMA,
    PROMPT_STOPS,
    body_of,
    ndjson,
    ollama_dep,
    ollama_error,
    ollama_reply,
    ollama_stream,
    structured,
)
from support.router_driver import Driver, Make

GENERATE = f"{OLLAMA}/api/generate"
PREFIX, SUFFIX = "def add(a, b):\n    ", "\n\nprint(add(1, 2))\n"
PSM = f"<fim_prefix>{PREFIX}<fim_suffix>{SUFFIX}<fim_middle>"


async def test_plain_request_is_raw_with_num_ctx_and_stream_false(
        drive: Driver, make: Make, mock: respx.MockRouter) -> None:
    route = mock.post(GENERATE).mock(return_value=ollama_reply())
    c = await drive.complete(make(ollama_dep()), prompt=PREFIX, max_tokens=32, temperature=0.2,
                             top_p=0.9, seed=7, stop=["\n\n"])
    req = route.calls.last.request
    assert (req.method, str(req.url)) == ("POST", GENERATE)
    assert (req.headers["content-type"], req.headers["accept"]) == ("application/json",) * 2
    assert "authorization" not in req.headers
    assert json.loads(req.content) == {
        "model": "starcoder2:3b", "prompt": PREFIX, "raw": True, "stream": False,
        "truncate": False, "shift": False,
        "options": {"num_ctx": 16384, "num_predict": 32, "temperature": 0.2, "top_p": 0.9,
                    "seed": 7, "stop": ["\n\n", *PROMPT_STOPS]},
    }
    assert (c.text, c.finish_reason, c.raw_finish_reason) == ("return a + b", "stop", "stop")
    assert c.usage == Usage(12, 4, "provider")
    assert (c.model, c.warnings) == ("starcoder2:3b", ())


async def test_unset_sampling_options_are_left_to_the_server(drive: Driver, make: Make,
                                                             mock: respx.MockRouter) -> None:
    route = mock.post(GENERATE).mock(return_value=ollama_reply())
    await drive.complete(make(ollama_dep(window=8192)), prompt="x = ", max_tokens=5)
    assert body_of(route)["options"] == {"num_ctx": 8192, "num_predict": 5,
                                         "stop": PROMPT_STOPS}


async def test_fim_goes_as_a_raw_psm_prompt_never_as_suffix(drive: Driver, make: Make,
                                                            mock: respx.MockRouter) -> None:
    route = mock.post(GENERATE).mock(return_value=ollama_reply("return a + b"))
    c = await drive.complete(make(ollama_dep()), prefix=PREFIX, suffix=SUFFIX, max_tokens=16)
    body = body_of(route)
    assert "suffix" not in body
    assert (body["prompt"], body["raw"], body["options"]["stop"]) == (PSM, True, FIM_STOPS)
    assert c.text == "return a + b"


async def test_empty_suffix_still_renders_the_fim_prompt(drive: Driver, make: Make,
                                                         mock: respx.MockRouter) -> None:
    route = mock.post(GENERATE).mock(return_value=ollama_reply())
    await drive.complete(make(ollama_dep()), prefix=PREFIX, suffix="", max_tokens=16)
    assert body_of(route)["prompt"] == f"<fim_prefix>{PREFIX}<fim_suffix><fim_middle>"


@pytest.mark.parametrize(
    ("response_format", "expected"),
    [("json", "json"),
     ({"type": "json_schema", "json_schema": {"name": "r", "schema": {"type": "object"}}},
      {"type": "object"})],
    ids=["json_object", "json_schema"],
)
async def test_structured_output_is_format(drive: Driver, make: Make, mock: respx.MockRouter,
                                           response_format: object, expected: object) -> None:
    route = mock.post(GENERATE).mock(return_value=ollama_reply('{"a": 1}'))
    c = await drive.complete(make(structured(ollama_dep())), prompt="{", max_tokens=16,
                             response_format=response_format)
    assert body_of(route)["format"] == expected
    assert c.json() == {"a": 1}


async def test_grammar_is_refused_before_sending(drive: Driver, make: Make,
                                                 mock: respx.MockRouter) -> None:
    route = mock.post(GENERATE).mock(return_value=ollama_reply())
    with pytest.raises(BadRequestError, match="GBNF"):
        await drive.complete(make(structured(ollama_dep())), prompt="x",
                             response_format={"type": "grammar", "grammar": "root ::= \"a\""})
    assert not route.called


async def test_stream_reads_ndjson_and_counts_on_the_done_line(drive: Driver, make: Make,
                                                               mock: respx.MockRouter) -> None:
    route = mock.post(GENERATE).mock(
        return_value=ollama_stream("return", " a", " + b", prompt_eval=9, reason="length"))
    chunks, completion = await drive.stream(make(ollama_dep()), prompt=PREFIX, max_tokens=3)
    req = route.calls.last.request
    assert req.headers["accept"] == "application/x-ndjson"
    assert json.loads(req.content)["stream"] is True
    assert [ch.text for ch in chunks] == ["return", " a", " + b", ""]
    assert chunks[-1].finish_reason == "length"
    assert completion.usage == Usage(9, 3, "provider")
    assert (completion.text, completion.raw_finish_reason) == ("return a + b", "length")


async def test_error_line_before_any_text_is_the_mapped_error(drive: Driver, make: Make,
                                                              mock: respx.MockRouter) -> None:
    mock.post(GENERATE).mock(return_value=ndjson(
        {"error": "server busy, please try again.  maximum pending requests exceeded"}))
    with pytest.raises(ProviderServerError) as info:
        await drive.stream(make(ollama_dep()), prompt="x")
    assert info.value.retryable is True
    assert info.value.status_code is None  # the HTTP status was 200
    assert "server busy" in (info.value.provider_message or "")


async def test_error_line_with_a_status_keeps_it(drive: Driver, make: Make,
                                                 mock: respx.MockRouter) -> None:
    mock.post(GENERATE).mock(return_value=ndjson(
        {"error": "the input length exceeds the context length", "status": 400}))
    with pytest.raises(ContextLengthError) as info:
        await drive.stream(make(ollama_dep()), prompt="x")
    assert (info.value.status_code, info.value.retryable) == (400, False)


async def test_error_line_after_text_interrupts_the_stream(drive: Driver, make: Make,
                                                           mock: respx.MockRouter) -> None:
    mock.post(GENERATE).mock(return_value=ndjson(
        {"model": "starcoder2:3b", "response": "return", "done": False},
        {"error": "an error was encountered while running the model: unexpected EOF"}))
    got: list[str] = []
    with pytest.raises(StreamInterruptedError) as info:
        async with drive.open_stream(make(ollama_dep()), prompt="x") as s:
            async for ch in s:
                got.append(ch.text)
    assert got == ["return"]
    assert info.value.delivered_text == "return"
    assert isinstance(info.value.__cause__, ProviderServerError)


async def test_stream_without_a_done_line_is_invalid(drive: Driver, make: Make,
                                                     mock: respx.MockRouter) -> None:
    mock.post(GENERATE).mock(return_value=ndjson({"model": "m", "response": "", "done": False}))
    with pytest.raises(InvalidResponseError, match="ended before"):
        await drive.stream(make(ollama_dep()), prompt="x")


async def test_a_200_with_an_error_object_is_an_error(drive: Driver, make: Make,
                                                      mock: respx.MockRouter) -> None:
    mock.post(GENERATE).mock(return_value=httpx.Response(200, json={"error": "boom"}))
    with pytest.raises(ProviderServerError, match="boom"):
        await drive.complete(make(ollama_dep()), prompt="x")


@pytest.mark.parametrize(
    ("status", "message", "cls", "retryable"),
    [
        (404, 'model "starcoder2:3b" not found, try pulling it first', NotFoundError, False),
        (400, '"starcoder2:3b" does not support insert', BadRequestError, False),
        (503, "server busy, please try again.  maximum pending requests exceeded",
         ProviderServerError, True),
        (400, "the prompt is longer than the context length currently available to the model; "
              "try a shorter prompt", ContextLengthError, False),
        (500, "the input length exceeds the context length", ContextLengthError, False),
        (500, "llama runner process has terminated: exit status 2", ProviderServerError, True),
    ],
    ids=["not-pulled", "no-insert", "busy", "too-long", "too-long-500", "runner-died"],
)
async def test_error_mapping(drive: Driver, make: Make, mock: respx.MockRouter, status: int,
                             message: str, cls: type[ProviderError], retryable: bool) -> None:
    mock.post(GENERATE).mock(return_value=ollama_error(status, message))
    with pytest.raises(ProviderError) as info:
        await drive.complete(make(ollama_dep()), prompt="x")
    err = info.value
    assert type(err) is cls
    assert (err.retryable, err.status_code, err.provider_message) == (retryable, status, message)
    assert (err.provider, err.deployment) == ("ollama", "ollama/starcoder2-3b")


async def test_warns_when_the_whole_window_was_evaluated(
        drive: Driver, make: Make, mock: respx.MockRouter,
        caplog: pytest.LogCaptureFixture) -> None:
    mock.post(GENERATE).mock(return_value=ollama_reply(prompt_eval=4096))
    with caplog.at_level(logging.WARNING, logger="starcoder_router"):
        c = await drive.complete(make(ollama_dep(window=4096)), prompt="x = 1\n", max_tokens=8)
    [warning] = c.warnings
    assert "whole num_ctx window of 4096" in warning
    assert warning in caplog.text


async def test_warns_on_the_half_window_cut(drive: Driver, make: Make,
                                            mock: respx.MockRouter) -> None:
    # 4 kept + (4096 - 4) // 2: what a context-shifting runner keeps of an over-long prompt.
    mock.post(GENERATE).mock(return_value=ollama_reply(prompt_eval=2050))
    c = await drive.complete(make(ollama_dep(window=4096)), prompt="x = 1\n" * 400,
                             max_tokens=8)
    assert len(c.warnings) == 1 and "half-window" in c.warnings[0]


async def test_warns_in_a_stream_too(drive: Driver, make: Make, mock: respx.MockRouter,
                                     caplog: pytest.LogCaptureFixture) -> None:
    mock.post(GENERATE).mock(return_value=ollama_stream("a", prompt_eval=4096))
    router = make(ollama_dep(window=4096))
    with caplog.at_level(logging.WARNING, logger="starcoder_router"):
        _, completion = await drive.stream(router, prompt="x", max_tokens=8)
    assert len(completion.warnings) == 1
    assert caplog.text.count("whole num_ctx window") == 1  # logged once


async def test_no_warning_when_the_count_is_plausible(drive: Driver, make: Make,
                                                      mock: respx.MockRouter) -> None:
    mock.post(GENERATE).mock(return_value=ollama_reply(prompt_eval=3))
    c = await drive.complete(make(ollama_dep(window=4096)), prompt="x = 1\n" * 400,
                             max_tokens=8)
    assert c.warnings == ()


async def test_missing_prompt_eval_count_is_counted_by_us(drive: Driver, make: Make,
                                                          mock: respx.MockRouter) -> None:
    mock.post(GENERATE).mock(return_value=ollama_reply(prompt_eval=None, evals=2))
    c = await drive.complete(make(ollama_dep()), prompt="x = 1", max_tokens=8)
    assert (c.usage.source, c.usage.completion_tokens, c.warnings) == ("counted", 2, ())


@pytest.mark.parametrize(("evals", "finish"), [(8, "length"), (3, "stop")])
async def test_old_servers_without_done_reason(drive: Driver, make: Make, mock: respx.MockRouter,
                                               evals: int, finish: str) -> None:
    mock.post(GENERATE).mock(return_value=ollama_reply(evals=evals, reason=None))
    c = await drive.complete(make(ollama_dep()), prompt="x", max_tokens=8)
    assert c.finish_reason == finish


# -- api="openai" ---------------------------------------------------------------------------------


async def test_openai_api_posts_v1_completions_without_num_ctx(drive: Driver, make: Make,
                                                               mock: respx.MockRouter) -> None:
    route = mock.post(f"{OLLAMA}/v1/completions").mock(return_value=httpx.Response(200, json={
        "id": "cmpl-1", "object": "text_completion", "model": "starcoder2:3b",
        "choices": [{"index": 0, "text": "return 1", "finish_reason": "length"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}}))
    c = await drive.complete(make(ollama_dep(api="openai")), prompt="def f():", max_tokens=4)
    assert body_of(route) == {"model": "starcoder2:3b", "prompt": "def f():", "max_tokens": 4,
                              "stop": PROMPT_STOPS}
    assert (c.text, c.finish_reason, c.usage) == ("return 1", "length", Usage(5, 4, "provider"))


async def test_openai_api_streams_sse_with_usage(drive: Driver, make: Make,
                                                 mock: respx.MockRouter) -> None:
    events = [{"id": "c", "choices": [{"index": 0, "text": "ab", "finish_reason": None}]},
              {"id": "c", "choices": [{"index": 0, "text": "", "finish_reason": "stop"}]},
              {"id": "c", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}}]
    sse = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
    route = mock.post(f"{OLLAMA}/v1/completions").mock(
        return_value=httpx.Response(200, content=sse + b"data: [DONE]\n\n"))
    chunks, completion = await drive.stream(make(ollama_dep(api="openai")), prompt="x",
                                            max_tokens=4)
    assert [ch.text for ch in chunks] == ["ab", ""]
    assert body_of(route)["stream_options"] == {"include_usage": True}
    assert completion.usage == Usage(3, 1, "provider")


async def test_openai_api_refuses_structured_output(drive: Driver, make: Make,
                                                    mock: respx.MockRouter) -> None:
    route = mock.post(f"{OLLAMA}/v1/completions").mock(return_value=ollama_reply())
    with pytest.raises(BadRequestError, match="response_format"):
        await drive.complete(make(structured(ollama_dep(api="openai"))), prompt="x",
                             response_format="json")
    assert not route.called
