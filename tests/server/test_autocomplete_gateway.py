"""Completion modes at the gateway: the `mode` body field of each protocol (through the real
`openai` client, and raw HTTP for Ollama and TGI), the `x-starcoder-router-mode` header, the
`[server] autocomplete_mode` default, and the header that says which mode applied."""

from __future__ import annotations

import time
from typing import Any

import httpx
import openai
import pytest
from upstream import Reply as upstream_reply  # loaded by conftest.py

from starcoder_router._server.settings import ServerSettings

PREFIX = "def total(items):"
SUFFIX = "\n\nprint(total([1, 2]))\n"
BODY = "\n    s = 0\n    for i in items:\n        s += i\n    return s"
MODEL_TEXT = BODY + "\n\n\ndef unrelated():\n    pass\n"
HEADER = "x-starcoder-router-mode"


@pytest.fixture
def oai() -> Any:
    clients: list[openai.OpenAI] = []

    def make(url: str) -> openai.OpenAI:
        c = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=10)
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.close()


def test_openai_block_mode_through_extra_body(serve: Any, upstream: Any, oai: Any) -> None:
    gw = serve()
    upstream.script(upstream_reply(text=MODEL_TEXT))
    raw = oai(gw.url).completions.with_raw_response.create(
        model="starcoder2", prompt=PREFIX, suffix=SUFFIX, extra_body={"mode": "block"})
    c = raw.parse()
    assert c.choices[0].text == BODY and c.choices[0].finish_reason == "stop"
    assert raw.headers[HEADER] == "block"
    assert upstream.bodies[-1]["max_tokens"] == 256  # the block cap, not the gateway default


def test_the_header_sets_the_mode_on_any_route(serve: Any, upstream: Any, oai: Any) -> None:
    gw = serve()
    upstream.script(upstream_reply(text="a, b)\nnext_line()"))
    raw = oai(gw.url).completions.with_raw_response.create(
        model="starcoder2", prompt="x = compute(", suffix=")\n", max_tokens=20,
        extra_headers={HEADER: "auto"})
    assert raw.parse().choices[0].text == "a, b"
    assert raw.headers[HEADER] == "line"
    sent = upstream.bodies[-1]
    assert sent["max_tokens"] == 20 and "\n" in sent["stop"]  # the client's limit wins


def test_a_stream_ends_where_the_block_closes_and_the_upstream_is_closed(
        serve: Any, upstream: Any, oai: Any) -> None:
    gw = serve()
    upstream.script(upstream_reply(text=MODEL_TEXT + " more" * 40, chunk_delay_s=0.01))
    with oai(gw.url).completions.with_streaming_response.create(
            model="starcoder2", prompt=PREFIX, suffix=SUFFIX, stream=True,
            extra_body={"mode": "block"}) as response:
        assert response.headers[HEADER] == "block"
        events = list(response.parse())
    assert "".join(e.choices[0].text for e in events if e.choices) == BODY
    deadline = time.monotonic() + 5
    while upstream.closed_streams < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert upstream.closed_streams == 1  # hung up on before it finished


def test_ollama_mode_in_options_or_at_the_top(serve: Any, upstream: Any) -> None:
    gw = serve()
    for body in ({"options": {"mode": "block"}}, {"mode": "block"}):
        upstream.script(upstream_reply(text=MODEL_TEXT))
        r = httpx.post(gw.url + "/api/generate", json={
            "model": "starcoder2", "prompt": PREFIX, "suffix": SUFFIX, "stream": False,
            **body}, timeout=10)
        assert r.status_code == 200, r.text
        assert r.json()["response"] == BODY and r.headers[HEADER] == "block"


def test_tgi_mode_in_parameters_with_the_editors_own_sentinels(serve: Any,
                                                              upstream: Any) -> None:
    gw = serve()
    upstream.script(upstream_reply(text=MODEL_TEXT))
    fim = f"<fim_prefix>{PREFIX}<fim_suffix>{SUFFIX}<fim_middle>"
    r = httpx.post(gw.url + "/generate", json={
        "inputs": fim, "parameters": {"mode": "auto", "max_new_tokens": 100}}, timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["generated_text"] == BODY and r.headers[HEADER] == "block"
    assert upstream.bodies[-1]["max_tokens"] == 100


def test_the_server_default_applies_unless_turned_off(serve: Any, upstream: Any,
                                                      oai: Any) -> None:
    gw = serve(settings=ServerSettings(autocomplete_mode="auto"))
    client = oai(gw.url)
    upstream.script(upstream_reply(text=MODEL_TEXT))
    raw = client.completions.with_raw_response.create(model="starcoder2", prompt=PREFIX,
                                                      suffix=SUFFIX)
    assert raw.parse().choices[0].text == BODY and raw.headers[HEADER] == "block"
    upstream.script(upstream_reply(text=MODEL_TEXT))
    raw = client.completions.with_raw_response.create(
        model="starcoder2", prompt=PREFIX, suffix=SUFFIX, extra_headers={HEADER: "off"})
    assert raw.parse().choices[0].text.startswith(BODY + "\n\n\ndef")
    assert HEADER not in raw.headers
    # Chat is left alone by the default.
    chat = client.chat.completions.create(model="starcoder2",
                                          messages=[{"role": "user", "content": "hi"}])
    assert chat.choices[0].message.content


def test_without_a_mode_the_gateway_changes_nothing(serve: Any, upstream: Any,
                                                    oai: Any) -> None:
    gw = serve()
    upstream.script(upstream_reply(text=MODEL_TEXT))
    raw = oai(gw.url).completions.with_raw_response.create(model="starcoder2", prompt=PREFIX,
                                                           suffix=SUFFIX)
    assert raw.parse().choices[0].text.startswith(BODY + "\n\n\ndef")
    assert HEADER not in raw.headers
    assert upstream.bodies[-1]["max_tokens"] == 256  # the gateway's default


@pytest.mark.parametrize("where", ["body", "header"])
def test_an_unknown_mode_is_a_400(serve: Any, oai: Any, where: str) -> None:
    gw = serve()
    extra: dict[str, Any] = ({"extra_body": {"mode": "paragraph"}} if where == "body"
                             else {"extra_headers": {HEADER: "paragraph"}})
    with pytest.raises(openai.BadRequestError) as info:
        oai(gw.url).completions.create(model="starcoder2", prompt="x", **extra)
    assert "mode" in str(info.value)
