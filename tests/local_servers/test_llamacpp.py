"""llama.cpp's llama-server through `Router` and `AsyncRouter` (httpx transport, so respx sees
the wire), on replies recorded from a real server: the exact request for each endpoint
(`/v1/completions`, native `/completion` and `/infill`), streams, the `/infill` cut warnings and
every error mapping. Each router test runs in both modes (the `drive` fixture); the adapter's
pure `/tokenize` helpers are tested once, at the end."""

from __future__ import annotations

import json

import httpx
import pytest
import respx

from starcoder_router import (
    AuthenticationError,
    BadRequestError,
    ContextLengthError,
    ProviderError,
    ProviderServerError,
    Usage,
)
from starcoder_router._providers.call import Endpoint, WireResponse
from starcoder_router._providers.llamacpp import LlamaCpp
from support.local_replies import (
    FIM_STOPS,
    LLAMA,
    PROMPT_STOPS,
    body_of,
    fixture,
    infill_reply,
    llama_dep,
    llama_error,
    llama_json,
    llama_sse,
)
from support.router_driver import Driver, Make

V1 = f"{LLAMA}/v1/completions"
NATIVE = f"{LLAMA}/completion"
INFILL = f"{LLAMA}/infill"
PREFIX, SUFFIX = "def add(a, b):\n    ", "\n\nprint(add(1, 2))\n"
PSM = f"<fim_prefix>{PREFIX}<fim_suffix>{SUFFIX}<fim_middle>"


# -- OpenAI-compatible /v1/completions (the default) -------------------------------------------


async def test_plain_request_and_reply(drive: Driver, make: Make,
                                       mock: respx.MockRouter) -> None:
    route = mock.post(V1).mock(return_value=llama_json("v1_completions.json"))
    c = await drive.complete(make(llama_dep()), prompt=PREFIX, max_tokens=8, temperature=0.2)
    req = route.calls.last.request
    assert (req.method, str(req.url)) == ("POST", V1)
    assert (req.headers["content-type"], req.headers["accept"]) == ("application/json",) * 2
    assert "authorization" not in req.headers
    assert req.headers.get("connection") != "close"
    assert json.loads(req.content) == {"model": "starcoder2-3b", "prompt": PREFIX,
                                       "max_tokens": 8, "temperature": 0.2,
                                       "stop": PROMPT_STOPS}
    assert (c.text, c.finish_reason) == (" x x x x x x x x", "length")
    assert c.usage == Usage(6, 8, "provider")
    assert (c.model, c.request_id) == ("tiny-starcoder2.gguf",
                                       "chatcmpl-76v8bMlaFZJwbywOIt3z6e15wjaqItoi")


async def test_fim_is_a_raw_psm_prompt_never_suffix(drive: Driver, make: Make,
                                                    mock: respx.MockRouter) -> None:
    route = mock.post(V1).mock(return_value=llama_json("v1_completions.json"))
    await drive.complete(make(llama_dep()), prefix=PREFIX, suffix=SUFFIX, max_tokens=8)
    body = body_of(route)
    assert "suffix" not in body
    assert (body["prompt"], body["stop"]) == (PSM, FIM_STOPS)


async def test_stream_has_usage_on_the_finish_chunk(drive: Driver, make: Make,
                                                    mock: respx.MockRouter) -> None:
    route = mock.post(V1).mock(return_value=llama_sse("v1_completions_stream.sse"))
    chunks, completion = await drive.stream(make(llama_dep()), prompt=PREFIX, max_tokens=4)
    req = route.calls.last.request
    assert (req.headers["accept"], req.headers["connection"]) == ("text/event-stream", "close")
    body = json.loads(req.content)
    assert (body["stream"], body["stream_options"]) == (True, {"include_usage": True})
    assert [ch.text for ch in chunks] == [" x"] * 4 + [""]
    assert chunks[-1].finish_reason == "length"
    assert completion.usage == Usage(6, 4, "provider")


