"""Autocomplete sessions through the gateway, driven by real clients (`openai`, `ollama`,
huggingface_hub's `InferenceClient`): a superseded request is answered 200 with empty text and
a normal finish reason (a stream ends cleanly), its upstream call aborted and its cost booked;
typing through a completion is answered from it; exact repeats of greedy requests come from the
cache; the `x-starcoder-router-session` header names a session or opts out."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import ollama
import openai
import pytest
from huggingface_hub import InferenceClient
from upstream import Reply  # loaded by conftest.py

from starcoder_router import Budget, CompletionRequest, CostPolicy

SESSION = "x-starcoder-router-session"
SERVED_FROM = "x-starcoder-router-served-from"
SUPERSEDED = "x-starcoder-router-superseded"
PREFIX = "def add(a, b):\n    "
BUDGET = CostPolicy(budgets=[Budget(limit_usd=5, period="day")])


@pytest.fixture
def openai_client() -> Iterator[Callable[[str], openai.OpenAI]]:
    made: list[openai.OpenAI] = []

    def make(url: str) -> openai.OpenAI:
        c = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=10)
        made.append(c)
        return c
    yield make
    for c in made:
        c.close()


def in_thread(work: Callable[[], Any]) -> Callable[[], Any]:
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["v"] = work()
        except BaseException as exc:  # handed to the test
            out["e"] = exc
    t = threading.Thread(target=target)
    t.start()

    def result() -> Any:
        t.join(15)
        assert not t.is_alive()
        if "e" in out:
            raise out["e"]
        return out["v"]
    return result


def until(check: Callable[[], bool]) -> None:
    for _ in range(1000):
        if check():
            return
        time.sleep(0.01)
    raise AssertionError("timed out")


def settled(gw: Any) -> tuple[list[tuple[str, int]], int]:
    """The ledger's (outcome, cost) pairs and what is still held against the budget."""
    store = gw.gateway.store
    keys = gw.gateway.router(None)._core.budget_keys(CompletionRequest(prompt="x"))
    return ([(e.outcome, e.cost_nano) for e in store.ledger()],
            sum(s.reserved_nano for s in store.status(keys)))


def test_openai_a_superseded_completion_is_an_empty_answer(serve: Any, upstream: Any,
                                                           openai_client: Any) -> None:
    gw = serve(policy=BUDGET)
    client = openai_client(gw.url)
    upstream.script(Reply(delay_s=5.0))
    t0 = time.monotonic()
    older = in_thread(lambda: client.completions.with_raw_response.create(
        model="starcoder2", prompt=PREFIX, suffix="\n", max_tokens=8,
        extra_headers={SESSION: "editor-1"}))
    until(lambda: len(upstream.bodies) == 1)
    newer = client.completions.create(model="starcoder2", prompt=PREFIX + "x", suffix="\n",
                                      max_tokens=8, extra_headers={SESSION: "editor-1"})
    raw = older()
    assert time.monotonic() - t0 < 4.0  # not held for the slow upstream
    assert raw.headers[SUPERSEDED] == "1"
    answer = raw.parse()
    assert answer.choices[0].text == ""
    assert answer.choices[0].finish_reason == "stop"
    assert newer.choices[0].text == "return a + b"
    outcomes, held = settled(gw)
    assert held == 0
    cancelled = [cost for outcome, cost in outcomes if outcome == "cancelled"]
    assert len(cancelled) == 1
    assert cancelled[0] > 0  # the prompt the upstream read


