"""Hostile request bodies: each gets a clean 4xx in the protocol's shape (naming the cap it
hit), costs bounded time on the shared loop, makes the gateway touch no network, and logs no
traceback."""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from upstream import Reply  # loaded by conftest.py

from starcoder_router._server.settings import ServerSettings

CHAT = "/v1/chat/completions"
INSTRUCT = "starcoder2-15b-instruct"


@pytest.fixture
def client(serve: Any) -> Iterator[httpx.Client]:
    gw = serve(settings=ServerSettings(max_tokens=512))
    with httpx.Client(base_url=gw.url, timeout=httpx.Timeout(20.0)) as c:
        yield c


@pytest.fixture
def no_tracebacks(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.INFO)
    yield
    bad = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not bad, [r.getMessage() for r in bad]


@pytest.fixture
def trap() -> Iterator[tuple[str, socket.socket]]:
    """A listening socket on 127.0.0.1 that nobody should connect to."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.settimeout(0.3)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}", sock
    sock.close()


def assert_untouched(sock: socket.socket) -> None:
    with pytest.raises(TimeoutError):
        conn, _ = sock.accept()
        conn.close()


def error_of(r: httpx.Response, path: str) -> str:
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    err = r.json()["error"]
    if path.startswith("/v1/"):
        assert set(err) == {"message", "type", "param", "code"}
        return str(err["message"])
    assert isinstance(err, str)
    return err


def chat_with_schema(schema: dict[str, Any]) -> dict[str, Any]:
    return {"model": INSTRUCT, "messages": [{"role": "user", "content": "give json"}],
            "response_format": {"type": "json_schema",
                                "json_schema": {"name": "r", "schema": schema}}}


def ollama_with_schema(schema: dict[str, Any]) -> dict[str, Any]:
    return {"model": "starcoder2", "prompt": "x", "stream": False, "format": schema}


# -- 1. schemas never make the gateway fetch anything --------------------------------------


@pytest.mark.parametrize("shape", ["remote", "relative-to-id", "nested"])
@pytest.mark.parametrize(("path", "body_for"), [(CHAT, chat_with_schema),
                                                ("/api/generate", ollama_with_schema)])
def test_a_schema_ref_is_never_fetched(client: httpx.Client, trap: tuple[str, socket.socket],
                                       no_tracebacks: None, shape: str, path: str,
                                       body_for: Any) -> None:
    url, sock = trap
    long_url = f"{url}/{'x' * 500}.json"
    schema: dict[str, Any] = {
        "remote": {"$ref": long_url},
        "relative-to-id": {"$id": f"{url}/base/", "$ref": "other.json"},
        "nested": {"type": "object", "properties": {"a": {"$ref": long_url + "#/a"}}},
    }[shape]
    started = time.perf_counter()
    r = client.post(path, json=body_for(schema))
    assert time.perf_counter() - started < 5
    message = error_of(r, path)
    assert "$ref" in message and "x" * 100 not in message
    assert_untouched(sock)


# -- 3. schema patterns run in linear time ----------------------------------------------------


def test_a_backtracking_pattern_against_a_steered_answer_is_fast(
        client: httpx.Client, upstream: Any, no_tracebacks: None) -> None:
    steered = json.dumps({"a": "a" * 40 + "!"})  # ^(a+)+$ takes ~2^40 steps in Python's re
    upstream.script(Reply(text=steered), Reply(text=steered), Reply(text=steered))
    schema = {"type": "object", "properties": {"a": {"type": "string", "pattern": "^(a+)+$"}}}
    started = time.perf_counter()
    r = client.post(CHAT, json=chat_with_schema(schema))
    assert time.perf_counter() - started < 5
    assert r.status_code == 503, r.text  # the answer does not match: no deployment could serve


def test_a_pattern_re2_cannot_compile_is_a_400(client: httpx.Client,
                                               no_tracebacks: None) -> None:
    schema = {"type": "object", "properties": {"a": {"pattern": "^(a)\\1$"}}}
    assert "RE2" in error_of(client.post(CHAT, json=chat_with_schema(schema)), CHAT)


# -- 4. deep nesting is a clean 400 -----------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/completions", CHAT, "/api/generate", "/generate"])
def test_a_deeply_nested_body_is_a_400(client: httpx.Client, no_tracebacks: None,
                                       path: str) -> None:
    deep = b'{"prompt": "x", "inputs": "x", "extra": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    r = client.post(path, content=deep, headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert "max_json_depth" in error_of(r, path)


@pytest.mark.parametrize(("path", "body_for"), [(CHAT, chat_with_schema),
                                                ("/api/generate", ollama_with_schema)])
def test_a_deeply_nested_schema_is_a_400(client: httpx.Client, no_tracebacks: None,
                                         path: str, body_for: Any) -> None:
    schema: dict[str, Any] = {"type": "object"}
    for _ in range(30):  # 60 JSON levels: under the body's cap, over the schema's
        schema = {"type": "object", "properties": {"a": schema}}
    r = client.post(path, json=body_for(schema))
    assert "max_schema_depth" in error_of(r, path)


# -- 5. token limits and numbers ----------------------------------------------------------


def _token_body(path: str, value: Any) -> dict[str, Any]:
    if path == "/v1/completions":
        return {"model": "starcoder2", "prompt": "x", "max_tokens": value}
    if path == CHAT:
        return {"model": INSTRUCT, "messages": [{"role": "user", "content": "x"}],
                "max_tokens": value}
    if path == "/api/generate":
        return {"model": "starcoder2", "prompt": "x", "stream": False,
                "options": {"num_predict": value}}
    return {"inputs": "x", "parameters": {"max_new_tokens": value}}


TOKEN_PATHS = ["/v1/completions", CHAT, "/api/generate", "/generate", "/generate_stream"]


@pytest.mark.parametrize("value", [-5, 0, -3, 2**70, -(2**70), True, False, 3.5, 3.0, "7", [], {}])
@pytest.mark.parametrize("path", TOKEN_PATHS)
def test_bad_token_limits_are_a_400(client: httpx.Client, upstream: Any, path: str,
                                    value: Any) -> None:
    r = client.post(path, json=_token_body(path, value))
    assert r.status_code == 400, (r.status_code, r.text)
    error_of(r, path)
    assert upstream.bodies == []


@pytest.mark.parametrize("path", TOKEN_PATHS)
def test_a_valid_token_limit_is_served(client: httpx.Client, upstream: Any, path: str) -> None:
    r = client.post(path, json=_token_body(path, 7))
    assert r.status_code == 200, r.text
    assert upstream.bodies[-1]["max_tokens"] == 7


@pytest.mark.parametrize("value", [-1, -2])
def test_ollama_num_predict_minus_one_means_as_many_as_allowed(
        client: httpx.Client, upstream: Any, value: int) -> None:
    r = client.post("/api/generate", json=_token_body("/api/generate", value))
    assert r.status_code == 200, r.text
    assert upstream.bodies[-1]["max_tokens"] == 512


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/completions", {"prompt": "x", "temperature": True}),
    ("/v1/completions", {"prompt": "x", "temperature": 1e308}),
    ("/v1/completions", {"prompt": "x", "top_p": 0}),
    ("/v1/completions", {"prompt": "x", "n": 2}),
    ("/v1/completions", {"prompt": "x", "n": True}),
    ("/v1/completions", {"prompt": "x", "best_of": 3}),
    ("/v1/completions", {"prompt": "x", "seed": 2**64}),
    ("/v1/completions", {"prompt": "x", "seed": 1.5}),
    ("/v1/completions", {"prompt": "x", "presence_penalty": 9}),
    (CHAT, {"model": INSTRUCT, "messages": [{"role": "user", "content": "x"}],
            "max_completion_tokens": -1}),
    (CHAT, {"model": INSTRUCT, "messages": [{"role": "user", "content": "x"}],
            "max_completion_tokens": 0}),
    ("/api/generate", {"model": "starcoder2", "prompt": "x", "options": {"temperature": -1}}),
    ("/api/generate", {"model": "starcoder2", "prompt": "x", "options": {"seed": True}}),
    ("/api/generate", {"model": "starcoder2", "prompt": "x", "options": {"top_p": 3}}),
    ("/generate", {"inputs": "x", "parameters": {"temperature": 0}}),
    ("/generate", {"inputs": "x", "parameters": {"top_p": 1}}),
    ("/generate", {"inputs": "x", "parameters": {"seed": False}}),
    ("/generate", {"inputs": "x", "parameters": {"seed": -(2**64)}}),
])
def test_bad_numbers_are_a_400(client: httpx.Client, upstream: Any, path: str,
                               body: dict[str, Any]) -> None:
    r = client.post(path, content=json.dumps(body), headers={"content-type": "application/json"})
    assert r.status_code == 400, (r.status_code, r.text)
    error_of(r, path)
    assert upstream.bodies == []


# -- 6. every cap names itself ------------------------------------------------------------


@pytest.mark.parametrize(("path", "body", "cap"), [
    ("/v1/completions", {"prompt": "x", "stop": ["s"] * 17}, "max_stops"),
    ("/v1/completions", {"prompt": "x", "stop": "s" * 257}, "max_stop_chars"),
    ("/api/generate", {"model": "starcoder2", "prompt": "x", "stop": ["s" * 4000]},
     "max_stop_chars"),
    ("/generate", {"inputs": "x", "parameters": {"stop": ["s"] * 100}}, "max_stops"),
    ("/v1/completions", {"prompt": "x" * 200_000, "suffix": "y" * 100_000}, "max_text_chars"),
    (CHAT, {"model": INSTRUCT, "messages": [{"role": "user", "content": "x"}] * 257},
     "max_messages"),
    (CHAT, chat_with_schema({"type": "object", "description": "d" * 70_000}),
     "max_schema_bytes"),
    (CHAT, chat_with_schema({"$defs": {"a": {"type": "string"}},
                             "anyOf": [{"$ref": "#/$defs/a"}] * 65}), "max_schema_refs"),
    (CHAT, chat_with_schema({"properties": {"a": {"pattern": "a" * 2000}}}),
     "max_pattern_chars"),
    ("/api/generate", ollama_with_schema({"patternProperties": {"b" * 2000: {}}}),
     "max_pattern_chars"),
])
def test_each_cap_is_a_400_that_names_it(client: httpx.Client, upstream: Any,
                                         no_tracebacks: None, path: str,
                                         body: dict[str, Any], cap: str) -> None:
    r = client.post(path, json=body)
    assert r.status_code == 400, r.text
    assert cap in error_of(r, path)
    assert upstream.bodies == []


def test_caps_are_configurable(serve: Any, upstream: Any) -> None:
    from starcoder_router._routing.limits import InputLimits

    gw = serve(settings=ServerSettings(limits=InputLimits(max_stops=2)))
    r = httpx.post(gw.url + "/v1/completions", json={"prompt": "x", "stop": ["a", "b", "c"]})
    assert r.status_code == 400 and "max_stops" in r.json()["error"]["message"]
    assert r.json()["error"]["param"] == "stop"
    assert r.json()["error"]["code"] == "limit_exceeded"


# -- 2. long stops stream in linear time ------------------------------------------------


def test_streaming_with_the_longest_stops_allowed_is_fast(client: httpx.Client,
                                                         upstream: Any) -> None:
    upstream.script(Reply(text=" ".join(["ab" * 40] * 200)))
    stops = ["ab" * 127 + "a" + chr(65 + i) for i in range(16)]
    started = time.perf_counter()
    with client.stream("POST", "/v1/completions", json={
            "prompt": "x", "stop": stops, "stream": True, "max_tokens": 200}) as r:
        assert r.status_code == 200
        text = "".join(r.iter_text())
    assert time.perf_counter() - started < 3
    assert "[DONE]" in text
