"""The first-token deadline at the gateway: the `x-starcoder-router-first-token-timeout` header,
through the real `openai` client (plain and streamed), with the upstream stream cut and booked;
and every malformed value refused with a 400 before any upstream call."""

from __future__ import annotations

import time
from typing import Any

import httpx
import openai
import pytest
from hypothesis import given
from hypothesis import strategies as st
from upstream import Reply as upstream_reply  # loaded by conftest.py

from starcoder_router import MemoryStore
from starcoder_router._server.first_token import first_token_timeout
from starcoder_router._server.problems import GatewayError

HEADER = "x-starcoder-router-first-token-timeout"
PROMPT = "def add(a, b):"


@pytest.fixture
def oai() -> Any:
    clients: list[openai.OpenAI] = []

    def make(url: str) -> openai.OpenAI:
        c = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=20)
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.close()


def wait_for(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert check()


@pytest.mark.parametrize("stream", [False, True])
def test_the_header_cuts_off_a_slow_deployment_and_the_next_answers(
        serve: Any, upstream: Any, catalog_of: Any, oai: Any, stream: bool) -> None:
    store = MemoryStore()
    gw = serve(catalog=catalog_of("starcoder2-3b", "starcoder2-7b"), store=store)
    client = oai(gw.url)
    client.completions.create(model="starcoder2", prompt="x", max_tokens=2)  # warm the pool
    # The cheaper deployment goes first; its stream sends headers and then nothing.
    upstream.script(upstream_reply(hang_after=0), upstream_reply(text="return a + b"))
    started = time.monotonic()
    raw = client.completions.with_raw_response.create(
        model="starcoder2", prompt=PROMPT, max_tokens=16, stream=stream,
        extra_headers={HEADER: "1.5"})
    if stream:
        text = "".join(chunk.choices[0].text for chunk in raw.parse() if chunk.choices)
    else:
        text = raw.parse().choices[0].text
    assert time.monotonic() - started < 8  # the hanging stream was not waited on
    assert text == "return a + b"
    if not stream:
        assert raw.headers["x-starcoder-router-deployment"] == "mock/starcoder2-7b"
        assert raw.headers["x-starcoder-router-attempts"] == "2"
    assert [b["stream"] for b in upstream.bodies[-2:]] == [True, True]
    wait_for(lambda: upstream.closed_streams == 1)  # the upstream call was closed
    wait_for(lambda: len(store.ledger()) == 3)
    cut = [e for e in store.ledger() if e.deployment == "mock/starcoder2-3b"][-1]
    assert cut.outcome == "cancelled" and cut.cost_nano > 0  # its prompt is booked


def test_every_deployment_slow_is_a_503_that_names_the_timeout(
        serve: Any, upstream: Any, catalog_of: Any) -> None:
    gw = serve(catalog=catalog_of("starcoder2-3b", "starcoder2-7b"))
    upstream.script(upstream_reply(hang_after=0), upstream_reply(hang_after=0))
    r = httpx.post(gw.url + "/v1/completions", headers={HEADER: "0.5"}, timeout=20,
                   json={"model": "starcoder2", "prompt": PROMPT, "max_tokens": 8})
    assert r.status_code == 503
    assert "FirstTokenTimeoutError" in r.json()["error"]["message"]
    wait_for(lambda: upstream.closed_streams == 2)


@pytest.mark.parametrize("value", ["0", "-1", "abc", "nan", "inf", "1e2", "600.5", "",
                                   "1" * 40, "0x10", "+1", "1,5"])
def test_a_malformed_header_is_a_400_before_any_upstream_call(
        serve: Any, upstream: Any, value: str) -> None:
    gw = serve()
    r = httpx.post(gw.url + "/v1/completions", headers={HEADER: value}, timeout=10,
                   json={"model": "starcoder2", "prompt": PROMPT, "max_tokens": 8})
    assert r.status_code == 400
    error = r.json()["error"]
    assert HEADER in error["message"] and error["param"] == HEADER
    assert len(error["message"]) < 200  # a long value is not echoed back whole
    assert upstream.bodies == []


@given(st.text(max_size=64))
def test_any_header_value_is_a_bounded_number_or_a_400(raw: str) -> None:
    status = 200
    try:
        seconds = first_token_timeout(raw)
    except GatewayError as exc:
        status = exc.problem.status
        seconds = None
    if status == 200:
        assert seconds is not None and 0 < seconds <= 600
        assert seconds == float(raw.strip())
    else:
        assert status == 400


def test_no_header_leaves_the_deadline_to_the_deployment() -> None:
    assert first_token_timeout(None) is None
    assert first_token_timeout(" 1.25 ") == 1.25
    assert first_token_timeout("600") == 600.0
