"""The TGI protocol, driven by Hugging Face's `InferenceClient.text_generation` as llm-vscode's
users configure it (a URL as the model), and by raw requests in llm-ls's shape."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from huggingface_hub import InferenceClient
from huggingface_hub.errors import ValidationError

from starcoder_router import AutocompletePolicy

FIM = "<fim_prefix>def add(a, b):\n    <fim_suffix>\n<fim_middle>"


def test_generate(serve: Any, upstream: Any) -> None:
    gw = serve()
    client = InferenceClient(model=gw.url + "/generate", timeout=10)
    text = client.text_generation(FIM, max_new_tokens=8, stop=["\n\n"])
    assert text == "return a + b"
    body = upstream.bodies[-1]
    assert body["prompt"] == FIM  # llm-ls writes the FIM sentinels itself
    assert body["max_tokens"] == 8
    assert body["stop"][0] == "\n\n"
    assert body["temperature"] == 0.0  # TGI is greedy unless do_sample


def test_generate_with_details(serve: Any) -> None:
    gw = serve()
    out = InferenceClient(model=gw.url + "/generate", timeout=10).text_generation(
        "def f():", max_new_tokens=2, details=True)
    assert out.generated_text == "return a"
    assert out.details is not None
    assert out.details.finish_reason == "eos_token"
    assert out.details.generated_tokens == 2


# These send a greedy request twice to see the upstream answer twice: without the exact-repeat
# cache, which would answer the second.
NO_CACHE = AutocompletePolicy(cache_entries=0)


def test_generate_stream(serve: Any, upstream: Any) -> None:
    gw = serve(autocomplete=NO_CACHE)
    client = InferenceClient(model=gw.url + "/generate_stream", timeout=10)
    tokens = list(client.text_generation(FIM, max_new_tokens=8, stream=True))
    assert "".join(tokens) == "return a + b"
    events = list(client.text_generation(FIM, max_new_tokens=8, stream=True, details=True))
    assert events[-1].generated_text == "return a + b"
    assert events[-1].details is not None
    assert events[-1].details.generated_tokens == 4
    assert upstream.bodies[-1]["stream"] is True


def test_llm_ls_request_shape(serve: Any, upstream: Any) -> None:
    # What llm-ls sends to a TGI backend: inputs with the sentinels, parameters, stream false.
    gw = serve()
    r = httpx.post(gw.url + "/generate", json={
        "inputs": FIM, "parameters": {"max_new_tokens": 60, "temperature": 0.2,
                                      "do_sample": True, "top_p": 0.95},
    }, timeout=10)
    assert r.status_code == 200
    assert r.json() == {"generated_text": "return a + b"}
    assert r.headers["x-starcoder-router-deployment"] == "mock/starcoder2-3b"
    body = upstream.bodies[-1]
    assert (body["temperature"], body["top_p"], body["max_tokens"]) == (0.2, 0.95, 60)


def test_errors_are_tgi_shaped(serve: Any) -> None:
    gw = serve()
    r = httpx.post(gw.url + "/generate", json={"inputs": 3}, timeout=10)
    assert r.status_code == 400
    assert r.json()["error_type"] == "validation"
    # the client reads error_type and raises its own class for it
    with pytest.raises(ValidationError, match="maximum context length is 2048 tokens"):
        InferenceClient(model=gw.url + "/generate", timeout=10).text_generation(
            "x = 1\n" * 3000, max_new_tokens=8)


# The response schemas of TGI's OpenAPI document (components/schemas, trimmed to what the
# gateway sends): https://github.com/huggingface/text-generation-inference/blob/main/docs/openapi.json
_FINISH = {"type": "string", "enum": ["length", "eos_token", "stop_sequence"]}
_TOKEN = {"type": "object", "required": ["id", "text", "logprob", "special"],
          "properties": {"id": {"type": "integer", "minimum": 0}, "text": {"type": "string"},
                         "logprob": {"type": ["number", "null"]},
                         "special": {"type": "boolean"}}}
_COUNT = {"type": "integer", "minimum": 0}
_SEED = {"type": ["integer", "null"], "minimum": 0}
STREAM_RESPONSE = {
    "type": "object", "required": ["index", "token"],
    "properties": {
        "index": _COUNT, "token": _TOKEN, "generated_text": {"type": ["string", "null"]},
        "details": {"oneOf": [{"type": "null"}, {
            "type": "object", "required": ["finish_reason", "generated_tokens", "input_length"],
            "properties": {"finish_reason": _FINISH, "generated_tokens": _COUNT,
                           "input_length": _COUNT, "seed": _SEED}}]},
    },
}
GENERATE_RESPONSE = {
    "type": "object", "required": ["generated_text"],
    "properties": {
        "generated_text": {"type": "string"},
        "details": {"oneOf": [{"type": "null"}, {
            "type": "object",
            "required": ["finish_reason", "generated_tokens", "prefill", "tokens"],
            "properties": {"finish_reason": _FINISH, "generated_tokens": _COUNT, "seed": _SEED,
                           "prefill": {"type": "array"},
                           "tokens": {"type": "array", "items": _TOKEN}}}]},
    },
}
INFO = {"type": "object", "required": [
    "model_id", "max_concurrent_requests", "max_best_of", "max_stop_sequences",
    "max_input_tokens", "max_total_tokens", "validation_workers", "max_client_batch_size",
    "router", "version"], "properties": {
    "model_id": {"type": "string"}, "router": {"type": "string"}, "version": {"type": "string"},
    **{k: _COUNT for k in ("max_concurrent_requests", "max_best_of", "max_stop_sequences",
                           "max_input_tokens", "max_total_tokens", "validation_workers",
                           "max_client_batch_size")}}}
ERROR = {"type": "object", "required": ["error", "error_type"],
         "properties": {"error": {"type": "string"}, "error_type": {"type": "string"}}}


def _events(r: httpx.Response) -> list[dict[str, Any]]:
    import json

    return [json.loads(line[5:]) for line in r.text.splitlines() if line.startswith("data:")]


@pytest.mark.parametrize("empty_final", [False, True])
def test_stream_events_match_tgis_schema(serve: Any, upstream: Any, empty_final: bool) -> None:
    import jsonschema
    from upstream import Reply

    gw = serve(autocomplete=NO_CACHE)
    upstream.script(Reply(empty_final=empty_final))
    r = httpx.post(gw.url + "/generate_stream",
                   json={"inputs": "def f():", "parameters": {"max_new_tokens": 8}}, timeout=10)
    events = _events(r)
    for event in events:
        jsonschema.validate(event, STREAM_RESPONSE)
    # TGI's last event carries the last token with the whole text and the details; no event
    # has an empty token (the upstream's empty finishing chunk included)
    assert [e["token"]["text"] for e in events] == ["return", " a", " +", " b"]
    assert [e["index"] for e in events] == [1, 2, 3, 4]
    assert [e["generated_text"] for e in events] == [None, None, None, "return a + b"]
    details = events[-1]["details"]
    assert details["input_length"] == upstream.bodies[-1]["prompt"].__len__() // 4
    assert details["generated_tokens"] == 4
    # huggingface_hub reads the same
    upstream.script(Reply(empty_final=empty_final))
    client = InferenceClient(model=gw.url + "/generate_stream", timeout=10)
    out = list(client.text_generation("def f():", max_new_tokens=8, stream=True, details=True))
    assert out[-1].details is not None
    assert out[-1].details.input_length == details["input_length"]
    assert "".join(o.token.text for o in out) == "return a + b"


def test_responses_match_tgis_schema(serve: Any) -> None:
    import jsonschema

    gw = serve()
    for details in (False, True):
        r = httpx.post(gw.url + "/generate", json={
            "inputs": "def f():", "parameters": {"max_new_tokens": 4, "details": details}},
            timeout=10)
        jsonschema.validate(r.json(), GENERATE_RESPONSE)
    # the compatibility route answers a list of one generation, as TGI's compat_generate does
    compat = httpx.post(gw.url + "/", json={"inputs": "def f():",
                                            "parameters": {"max_new_tokens": 4}}, timeout=10)
    jsonschema.validate(compat.json(), {"type": "array", "items": GENERATE_RESPONSE,
                                        "minItems": 1, "maxItems": 1})
    assert InferenceClient(model=gw.url, timeout=10).text_generation(
        "def f():", max_new_tokens=4) == "return a + b"
    info = httpx.get(gw.url + "/info", timeout=10).json()
    jsonschema.validate(info, INFO)
    assert info["max_total_tokens"] == 2048  # the deployments' window
    bad = httpx.post(gw.url + "/generate", json={"inputs": 3}, timeout=10)
    jsonschema.validate(bad.json(), ERROR)


def test_wrong_key_is_a_plain_401(serve: Any) -> None:
    from huggingface_hub.errors import HfHubHTTPError, UnknownError

    from starcoder_router._server.settings import ServerSettings, TenantSettings
    from starcoder_router._server.tenants import hash_key

    tenants = (TenantSettings(name="acme", key_sha256=hash_key("sk-acme")),)
    gw = serve(settings=ServerSettings(tenants=tenants))
    for path in ("/generate", "/generate_stream", "/"):
        r = httpx.post(gw.url + path, json={"inputs": "x"},
                       headers={"Authorization": "Bearer wrong"}, timeout=10)
        assert r.status_code == 401
        assert r.content == b""
    client = InferenceClient(model=gw.url + "/generate", token="wrong", timeout=10)
    with pytest.raises(HfHubHTTPError) as info:
        client.text_generation("x", max_new_tokens=2)
    assert not isinstance(info.value, UnknownError)
    assert info.value.response is not None and info.value.response.status_code == 401
    ok = InferenceClient(model=gw.url + "/generate", token="sk-acme", timeout=10)
    assert ok.text_generation("x", max_new_tokens=2) == "return a"


def test_stream_error_after_text_keeps_every_token(serve: Any, upstream: Any) -> None:
    from upstream import Reply

    from starcoder_router._server.settings import ServerSettings

    # the upstream stalls after two words and the request's deadline ends it: both words reach
    # the client (the last one is not lost with the final event), then TGI's error event
    gw = serve(settings=ServerSettings(request_timeout_s=1.0))
    upstream.script(Reply(text="one two three four", hang_after=2))
    r = httpx.post(gw.url + "/generate_stream",
                   json={"inputs": "def f():", "parameters": {"max_new_tokens": 8}}, timeout=10)
    events = _events(r)
    assert [e["token"]["text"] for e in events[:-1]] == ["one", " two"]
    assert events[-1]["error_type"] in ("overloaded", "generation")
