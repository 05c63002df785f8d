"""Provider quirks that the providers' public sources contradicted: each test pins the fixed
behaviour on the wire. Each runs through `Router` and `AsyncRouter(transport="httpx")`."""

from __future__ import annotations

import json
import random
import re
from typing import Any

import httpx
import pytest
import respx

from starcoder_router import ContextLengthError, ProviderServerError
from starcoder_router._providers.tgi import JSON_OBJECT_REGEX
from support.provider_replies import COMPLETIONS_URL, ProviderDriver, body_of

TGI_GENERATE = "http://localhost:8080/generate"


# -- TGI: json_object needs a grammar TGI >= 2.3 accepts --------------------------------------


async def test_tgi_json_object_goes_as_a_regex_grammar(drive: ProviderDriver,
                                                       mock: respx.MockRouter) -> None:
    route = mock.post(TGI_GENERATE).respond(200, json={
        "generated_text": '{"a": 1}', "details": {"finish_reason": "eos_token",
                                                  "generated_tokens": 6}})
    router = drive.router("tgi")

    completion = await drive.complete(router, prompt="Give JSON:", max_tokens=32,
                                      response_format={"type": "json_object"})

    # A JSON grammar without top-level `properties` is a 422 since TGI 2.3, and an empty
    # `properties` only ever produces `{}`.
    assert body_of(route) == {"inputs": "Give JSON:", "parameters": {
        "max_new_tokens": 32, "details": True, "stop": ["<file_sep>", "<|endoftext|>"],
        "grammar": {"type": "regex", "value": JSON_OBJECT_REGEX}}}
    assert completion.json() == {"a": 1}


def _random_json(rng: random.Random, depth: int) -> Any:
    kind = rng.randrange(6 if depth > 0 else 4)
    if kind == 0:
        return rng.choice([True, False, None])
    if kind == 1:
        return rng.choice([0, -7, 3.25, 1e-9, 12345678901234])
    if kind in (2, 3):
        return "".join(rng.choice('ab "\\\n\u00e9\u2603/') for _ in range(rng.randrange(5)))
    if kind == 4:
        return [_random_json(rng, depth - 1) for _ in range(rng.randrange(3))]
    return {str(i) + "k": _random_json(rng, depth - 1) for i in range(rng.randrange(3))}


@pytest.mark.parametrize("seed", range(200))
def test_the_json_object_regex_takes_objects_nested_three_deep(seed: int) -> None:
    rng = random.Random(seed)
    value = {f"k{i}": _random_json(rng, 2) for i in range(rng.randrange(4))}
    for text in (json.dumps(value), json.dumps(value, indent=2),
                 json.dumps(value, ensure_ascii=False)):
        assert re.fullmatch(JSON_OBJECT_REGEX, text), text


@pytest.mark.parametrize("text", ["[]", "1", '"x"', "{a: 1}", '{"a": }', '{"a": 1,}',
                                  '{"a": [1, 2}', '{"a": 01}', '{"a": "\x01"}'])
def test_the_json_object_regex_refuses_what_is_no_json_object(text: str) -> None:
    assert re.fullmatch(JSON_OBJECT_REGEX, text) is None


# -- TGI: /v1 stream errors nest the status ------------------------------------------------------


def _stream_of(event: dict[str, Any]) -> httpx.Response:
    return httpx.Response(200, content=f"data: {json.dumps(event)}\n\n".encode(),
                          headers={"content-type": "text/event-stream"})


async def test_tgi_v1_stream_overflow_is_a_context_length_error(
        drive: ProviderDriver, mock: respx.MockRouter) -> None:
    mock.post(COMPLETIONS_URL["tgi"]).mock(return_value=_stream_of({"error": {
        "message": "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096. "
                   "Given: 4000 `inputs` tokens and 200 `max_new_tokens`",
        "http_status_code": 422}}))
    router = drive.router("tgi")

    with pytest.raises(ContextLengthError) as info:
        await drive.stream(router, prompt="def add(a, b):", max_tokens=200, stream=True)

    err = info.value
    assert (err.status_code, err.context_window, err.prompt_tokens) == (422, 4096, 4000)
    assert err.retryable is False


async def test_tgi_v1_stream_server_error_keeps_its_status(
        drive: ProviderDriver, mock: respx.MockRouter) -> None:
    mock.post(COMPLETIONS_URL["tgi"]).mock(return_value=_stream_of({"error": {
        "message": "Request failed during generation: CUDA out of memory",
        "http_status_code": 503}}))
    router = drive.router("tgi")

    with pytest.raises(ProviderServerError) as info:
        await drive.stream(router, prompt="def add(a, b):", max_tokens=200, stream=True)

    assert info.value.status_code == 503


# -- vLLM: the newer overflow wordings carry both numbers -----------------------------------------


@pytest.mark.parametrize(("message", "window", "prompt_tokens"), [
    pytest.param("You passed 5000 input tokens and requested 200 output tokens. However, the "
                 "model's context length is only 4096 tokens, resulting in a maximum input "
                 "length of 3896 tokens. Please reduce the length of the input prompt.",
                 4096, 5000, id="you-passed"),
    pytest.param("This model's maximum context length is 4096 tokens. However, you requested "
                 "1024 output tokens and your prompt contains at least 3073 input tokens, for "
                 "a total of at least 4097 tokens. Please reduce the length of the input "
                 "prompt or the number of requested output tokens.",
                 4096, 3073, id="at-least"),
])
async def test_vllm_newer_overflow_wordings(drive: ProviderDriver, mock: respx.MockRouter,
                                            message: str, window: int,
                                            prompt_tokens: int) -> None:
    mock.post(COMPLETIONS_URL["vllm"]).respond(400, json={"error": {
        "message": message, "type": "BadRequestError", "param": None, "code": 400}})
    router = drive.router("vllm")

    with pytest.raises(ContextLengthError) as info:
        await drive.complete(router, prompt="def add(a, b):", max_tokens=32)

    assert (info.value.context_window, info.value.prompt_tokens) == (window, prompt_tokens)
