"""Hostile request bodies: each gets a clean 4xx in the protocol's shape (naming the cap it
hit), costs bounded time on the shared loop, makes the gateway touch no network, and logs no
traceback."""

from __future__ import annotations

import copy
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
    assert 400 <= r.status_code < 500 or r.status_code == 503, (r.status_code, r.text)
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
    ("/v1/completions", {"model": "m" * 5000, "prompt": "x"}, "256 characters"),
    ("/api/generate", {"model": "m" * 5000, "prompt": "x"}, "256 characters"),
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


# -- 8. fuzzing: hostile shapes and values on every route ---------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

BASE: dict[str, dict[str, Any]] = {
    "/v1/completions": {"model": "starcoder2", "prompt": "def f(", "max_tokens": 4},
    CHAT: {"model": INSTRUCT, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
    "/api/generate": {"model": "starcoder2", "prompt": "def f(", "stream": False,
                      "options": {"num_predict": 4}},
    "/generate": {"inputs": "def f(", "parameters": {"max_new_tokens": 4}},
    "/generate_stream": {"inputs": "def f(", "parameters": {"max_new_tokens": 4}},
    "/": {"inputs": "def f(", "parameters": {"max_new_tokens": 4}},
}
NUMBERS = st.sampled_from([0, -1, -2, -5, 1, 2, 2**31, 2**63, 2**64, -(2**63) - 1, 10**30,
                           0.0, -0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 1e308, -1e308, 5e-324,
                           float("nan"), float("inf"), float("-inf"), True, False])
HOSTILE_SCHEMAS = st.sampled_from([
    {"$ref": "http://127.0.0.1:9/s.json"}, {"$id": "http://127.0.0.1:9/", "$ref": "x"},
    {"$ref": "#"}, {"$ref": "#/nowhere"}, {"$ref": 5}, {"$schema": ["x"]},
    {"$schema": "http://127.0.0.1:9/draft"}, {"type": "strng"},
    {"properties": {"a": {"pattern": "^(a+)+$"}}}, {"properties": {"a": {"pattern": "(a)\\1"}}},
    {"properties": {"a": {"pattern": "["}}}, {"patternProperties": {"(?=x)": {}}},
    {"pattern": 5}, {"anyOf": []}, {"type": "object", "required": ["a"] * 3},
    {"properties": {"a": {"$ref": "#/$defs/b"}}, "$defs": {"b": {"$ref": "#/$defs/a"}}},
    {"items": [{"$dynamicRef": "#x"}]}, {"format": "regex", "type": "string"},
]).map(copy.deepcopy)  # bodies are edited after drawing: never hand out the shared objects
TEXTS = st.sampled_from(["", "x", "\ud800", "\x00", "<fim_prefix>", "<|endoftext|>",
                         "a" * 300, "\n\n", "é" * 10])


def _stops() -> st.SearchStrategy[Any]:
    return (TEXTS | st.lists(TEXTS, max_size=20) | NUMBERS
            | st.sampled_from([["s" * 300], ["x"] * 40, [None], [["x"]], {"a": 1}]))


def _deep(levels: int) -> Any:
    node: Any = []
    for _ in range(levels):
        node = {"a": node}
    return node


VALUES = (NUMBERS | TEXTS | _stops() | HOSTILE_SCHEMAS | st.none()
          | st.sampled_from([[], {}, _deep(30), _deep(200)])).map(copy.deepcopy)
FIELDS_BY_PATH = {
    "/v1/completions": ["prompt", "suffix", "max_tokens", "temperature", "top_p", "n",
                        "best_of", "seed", "stop", "stream", "echo", "logit_bias",
                        "stream_options", "presence_penalty", "model"],
    CHAT: ["messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "n",
           "seed", "stop", "stream", "response_format", "logit_bias", "model"],
    "/api/generate": ["prompt", "suffix", "format", "stream", "stop", "raw", "options",
                      "model"],
    "/generate": ["inputs", "parameters", "stream", "model"],
    "/generate_stream": ["inputs", "parameters", "model"],
    "/": ["inputs", "parameters", "stream"],
}
NESTED = {"options": ["num_predict", "temperature", "top_p", "stop", "seed"],
          "parameters": ["max_new_tokens", "temperature", "top_p", "stop", "seed", "details",
                         "do_sample", "grammar", "return_full_text"],
          "response_format": ["type", "json_schema", "schema"]}


SCHEMA_KEYS = ["type", "properties", "items", "$ref", "$id", "$schema", "pattern",
               "patternProperties", "anyOf", "$defs", "required", "enum", "format"]
schemas = st.recursive(
    HOSTILE_SCHEMAS | NUMBERS | TEXTS,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from(SCHEMA_KEYS), inner, max_size=4), max_leaves=10)


