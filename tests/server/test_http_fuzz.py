"""Fuzz the HTTP surface: any JSON (or not-JSON) body on any route gets an answer in time, a
4xx in the protocol's error shape or a success, never a 5xx and never a hang."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from starcoder_router._server.settings import ServerSettings

FIELDS = ["model", "prompt", "suffix", "max_tokens", "stream", "stop", "messages", "options",
          "inputs", "parameters", "temperature", "top_p", "n", "echo", "raw", "seed", "format",
          "stream_options", "max_completion_tokens", "num_predict", "role", "content"]
MODELS = ["starcoder2", "starcoder2:fast", "starcoder2-7b", "starcoder2:3b", "gpt-4", "",
          "starcoder2-15b", "starcoder2-7b:quality", "starcoder2:latest"]

scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
           | st.floats(allow_nan=False) | st.text(max_size=30)
           | st.sampled_from([*MODELS, "<fim_prefix>", "<fim_suffix>", "<|endoftext|>"]))
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), inner, max_size=5),
    max_leaves=12,
)
bodies = st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=7)
PATHS = ["/v1/completions", "/v1/chat/completions", "/api/generate", "/api/show", "/generate",
         "/generate_stream", "/"]


def check(response: httpx.Response, path: str) -> None:
    assert response.status_code < 500, (response.status_code, response.text)
    if response.status_code >= 400:
        err = response.json()["error"]
        if path.startswith("/v1/"):
            assert set(err) == {"message", "type", "param", "code"}
        else:
            assert isinstance(err, str)


@pytest.fixture
def gateway_client(serve: Any) -> Any:
    gw = serve(settings=ServerSettings(max_body_bytes=20_000, max_tokens=64))
    with httpx.Client(base_url=gw.url, timeout=httpx.Timeout(10.0)) as client:
        yield client


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(path=st.sampled_from(PATHS), body=bodies)
def test_structured_bodies(gateway_client: httpx.Client, path: str, body: dict[str, Any]) -> None:
    r = gateway_client.post(path, content=json.dumps(body),
                            headers={"content-type": "application/json"})
    check(r, path)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(path=st.sampled_from(PATHS), raw=st.binary(max_size=200) | json_values.map(
    lambda v: json.dumps(v).encode()))
def test_arbitrary_bytes(gateway_client: httpx.Client, path: str, raw: bytes) -> None:
    r = gateway_client.post(path, content=raw, headers={"content-type": "application/json"})
    check(r, path)


def test_huge_bodies_without_a_length_are_cut_off(gateway_client: httpx.Client) -> None:
    def chunks() -> Any:
        yield b'{"prompt": "'
        for _ in range(100):
            yield b"x" * 1000
        yield b'"}'

    r = gateway_client.post("/v1/completions", content=chunks())  # chunked: no Content-Length
    assert r.status_code == 413
    check(r, "/v1/completions")
