"""`starcoder_router.testing.FakeServer` behaves like a real server where users rely on it, and
a `Completion` reads as one line."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from starcoder_router import Catalog, CostPolicy, Router, TokenizerCounter
from starcoder_router.testing import FakeServer, Reply

LONG = " ".join(f"value_{i} = compute({i}) + offset" for i in range(200))


@pytest.fixture
def server() -> Iterator[FakeServer]:
    with FakeServer(text=LONG) as s:
        yield s


def _router(server: FakeServer) -> Router:
    return Router(catalog=Catalog.default().with_deployments(server.deployment()),
                  policy=CostPolicy(allow_providers={"openai-compatible"}), env={})


@pytest.mark.parametrize("max_tokens", [1, 2, 7, 16, 32, 100])
def test_answers_never_exceed_max_tokens(server: FakeServer, max_tokens: int) -> None:
    with _router(server) as router:
        c = router.complete(prompt="def f():", max_tokens=max_tokens)
        assert c.usage.completion_tokens <= max_tokens
        assert c.usage.completion_tokens >= max_tokens - 6  # cut near the limit, not far
        assert LONG.startswith(c.text)
        streamed = router.stream(prompt="def f():", max_tokens=max_tokens)
        with streamed:
            text = "".join(chunk.text for chunk in streamed)
        assert text == c.text


def test_the_default_answer_fits_32_tokens() -> None:
    with FakeServer() as server, _router(server) as router:
        c = router.complete(prompt="def fib(n):", max_tokens=32)
        assert c.usage.completion_tokens <= 32


def test_an_exact_counter_is_honoured(exact_counter: TokenizerCounter) -> None:
    with FakeServer(text=LONG, counter=exact_counter) as server, _router(server) as router:
        c = router.complete(prompt="def f():", max_tokens=10)
        assert c.usage.completion_tokens == exact_counter.count(c.text)
        assert 5 <= c.usage.completion_tokens <= 10


def test_scripted_text_is_sent_as_written(server: FakeServer) -> None:
    server.script(Reply(text="exactly this"))
    with _router(server) as router:
        assert router.complete(prompt="x", max_tokens=1).text == "exactly this"


def test_a_completion_repr_is_one_readable_line(server: FakeServer) -> None:
    with _router(server) as router:
        c = router.complete(prompt="def f():", max_tokens=64)
    line = repr(c)
    assert "\n" not in line and len(line) < 300
    assert line.startswith("Completion(text='value_0 = ")
    assert f"deployment={c.deployment.name!r}" in line
    assert f"tokens={c.usage.prompt_tokens}+{c.usage.completion_tokens}" in line
    assert "cost_usd=" in line and "attempts=1" in line
    assert "RoutingDecision" not in line
    assert c.decision.chosen.name == c.deployment.name


@pytest.mark.parametrize("stream", [False, True])
def test_a_reply_cut_at_max_tokens_finishes_with_length(server: FakeServer, stream: bool) -> None:
    with _router(server) as router:
        if stream:
            with router.stream(prompt="def f():", max_tokens=8) as s:
                last = [chunk.finish_reason for chunk in s][-1]
            assert s.completion is not None
            finish = s.completion.finish_reason
            assert last == "length"
        else:
            finish = router.complete(prompt="def f():", max_tokens=8).finish_reason
    assert finish == "length"


@pytest.mark.parametrize("stream", [False, True])
def test_a_whole_reply_finishes_with_stop(stream: bool) -> None:
    with FakeServer(text="pass") as server, _router(server) as router:
        if stream:
            with router.stream(prompt="def f():", max_tokens=64) as s:
                list(s)
            assert s.completion is not None
            assert s.completion.finish_reason == "stop"
        else:
            assert router.complete(prompt="def f():", max_tokens=64).finish_reason == "stop"
        server.script(Reply(text="scripted", finish_reason="length"))
        assert router.complete(prompt="x", max_tokens=64).finish_reason == "length"
        server.script(Reply(text="scripted"))
        assert router.complete(prompt="x", max_tokens=1).finish_reason == "stop"