def test_openai_a_superseded_stream_ends_cleanly(serve: Any, upstream: Any,
                                                 openai_client: Any) -> None:
    gw = serve(policy=BUDGET)
    client = openai_client(gw.url)
    upstream.script(Reply(text="a b c d e f g h i j", chunk_delay_s=0.2))
    first = threading.Event()

    def read() -> list[Any]:
        events = []
        for event in client.completions.create(
                model="starcoder2", prompt=PREFIX, suffix="\n", max_tokens=16, stream=True,
                extra_headers={SESSION: "editor-2"}):
            events.append(event)
            first.set()
        return events

    older = in_thread(read)
    assert first.wait(10)
    client.completions.create(model="starcoder2", prompt=PREFIX + "q", suffix="\n",
                              max_tokens=8, extra_headers={SESSION: "editor-2"})
    events = older()
    text = "".join(e.choices[0].text for e in events if e.choices)
    assert text.startswith("a") and len(text) < len("a b c d e f g h i j")
    assert events[-1].choices[0].finish_reason == "stop"
    until(lambda: upstream.closed_streams == 1)  # its upstream stream was closed
    outcomes, held = settled(gw)
    assert held == 0
    assert any(outcome == "cancelled" and cost > 0 for outcome, cost in outcomes)


def test_openai_typing_through_a_suggestion_reuses_it(serve: Any, upstream: Any,
                                                      openai_client: Any) -> None:
    gw = serve()
    client = openai_client(gw.url)
    first = client.completions.with_raw_response.create(
        model="starcoder2", prompt=PREFIX, suffix="\n", max_tokens=8)
    assert first.headers[SERVED_FROM] == "upstream"
    # no session header: the gateway derives one from the ends of the FIM prompt
    second = client.completions.with_raw_response.create(
        model="starcoder2", prompt=PREFIX + "ret", suffix="\n", max_tokens=8)
    assert second.headers[SERVED_FROM] == "reuse"
    assert second.headers["x-starcoder-router-cost-usd"] == "0.000000000"
    assert second.parse().choices[0].text == "urn a + b"
    stream = list(client.completions.create(model="starcoder2", prompt=PREFIX + "return ",
                                            suffix="\n", max_tokens=8, stream=True))
    assert "".join(e.choices[0].text for e in stream if e.choices) == "a + b"
    assert len(upstream.bodies) == 1
    assert [e.outcome for e in gw.gateway.store.ledger()] == ["ok", "reuse", "reuse"]
    # opted out: asked again
    again = client.completions.create(model="starcoder2", prompt=PREFIX + "ret", suffix="\n",
                                      max_tokens=8, extra_headers={SESSION: "off"})
    assert again.choices[0].text == "return a + b"
    assert len(upstream.bodies) == 2


def test_ollama_supersession_and_reuse(serve: Any, upstream: Any) -> None:
    gw = serve(policy=BUDGET)
    client = ollama.Client(host=gw.url, timeout=10)
    try:
        upstream.script(Reply(delay_s=3.0))
        older = in_thread(lambda: client.generate(
            model="starcoder2:3b", prompt=PREFIX, suffix="\n", stream=False,
            options={"num_predict": 8}))
        until(lambda: len(upstream.bodies) == 1)
        newer = client.generate(model="starcoder2:3b", prompt=PREFIX + "r", suffix="\n",
                                stream=False, options={"num_predict": 8})
        stale = older()
        assert (stale.response, stale.done, stale.done_reason) == ("", True, "stop")
        assert newer.response == "return a + b"
        reused = client.generate(model="starcoder2:3b", prompt=PREFIX + "r" + "return",
                                 suffix="\n", stream=False, options={"num_predict": 8})
        assert reused.response == " a + b"
        streamed = list(client.generate(model="starcoder2:3b", prompt=PREFIX + "r" + "return a",
                                        suffix="\n", stream=True, options={"num_predict": 8}))
        assert "".join(p.response for p in streamed) == " + b"
        assert streamed[-1].done
        assert len(upstream.bodies) == 2
        assert settled(gw)[1] == 0
    finally:
        client._client.close()


FIM = "<fim_prefix>def add(a, b):\n    <fim_suffix>\n<fim_middle>"