@pytest.mark.parametrize("api", [None, "native"])
@pytest.mark.parametrize(
    ("response_format", "fields"),
    [("json", {"json_schema": {"type": "object"}}),
     ({"type": "json_schema", "json_schema": {"name": "r", "schema": {"type": "object",
                                                                        "required": ["a"]}}},
      {"json_schema": {"type": "object", "required": ["a"]}}),
     ({"type": "grammar", "grammar": 'root ::= "{}"'}, {"grammar": 'root ::= "{}"'})],
    ids=["json_object", "json_schema", "grammar"],
)
async def test_structured_output_uses_llama_cpp_fields_not_response_format(
        drive: Driver, make: Make, mock: respx.MockRouter, api: str | None,
        response_format: object, fields: dict[str, object]) -> None:
    # /v1/completions silently ignores response_format; json_schema and grammar work on both.
    v1 = mock.post(V1).mock(return_value=httpx.Response(200, json={
        "choices": [{"text": '{"a": 1}', "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 3}}))
    native = mock.post(NATIVE).mock(return_value=httpx.Response(200, json={
        "content": '{"a": 1}', "stop": True, "stop_type": "eos", "tokens_evaluated": 1,
        "tokens_predicted": 3}))
    c = await drive.complete(make(llama_dep(api=api)),  # type: ignore[arg-type]
                             prompt="{", max_tokens=8, response_format=response_format)
    body = body_of(native if api else v1)
    assert "response_format" not in body
    assert {k: body[k] for k in fields} == fields
    assert c.text == '{"a": 1}'


async def test_api_key_from_llama_api_key(drive: Driver, make: Make,
                                          mock: respx.MockRouter) -> None:
    route = mock.post(V1).mock(return_value=llama_json("v1_completions.json"))
    await drive.complete(make(llama_dep(), env={"LLAMA_API_KEY": "sk-local-1"}), prompt="x")
    assert route.calls.last.request.headers["authorization"] == "Bearer sk-local-1"


# -- native /completion and /infill ------------------------------------------------------------


async def test_native_completion_request_and_reply(drive: Driver, make: Make,
                                                   mock: respx.MockRouter) -> None:
    route = mock.post(NATIVE).mock(return_value=llama_json("completion.json"))
    c = await drive.complete(make(llama_dep(api="native")), prompt=PREFIX, max_tokens=8, seed=3,
                             top_p=0.5)
    assert body_of(route) == {"model": "starcoder2-3b", "prompt": PREFIX, "n_predict": 8,
                              "top_p": 0.5, "seed": 3, "stop": PROMPT_STOPS, "stream": False,
                              "cache_prompt": True}
    assert (c.text, c.finish_reason, c.raw_finish_reason) == (" x x x x x x x x", "length",
                                                              "limit")
    assert (c.usage, c.model, c.warnings) == (Usage(6, 8, "provider"), "tiny-starcoder2.gguf", ())


async def test_native_stream_ends_on_stop_true_without_done(drive: Driver, make: Make,
                                                            mock: respx.MockRouter) -> None:
    route = mock.post(NATIVE).mock(return_value=llama_sse("completion_stream.sse"))
    chunks, completion = await drive.stream(make(llama_dep(api="native")), prompt=PREFIX,
                                            max_tokens=4)
    assert body_of(route)["stream"] is True
    assert route.calls.last.request.headers["connection"] == "close"
    assert [ch.text for ch in chunks] == [" x"] * 4 + [""]
    assert (completion.usage, completion.finish_reason) == (Usage(6, 4, "provider"), "length")


@pytest.mark.parametrize(("stop_type", "finish"), [("eos", "stop"), ("word", "stop"),
                                                    ("limit", "length")])
async def test_native_stop_types(drive: Driver, make: Make, mock: respx.MockRouter,
                                 stop_type: str, finish: str) -> None:
    data = json.loads(fixture("completion.json")) | {"stop_type": stop_type}
    mock.post(NATIVE).mock(return_value=httpx.Response(200, json=data))
    c = await drive.complete(make(llama_dep(api="native")), prompt="x")
    assert c.finish_reason == finish


async def test_native_truncated_flag_warns(drive: Driver, make: Make,
                                           mock: respx.MockRouter) -> None:
    data = json.loads(fixture("completion.json")) | {"truncated": True}
    mock.post(NATIVE).mock(return_value=httpx.Response(200, json=data))
    c = await drive.complete(make(llama_dep(api="native")), prompt="x")
    assert c.warnings == ("llama.cpp truncated the prompt to fit its context",)


async def test_native_fim_goes_to_infill_with_the_parts(drive: Driver, make: Make,
                                                        mock: respx.MockRouter) -> None:
    route = mock.post(INFILL).mock(return_value=llama_json("infill.json"))
    c = await drive.complete(
        make(llama_dep(api="native")), prefix=PREFIX, suffix=SUFFIX,
        files=[("util.py", "def sub(a, b):\n    return a - b\n")], max_tokens=4)
    assert body_of(route) == {
        "model": "starcoder2-3b", "n_predict": 4, "stop": FIM_STOPS, "stream": False,
        "cache_prompt": True, "input_prefix": PREFIX, "input_suffix": SUFFIX,
        "input_extra": [{"filename": "util.py", "text": "def sub(a, b):\n    return a - b\n"}],
    }
    # The recorded server kept only the last two tokens of util.py (n_ctx - n_batch = 0).
    assert c.text == " x x x x"
    [warning] = c.warnings
    assert "dropped repository context" in warning and "util.py" in warning


async def test_infill_that_kept_everything_warns_nothing(drive: Driver, make: Make,
                                                         mock: respx.MockRouter) -> None:
    mock.post(INFILL).mock(return_value=infill_reply(PSM))
    c = await drive.complete(make(llama_dep(api="native")), prefix=PREFIX, suffix=SUFFIX)
    assert c.warnings == ()


async def test_infill_puts_the_file_path_where_our_psm_prompt_has_it(
        drive: Driver, make: Make, mock: respx.MockRouter) -> None:
    echo = f"<fim_prefix>src/add.py\n{PREFIX}<fim_suffix>{SUFFIX}<fim_middle>"
    route = mock.post(INFILL).mock(return_value=infill_reply(echo))
    c = await drive.complete(make(llama_dep(api="native")), prefix=PREFIX, suffix=SUFFIX,
                             path="src/add.py", repo_name="proj")
    assert body_of(route)["input_prefix"] == f"src/add.py\n{PREFIX}"
    assert c.warnings == ("llama.cpp /infill has no place for a repository name; it was not sent",)


async def test_infill_that_cut_the_prefix_warns(drive: Driver, make: Make,
                                                mock: respx.MockRouter) -> None:
    mock.post(INFILL).mock(return_value=infill_reply(
        f"<fim_prefix>    <fim_suffix>{SUFFIX}<fim_middle>"))
    c = await drive.complete(make(llama_dep(api="native")), prefix=PREFIX, suffix=SUFFIX)
    [warning] = c.warnings
    assert "cut the prefix or suffix" in warning


async def test_infill_stream_checks_the_echo_on_the_last_event(drive: Driver, make: Make,
                                                               mock: respx.MockRouter) -> None:
    events = [{"content": " x", "stop": False, "tokens_predicted": 1, "tokens_evaluated": 9},
              {"content": "", "stop": True, "stop_type": "limit", "tokens_predicted": 1,
               "tokens_evaluated": 9, "truncated": False, "model": "m",
               "prompt": f"<fim_prefix>{PREFIX}<fim_suffix><fim_middle>"}]
    sse = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
    mock.post(INFILL).mock(return_value=httpx.Response(200, content=sse))
    chunks, completion = await drive.stream(make(llama_dep(api="native")), prefix=PREFIX,
                                            suffix=SUFFIX)
    assert [ch.text for ch in chunks] == [" x", ""]
    assert completion.usage == Usage(9, 1, "provider")
    assert len(completion.warnings) == 1  # the suffix is missing from the echo


# -- errors ------------------------------------------------------------------------------------


async def test_context_overflow_carries_both_numbers(drive: Driver, make: Make,
                                                     mock: respx.MockRouter) -> None:
    mock.post(V1).mock(return_value=llama_json("error_exceed_context_size.json"))
    with pytest.raises(ContextLengthError) as info:
        await drive.complete(make(llama_dep()), prompt="x")
    err = info.value
    assert (err.context_window, err.prompt_tokens) == (2048, 2201)
    assert (err.status_code, err.retryable) == (400, False)


@pytest.mark.parametrize(
    ("status", "kind", "message", "cls", "retryable"),
    [
        (501, "not_supported_error", "Infill is not supported by this model: prefix token is "
                                     "missing.", BadRequestError, False),
        (503, "unavailable_error", "Loading model", ProviderServerError, True),
        (401, "authentication_error", "Invalid API Key", AuthenticationError, False),
        (500, "server_error", "[json.exception.parse_error.101] parse error",
         ProviderServerError, True),
        (400, "invalid_request_error", "\"prompt\" must be provided", BadRequestError, False),
    ],
    ids=["no-fim-tokens", "loading", "bad-key", "server-error", "bad-request"],
)
async def test_error_mapping(drive: Driver, make: Make, mock: respx.MockRouter, status: int,
                             kind: str, message: str, cls: type[ProviderError],
                             retryable: bool) -> None:
    mock.post(INFILL).mock(return_value=llama_error(status, kind, message))
    with pytest.raises(ProviderError) as info:
        await drive.complete(make(llama_dep(api="native")), prefix=PREFIX, suffix=SUFFIX)
    err = info.value
    assert type(err) is cls
    assert (err.retryable, err.status_code, err.provider_message) == (retryable, status, message)


async def test_error_event_inside_a_stream(drive: Driver, make: Make,
                                           mock: respx.MockRouter) -> None:
    sse = b'data: {"error":{"code":500,"message":"slot failed","type":"server_error"}}\n\n'
    mock.post(NATIVE).mock(return_value=httpx.Response(200, content=sse))
    with pytest.raises(ProviderServerError, match="slot failed"):
        await drive.stream(make(llama_dep(api="native")), prompt="x")


# -- the tokenize helper (pure, so one mode) ---------------------------------------------------


def test_tokenize_request_and_count() -> None:
    adapter = LlamaCpp()
    req = adapter.tokenize_request(Endpoint("llamacpp", LLAMA + "/"), PSM)
    assert (req.method, req.url) == ("POST", f"{LLAMA}/tokenize")
    assert req.json() == {"content": PSM, "add_special": False, "parse_special": True}
    assert adapter.token_count(WireResponse(200, {}, fixture("tokenize.json"))) == 23


def test_tokenize_error_is_mapped() -> None:
    answer = WireResponse(401, {}, b'{"error":{"code":401,"message":"Invalid API Key",'
                                   b'"type":"authentication_error"}}')
    with pytest.raises(AuthenticationError):
        LlamaCpp().token_count(answer)
