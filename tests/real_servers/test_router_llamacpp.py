"""`Router` and `AsyncRouter` (on both of its transports) against real llama-server processes:
both APIs, streams, FIM both ways, a prompt over the server's real context, escalation to a
larger window and cancelling a stream, each test in every mode (the `drive` fixture). The
`/tokenize` helper, the server's own `/v1/completions` and discovery have no async side and run
once, at the end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from starcoder_router import (
    ContextLengthError,
    FleetPolicy,
    TokenizerCounter,
    Usage,
    discover_local,
)
from starcoder_router._providers.call import Endpoint, WireResponse
from starcoder_router._providers.llamacpp import LlamaCpp
from support.llama_deployments import (
    LONG_PROMPT,
    PREFIX,
    PROMPT,
    PSM,
    SUFFIX,
    Api,
    deployment,
    raw_post,
    seconds_until_idle,
    sync_router,
)
from support.router_driver import Driver, Make


@pytest.fixture(scope="module")
def small_server(start_llama_server: Any, tiny_gguf_constant: Path) -> Any:
    """The constant model on a 1,024-token context (the last `-c` wins)."""
    server = start_llama_server(tiny_gguf_constant, "-c", "1024")
    assert server.n_ctx == 1024
    return server


@pytest.mark.parametrize("api", [None, "native"])
async def test_completion_counts_are_the_servers(drive: Driver, make: Make,
                                                llama_server_constant: Any,
                                                exact_counter: TokenizerCounter,
                                                api: Api) -> None:
    router = make(deployment(llama_server_constant, api=api))
    c = await drive.complete(router, prompt=PROMPT, max_tokens=6)
    assert (c.text, c.finish_reason) == (" x" * 6, "length")
    assert c.usage == Usage(exact_counter.count(PROMPT), 6, "provider")
    assert c.model == llama_server_constant.model_id
    assert c.warnings == ()


@pytest.mark.parametrize("api", [None, "native"])
async def test_stream_counts_are_the_servers(drive: Driver, make: Make, llama_server: Any,
                                            exact_counter: TokenizerCounter, api: Api) -> None:
    router = make(deployment(llama_server, api=api))
    whole = await drive.complete(router, prompt=PROMPT, max_tokens=5, temperature=0)
    chunks, completion = await drive.stream(router, prompt=PROMPT, max_tokens=5, temperature=0)
    assert "".join(ch.text for ch in chunks) == completion.text == whole.text
    assert chunks[-1].finish_reason == "length"
    expected = Usage(exact_counter.count(PROMPT), 5, "provider")
    assert completion.usage == whole.usage == expected
    # One stream after another: the server closes each stream's connection.
    again, _ = await drive.stream(router, prompt=PROMPT, max_tokens=5, temperature=0)
    assert "".join(ch.text for ch in again) == whole.text


async def test_stop_string_ends_the_completion(drive: Driver, make: Make,
                                               llama_server_constant: Any) -> None:
    router = make(deployment(llama_server_constant, api="native"))
    c = await drive.complete(router, prompt=PROMPT, max_tokens=20, stop=[" x x x"])
    assert (c.text, c.finish_reason, c.raw_finish_reason) == ("", "stop", "word")


@pytest.mark.parametrize("api", [None, "native"], ids=["raw-psm", "infill"])
async def test_fim_both_ways_sees_the_same_prompt(drive: Driver, make: Make,
                                                  llama_server_constant: Any,
                                                  exact_counter: TokenizerCounter,
                                                  api: Api) -> None:
    router = make(deployment(llama_server_constant, api=api))
    c = await drive.complete(router, prefix=PREFIX, suffix=SUFFIX, max_tokens=4)
    assert c.text == " x" * 4
    assert c.usage.prompt_tokens == exact_counter.count(PSM)
    assert c.warnings == ()
    chunks, streamed = await drive.stream(router, prefix=PREFIX, suffix=SUFFIX, max_tokens=4)
    assert "".join(ch.text for ch in chunks) == " x" * 4
    assert streamed.warnings == ()


async def test_infill_reports_the_repository_context_it_dropped(
        drive: Driver, make: Make, llama_server_constant: Any) -> None:
    # At -c 2048 with the default -b 2048 the server has no room at all for input_extra.
    router = make(deployment(llama_server_constant, api="native"))
    c = await drive.complete(router, prefix=PREFIX, suffix=SUFFIX,
                             files=[("util.py", "X = 1\n" * 20)], max_tokens=2)
    assert c.text == " x x"
    assert len(c.warnings) == 1 and "util.py" in c.warnings[0]


@pytest.mark.parametrize("api", [None, "native"])
async def test_grammar_constrains_the_output(drive: Driver, make: Make,
                                             llama_server_constant: Any, api: Api) -> None:
    grammar = 'root ::= "yes" | "no"'
    router = make(deployment(llama_server_constant, api=api))
    c = await drive.complete(router, prompt=PROMPT, max_tokens=8,
                             response_format={"type": "grammar", "grammar": grammar})
    assert (c.text in ("yes", "no"), c.finish_reason) == (True, "stop")


async def test_prompt_over_the_real_context_is_a_context_length_error(
        drive: Driver, make: Make, llama_server: Any, exact_counter: TokenizerCounter) -> None:
    # Configured at 8,192 tokens, served at 2,048: only the server can say no.
    router = make(deployment(llama_server, window=8192))
    prompt = LONG_PROMPT * 2
    with pytest.raises(ContextLengthError) as info:
        await drive.complete(router, prompt=prompt, max_tokens=8)
    err = info.value
    assert (err.context_window, err.prompt_tokens) == (2048, exact_counter.count(prompt))
    assert (err.status_code, err.retryable) == (400, False)


async def test_escalates_to_a_larger_window_and_remembers_the_smaller(
        drive: Driver, make: Make, small_server: Any, llama_server_constant: Any) -> None:
    # Two real servers: "a-small" is configured at 2,048 but serves 1,024; "b-large" serves
    # 2,048. Both cost nothing, so the router tries them in name order. (Configured alike, they
    # would form a replica group by themselves: they are not replicas, so no automatic groups.)
    small = deployment(small_server, name="llamacpp/a-small", window=2048)
    large = deployment(llama_server_constant, name="llamacpp/b-large")
    router = make(small, large, fleet=FleetPolicy(auto_groups=False))
    assert router.route(prompt=LONG_PROMPT, max_tokens=8).chosen.name == "llamacpp/a-small"

    c = await drive.complete(router, prompt=LONG_PROMPT, max_tokens=8)
    assert (c.deployment.name, c.text) == ("llamacpp/b-large", " x" * 8)
    failed, ok = c.attempts
    assert (failed.deployment, failed.outcome) == ("llamacpp/a-small", "error")
    assert ok.outcome == "ok"
    assert isinstance(failed.error, ContextLengthError)
    assert failed.error.context_window == 1024

    refused = router.route(prompt=LONG_PROMPT, max_tokens=8).candidate("llamacpp/a-small")
    assert (refused.deployment.context_window, refused.eligible) == (1024, False)
    again = await drive.complete(router, prompt=LONG_PROMPT, max_tokens=8)
    assert [a.deployment for a in again.attempts] == ["llamacpp/b-large"]
    # The smaller server still takes what fits in its real window.
    small_fit = await drive.complete(router, prompt=PROMPT, max_tokens=4)
    assert small_fit.deployment.name == "llamacpp/a-small"


@pytest.mark.parametrize("api", [None, "native"])
async def test_closing_a_stream_early_frees_the_server(drive: Driver, make: Make,
                                                       llama_server_constant: Any,
                                                       api: Api) -> None:
    router = make(deployment(llama_server_constant, api=api))
    async with drive.open_stream(router, prompt=PROMPT, max_tokens=1900) as s:
        got = [(await anext(s)).text for _ in range(3)]
    assert got == [" x"] * 3
    # The stream keeps what was delivered and what it cost, as the ledger booked it.
    assert s.completion is not None
    assert (s.completion.finish_reason, s.completion.text) == ("cancelled", "".join(got))
    # The server notices the closed connection and stops long before 1,900 tokens. Polled from
    # a thread in async mode: the loop must run to finish closing the socket.
    assert await drive.blocking(seconds_until_idle, llama_server_constant) < 5
    [entry] = [e for e in router.store.ledger() if e.outcome == "cancelled"]
    assert entry.completion_tokens >= 3
    assert entry.cost_nano == s.completion.cost_nano
    after = await drive.complete(router, prompt=PROMPT, max_tokens=4)
    assert (after.text, after.usage.completion_tokens) == (" x" * 4, 4)


async def test_server_answers_agree_with_raw_http(drive: Driver, make: Make,
                                                 llama_server_constant: Any) -> None:
    raw = raw_post(llama_server_constant, "/v1/completions",
                   {"prompt": PROMPT, "max_tokens": 3, "stop": ["<file_sep>", "<|endoftext|>"]})
    c = await drive.complete(make(deployment(llama_server_constant)), prompt=PROMPT,
                             max_tokens=3)
    assert c.text == raw["choices"][0]["text"]
    assert (c.usage.prompt_tokens, c.usage.completion_tokens) == (
        raw["usage"]["prompt_tokens"], raw["usage"]["completion_tokens"])


# -- one mode: no router in between, or no async side ----------------------------------------


def test_v1_completions_ignores_response_format(llama_server_constant: Any) -> None:
    # Why the adapter sends llama.cpp's own json_schema/grammar fields instead.
    raw = raw_post(llama_server_constant, "/v1/completions",
                   {"prompt": PROMPT, "max_tokens": 3, "response_format": {"type": "json_object"}})
    assert raw["choices"][0]["text"] == " x x x"


@pytest.mark.parametrize("text", [PROMPT, PSM, "<repo_name>p<file_sep>a.py\nx = 1234567\n",
                                  "naïve — ünïcödé 😀 日本語", ""])
def test_tokenize_helper_agrees_with_the_tokenizer(llama_server: Any,
                                                   exact_counter: TokenizerCounter,
                                                   text: str) -> None:
    adapter = LlamaCpp()
    req = adapter.tokenize_request(Endpoint("llamacpp", llama_server.base_url), text)
    resp = httpx.request(req.method, req.url, headers=req.headers, content=req.body, timeout=10)
    count = adapter.token_count(WireResponse(resp.status_code, resp.headers, resp.content))
    assert count == exact_counter.count(text)


def test_discovery_finds_each_server_with_its_real_context(
        llama_server: Any, small_server: Any, exact_counter: TokenizerCounter) -> None:
    [found] = discover_local(addresses={"llamacpp": llama_server.base_url}, env={})
    assert (found.model, found.context_window, found.variant) == (
        llama_server.model_id, 2048, "starcoder2-3b")
    assert found.base_url == llama_server.base_url
    [small] = discover_local(addresses={"llamacpp": small_server.base_url}, env={})
    assert small.context_window == 1024
    with sync_router(exact_counter, found) as router:
        c = router.complete(prompt=PROMPT, max_tokens=3)
    assert (c.deployment.name, c.usage.completion_tokens) == (found.name, 3)