def test_huggingface_greedy_repeats_come_from_the_cache(serve: Any, upstream: Any) -> None:
    gw = serve()
    client = InferenceClient(model=gw.url + "/generate", timeout=10)
    assert client.text_generation(FIM, max_new_tokens=8) == "return a + b"
    assert client.text_generation(FIM, max_new_tokens=8) == "return a + b"
    assert len(upstream.bodies) == 1
    assert [e.outcome for e in gw.gateway.store.ledger()] == ["ok", "cache"]
    streamed = InferenceClient(model=gw.url + "/generate_stream", timeout=10)
    assert "".join(streamed.text_generation(FIM, max_new_tokens=8, stream=True)) \
        == "return a + b"
    assert len(upstream.bodies) == 1
    opted_out = InferenceClient(model=gw.url + "/generate", timeout=10,
                                headers={SESSION: "off"})
    assert opted_out.text_generation(FIM, max_new_tokens=8) == "return a + b"
    assert len(upstream.bodies) == 2


def test_huggingface_a_superseded_request_is_an_empty_answer(serve: Any,
                                                             upstream: Any) -> None:
    gw = serve()
    client = InferenceClient(model=gw.url + "/generate", timeout=10,
                             headers={SESSION: "llm-ls-1"})
    upstream.script(Reply(delay_s=3.0))
    older = in_thread(lambda: client.text_generation(FIM, max_new_tokens=8, details=True))
    until(lambda: len(upstream.bodies) == 1)
    newer = client.text_generation(FIM.replace("    <fim_suffix>", "    r<fim_suffix>"),
                                   max_new_tokens=8)
    stale = older()
    assert stale.generated_text == ""
    assert stale.details is not None
    assert stale.details.finish_reason == "eos_token"
    assert newer == "return a + b"


def test_sessions_off_in_config_keeps_concurrent_requests(serve: Any, upstream: Any,
                                                          openai_client: Any) -> None:
    from starcoder_router import AutocompletePolicy

    gw = serve(autocomplete=AutocompletePolicy(sessions=False))
    assert gw.gateway.autocomplete.cache_entries > 0  # the gateway's default stays
    client = openai_client(gw.url)
    upstream.script(Reply(delay_s=0.5))
    older = in_thread(lambda: client.completions.create(
        model="starcoder2", prompt=PREFIX, suffix="\n", max_tokens=8))
    until(lambda: len(upstream.bodies) == 1)
    client.completions.create(model="starcoder2", prompt=PREFIX + "x", suffix="\n",
                              max_tokens=8)
    assert older().choices[0].text == "return a + b"


def test_stream_headers_say_superseded_and_reused(serve: Any, upstream: Any) -> None:
    import httpx

    gw = serve()
    body = {"model": "starcoder2", "prompt": PREFIX, "suffix": "\n", "max_tokens": 8,
            "stream": True}
    upstream.script(Reply(delay_s=5.0))

    def older() -> tuple[httpx.Headers, str]:
        with httpx.stream("POST", gw.url + "/v1/completions", json=body,
                          headers={SESSION: "s1"}, timeout=10) as r:
            return r.headers, r.read().decode()

    stale = in_thread(older)
    until(lambda: len(upstream.bodies) == 1)
    fresh = httpx.post(gw.url + "/v1/completions", json={**body, "prompt": PREFIX + "r",
                                                          "stream": False},
                       headers={SESSION: "s1"}, timeout=10)
    headers, text = stale()
    assert headers[SUPERSEDED] == "1"
    assert '"finish_reason":"stop"' in text
    assert text.endswith("data: [DONE]\n\n")
    assert fresh.headers[SERVED_FROM] == "upstream"
    with httpx.stream("POST", gw.url + "/v1/completions",
                      json={**body, "prompt": PREFIX + "rret"}, headers={SESSION: "s1"},
                      timeout=10) as r:
        assert r.headers[SERVED_FROM] == "reuse"
        assert SUPERSEDED not in r.headers
        assert "urn a + b" in r.read().decode()
