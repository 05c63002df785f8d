"""`AsyncRouter` against real llama-server processes, on both async transports: the default
aiohttp one and httpx. Mirrors test_router_llamacpp.py (discovery and the `/tokenize` helper,
which have no async side, are tested there)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from starcoder_router import (
    AsyncRouter,
    ContextLengthError,
    Deployment,
    TokenizerCounter,
    Usage,
)
from support.llama_deployments import (
    LONG_PROMPT,
    PREFIX,
    PROMPT,
    PSM,
    SUFFIX,
    Api,
    deployment,
    raw_post,
    router_kwargs,
    seconds_until_idle,
)

pytestmark = pytest.mark.parametrize("transport", ["aiohttp", "httpx"])


def async_router(transport: str, counter: TokenizerCounter, *deps: Deployment) -> AsyncRouter:
    return AsyncRouter(**router_kwargs(counter, *deps), transport=transport)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def small_server(start_llama_server: Any, tiny_gguf_constant: Path) -> Any:
    """The constant model on a 1,024-token context (the last `-c` wins)."""
    server = start_llama_server(tiny_gguf_constant, "-c", "1024")
    assert server.n_ctx == 1024
    return server


@pytest.mark.parametrize("api", [None, "native"])
async def test_completion_counts_are_the_servers(llama_server_constant: Any,
                                                exact_counter: TokenizerCounter,
                                                api: Api, transport: str) -> None:
    dep = deployment(llama_server_constant, api=api)
    async with async_router(transport, exact_counter, dep) as router:
        c = await router.complete(prompt=PROMPT, max_tokens=6)
        assert (c.text, c.finish_reason) == (" x" * 6, "length")
        assert c.usage == Usage(exact_counter.count(PROMPT), 6, "provider")
        assert c.model == llama_server_constant.model_id
        assert c.warnings == ()


@pytest.mark.parametrize("api", [None, "native"])
async def test_stream_counts_are_the_servers(llama_server: Any, exact_counter: TokenizerCounter,
                                            api: Api, transport: str) -> None:
    async with async_router(transport, exact_counter, deployment(llama_server, api=api)) as router:
        whole = await router.complete(prompt=PROMPT, max_tokens=5, temperature=0)
        async with router.stream(prompt=PROMPT, max_tokens=5, temperature=0) as s:
            chunks = [ch async for ch in s]
        assert s.completion is not None
        assert "".join(ch.text for ch in chunks) == s.completion.text == whole.text
        assert chunks[-1].finish_reason == "length"
        expected = Usage(exact_counter.count(PROMPT), 5, "provider")
        assert s.completion.usage == whole.usage == expected
        # One stream after another: the server closes each stream's connection.
        async with router.stream(prompt=PROMPT, max_tokens=5, temperature=0) as s2:
            assert "".join([ch.text async for ch in s2]) == whole.text


async def test_stop_string_ends_the_completion(llama_server_constant: Any,
                                               exact_counter: TokenizerCounter,
                                               transport: str) -> None:
    dep = deployment(llama_server_constant, api="native")
    async with async_router(transport, exact_counter, dep) as router:
        c = await router.complete(prompt=PROMPT, max_tokens=20, stop=[" x x x"])
        assert (c.text, c.finish_reason, c.raw_finish_reason) == ("", "stop", "word")


@pytest.mark.parametrize("api", [None, "native"], ids=["raw-psm", "infill"])
async def test_fim_both_ways_sees_the_same_prompt(llama_server_constant: Any,
                                                  exact_counter: TokenizerCounter,
                                                  api: Api, transport: str) -> None:
    dep = deployment(llama_server_constant, api=api)
    async with async_router(transport, exact_counter, dep) as router:
        c = await router.complete(prefix=PREFIX, suffix=SUFFIX, max_tokens=4)
        assert c.text == " x" * 4
        assert c.usage.prompt_tokens == exact_counter.count(PSM)
        assert c.warnings == ()
        async with router.stream(prefix=PREFIX, suffix=SUFFIX, max_tokens=4) as s:
            assert "".join([ch.text async for ch in s]) == " x" * 4
        assert s.completion is not None and s.completion.warnings == ()


async def test_infill_reports_the_repository_context_it_dropped(
        llama_server_constant: Any, exact_counter: TokenizerCounter, transport: str) -> None:
    dep = deployment(llama_server_constant, api="native")
    async with async_router(transport, exact_counter, dep) as router:
        c = await router.complete(prefix=PREFIX, suffix=SUFFIX,
                                  files=[("util.py", "X = 1\n" * 20)], max_tokens=2)
        assert c.text == " x x"
        assert len(c.warnings) == 1 and "util.py" in c.warnings[0]


@pytest.mark.parametrize("api", [None, "native"])
async def test_grammar_constrains_the_output(llama_server_constant: Any,
                                             exact_counter: TokenizerCounter, api: Api,
                                             transport: str) -> None:
    grammar = 'root ::= "yes" | "no"'
    dep = deployment(llama_server_constant, api=api)
    async with async_router(transport, exact_counter, dep) as router:
        c = await router.complete(prompt=PROMPT, max_tokens=8,
                                  response_format={"type": "grammar", "grammar": grammar})
        assert (c.text in ("yes", "no"), c.finish_reason) == (True, "stop")


async def test_prompt_over_the_real_context_is_a_context_length_error(
        llama_server: Any, exact_counter: TokenizerCounter, transport: str) -> None:
    dep = deployment(llama_server, window=8192)
    prompt = LONG_PROMPT * 2
    async with async_router(transport, exact_counter, dep) as router:
        with pytest.raises(ContextLengthError) as info:
            await router.complete(prompt=prompt, max_tokens=8)
    err = info.value
    assert (err.context_window, err.prompt_tokens) == (2048, exact_counter.count(prompt))
    assert (err.status_code, err.retryable) == (400, False)


async def test_escalates_to_a_larger_window_and_remembers_the_smaller(
        small_server: Any, llama_server_constant: Any, exact_counter: TokenizerCounter,
        transport: str) -> None:
    small = deployment(small_server, name="llamacpp/a-small", window=2048)
    large = deployment(llama_server_constant, name="llamacpp/b-large")
    async with async_router(transport, exact_counter, small, large) as router:
        assert router.route(prompt=LONG_PROMPT, max_tokens=8).chosen.name == "llamacpp/a-small"

        c = await router.complete(prompt=LONG_PROMPT, max_tokens=8)
        assert (c.deployment.name, c.text) == ("llamacpp/b-large", " x" * 8)
        failed, ok = c.attempts
        assert (failed.deployment, failed.outcome) == ("llamacpp/a-small", "error")
        assert ok.outcome == "ok"
        assert isinstance(failed.error, ContextLengthError)
        assert failed.error.context_window == 1024

        refused = router.route(prompt=LONG_PROMPT, max_tokens=8).candidate("llamacpp/a-small")
        assert (refused.deployment.context_window, refused.eligible) == (1024, False)
        again = await router.complete(prompt=LONG_PROMPT, max_tokens=8)
        assert [a.deployment for a in again.attempts] == ["llamacpp/b-large"]
        small_fit = await router.complete(prompt=PROMPT, max_tokens=4)
        assert small_fit.deployment.name == "llamacpp/a-small"


@pytest.mark.parametrize("api", [None, "native"])
async def test_closing_a_stream_early_frees_the_server(llama_server_constant: Any,
                                                       exact_counter: TokenizerCounter,
                                                       api: Api, transport: str) -> None:
    dep = deployment(llama_server_constant, api=api)
    async with async_router(transport, exact_counter, dep) as router:
        async with router.stream(prompt=PROMPT, max_tokens=1900) as s:
            got = [(await s.__anext__()).text for _ in range(3)]
        assert got == [" x"] * 3
        assert s.completion is None
        # Polled from a thread: the loop must run to finish closing the socket.
        assert await asyncio.to_thread(seconds_until_idle, llama_server_constant) < 5
        [entry] = [e for e in router.store.ledger() if e.outcome == "cancelled"]
        assert entry.completion_tokens >= 3
        after = await router.complete(prompt=PROMPT, max_tokens=4)
        assert (after.text, after.usage.completion_tokens) == (" x" * 4, 4)


async def test_server_answers_agree_with_raw_http(llama_server_constant: Any,
                                                 exact_counter: TokenizerCounter,
                                                 transport: str) -> None:
    raw = raw_post(llama_server_constant, "/v1/completions",
                   {"prompt": PROMPT, "max_tokens": 3, "stop": ["<file_sep>", "<|endoftext|>"]})
    async with async_router(transport, exact_counter, deployment(llama_server_constant)) as router:
        c = await router.complete(prompt=PROMPT, max_tokens=3)
    assert c.text == raw["choices"][0]["text"]
    assert (c.usage.prompt_tokens, c.usage.completion_tokens) == (
        raw["usage"]["prompt_tokens"], raw["usage"]["completion_tokens"])