@st.composite
def hostile(draw: st.DrawFn, path: str) -> dict[str, Any]:
    """A valid body for `path` with up to four fields (or nested fields) made hostile."""
    body = json.loads(json.dumps(BASE[path]))
    if path == CHAT and draw(st.booleans()):
        body["response_format"] = {"type": "json_schema",
                                   "json_schema": {"name": "r", "schema": draw(schemas)}}
    if path == "/api/generate" and draw(st.booleans()):
        body["format"] = draw(schemas)
    for _ in range(draw(st.integers(0, 4))):
        field = draw(st.sampled_from(FIELDS_BY_PATH[path]))
        if field in NESTED and draw(st.booleans()):
            inner = body.setdefault(field, {})
            if not isinstance(inner, dict):
                inner = body[field] = {}
            key = draw(st.sampled_from(NESTED[field]))
            inner[key] = (draw(HOSTILE_SCHEMAS) if key in ("json_schema", "schema")
                          else draw(VALUES))
            if field == "response_format" and key != "type":
                inner.setdefault("type", draw(st.sampled_from(["json_schema", "json_object",
                                                                "text", 5])))
        elif field in ("format", "response_format"):
            body[field] = draw(HOSTILE_SCHEMAS | VALUES)
        elif field == "messages":
            body[field] = draw(st.sampled_from([
                [], [{"role": "user", "content": "\ud800"}], [{"role": "tool", "content": "x"}],
                [{"role": "user", "content": [{"type": "text", "text": 5}]}],
                [{"role": "user", "content": "x"}] * 300, [{"role": "user"}], "x",
                [{"role": "user", "content": _deep(40)}]]))
        else:
            body[field] = draw(VALUES)
    return body


@pytest.mark.parametrize("path", list(BASE))
@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_hostile_bodies_get_a_clean_answer(client: httpx.Client, upstream: Any,
                                           caplog: pytest.LogCaptureFixture, path: str,
                                           data: st.DataObject) -> None:
    body = data.draw(hostile(path))
    caplog.clear()
    with caplog.at_level(logging.INFO):
        r = client.post(path, content=json.dumps(body),
                        headers={"content-type": "application/json"})
        # 503 only when no deployment can serve (the stand-in's answer is not the JSON asked
        # for, or a base model was asked for a schema)
        _clean(r, path, caplog)


def _clean(r: httpx.Response, path: str, caplog: pytest.LogCaptureFixture) -> None:
    assert r.status_code < 500 or r.status_code == 503, (r.status_code, r.text[:300])
    if r.status_code >= 400:
        error_of(r, path)
    bad = [rec for rec in caplog.records if rec.exc_info or rec.levelno >= logging.ERROR]
    assert not bad, [rec.getMessage() for rec in bad]


@pytest.mark.parametrize(("path", "body_for"), [(CHAT, chat_with_schema),
                                                ("/api/generate", ollama_with_schema)])
@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(schema=st.one_of(HOSTILE_SCHEMAS, schemas))
def test_hostile_schemas_get_a_clean_answer(client: httpx.Client, upstream: Any,
                                            caplog: pytest.LogCaptureFixture, path: str,
                                            body_for: Any, schema: Any) -> None:
    caplog.clear()
    with caplog.at_level(logging.INFO):
        r = client.post(path, content=json.dumps(body_for(schema)),
                        headers={"content-type": "application/json"})
        _clean(r, path, caplog)


def test_caps_load_from_the_server_limits_table(tmp_path: Any) -> None:
    from starcoder_router import ConfigError
    from starcoder_router._server.settings import load_server_settings

    path = tmp_path / "router.toml"
    path.write_text("[server.limits]\nmax_stops = 4\nmax_schema_depth = 16\n")
    limits = load_server_settings(path).limits
    assert (limits.max_stops, limits.max_schema_depth, limits.max_stop_chars) == (4, 16, 256)
    path.write_text("[server.limits]\nmax_schema_depth = 1000\n")  # above the SDK's ceiling
    with pytest.raises(ConfigError, match="max_schema_depth"):
        load_server_settings(path)
    path.write_text("[server.limits]\nmax_stopz = 4\n")
    with pytest.raises(ConfigError, match="max_stopz"):
        load_server_settings(path)


@pytest.mark.parametrize("grammar_type", ["json", "json_object"])
def test_a_tgi_grammar_ref_is_never_fetched(client: httpx.Client, upstream: Any,
                                           trap: tuple[str, socket.socket],
                                           no_tracebacks: None, grammar_type: str) -> None:
    url, sock = trap
    for value in ({"$ref": url + "/s.json"}, {"$id": url + "/", "$ref": "o.json"}):
        r = client.post("/generate", json={"inputs": "x", "parameters": {
            "grammar": {"type": grammar_type, "value": value}}})
        assert "$ref" in error_of(r, "/generate")
    assert_untouched(sock)
    assert upstream.bodies == []


@pytest.mark.parametrize("grammar", [{"type": "regex", "value": "(a+)+"},
                                     {"type": "json", "value": "x"},
                                     {"type": "json", "value": {"pattern": "(a)\\1"}},
                                     {"type": "ebnf", "value": "x"}])
def test_unusable_tgi_grammars_are_a_400(client: httpx.Client, upstream: Any,
                                         no_tracebacks: None, grammar: Any) -> None:
    r = client.post("/generate", json={"inputs": "x", "parameters": {"grammar": grammar}})
    assert r.status_code == 400
    error_of(r, "/generate")
    assert upstream.bodies == []
