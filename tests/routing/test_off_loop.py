"""`AsyncRouter` counts a large prompt in a worker thread, so its event loop keeps running while
the count is made; small prompts stay on the loop."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from starcoder_router import AsyncRouter, Catalog, CostPolicy, TokenizerCounter
from starcoder_router._running.offload import OFF_LOOP_FROM_BYTES
from starcoder_router.testing import FakeServer


class SlowCounter(TokenizerCounter):
    """The real counter with an engine made slow when it encodes much text at once (as
    `tokenizers` is on a 100 KB prompt), recording the threads it ran in."""

    def __init__(self, inner: TokenizerCounter):
        super().__init__(inner._tokenizer)
        self.threads: list[int] = []
        self.active = self.most_at_once = 0
        engine = self._cache._count_many
        lock = threading.Lock()

        def slow(texts: list[str]) -> list[int]:
            if sum(map(len, texts)) < OFF_LOOP_FROM_BYTES:
                return engine(texts)
            with lock:
                self.threads.append(threading.get_ident())
                self.active += 1
                self.most_at_once = max(self.most_at_once, self.active)
            time.sleep(0.5)
            with lock:
                self.active -= 1
            return engine(texts)

        self._cache._count_many = slow


@pytest.fixture
def server() -> Iterator[FakeServer]:
    with FakeServer(text="pass") as s:
        yield s


def _router(server: FakeServer, counter: TokenizerCounter) -> AsyncRouter:
    return AsyncRouter(catalog=Catalog.default().with_deployments(
                           server.deployment(context_window=8192)),
                       policy=CostPolicy(allow_providers={"openai-compatible"}), env={},
                       tokenizer=counter)


async def _longest_gap_while(task: asyncio.Future[object]) -> float:
    gap, last = 0.0, time.perf_counter()
    while not task.done():
        await asyncio.sleep(0.005)
        now = time.perf_counter()
        gap, last = max(gap, now - last), now
    return gap


async def test_large_prompt_is_counted_off_the_loop(server: FakeServer, tokenizer_path: Path,
                                                    ) -> None:
    counter = SlowCounter(TokenizerCounter.from_file(tokenizer_path))
    prefix = "def handler(event):\n    return event\n\n" * 1200  # 44 KB: trimmed for 8k
    async with _router(server, counter) as router:
        await router.complete(prefix="def f(", suffix=")", max_tokens=8)  # imports, connection
        task = asyncio.ensure_future(router.complete(prefix=prefix, suffix="\n", max_tokens=32))
        gap = await _longest_gap_while(task)
        completion = task.result()
    assert completion.text == "pass"
    assert counter.threads and threading.get_ident() not in counter.threads
    assert gap < 0.3  # the count sleeps 0.5 s in its thread; the loop kept ticking
    sent = server.requests[-1].body["prompt"]
    assert sent.startswith("<fim_prefix>") and len(sent) < len(prefix)


async def test_small_prompt_stays_on_the_loop(server: FakeServer, tokenizer_path: Path) -> None:
    counter = SlowCounter(TokenizerCounter.from_file(tokenizer_path))
    async with _router(server, counter) as router:
        completion = await router.complete(prefix="def f(x):\n    ", suffix="\n", max_tokens=8)
    assert completion.text == "pass"
    assert counter.threads == []


async def test_estimating_counter_is_never_sent_to_a_thread(server: FakeServer,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            ) -> None:
    def refuse(*args: object) -> None:
        raise AssertionError("to_thread called")

    monkeypatch.setattr(asyncio, "to_thread", refuse)
    async with AsyncRouter(catalog=Catalog.default().with_deployments(server.deployment()),
                           policy=CostPolicy(allow_providers={"openai-compatible"}), env={},
                           tokenizer=False) as router:
        completion = await router.complete(prefix="x = 1\n" * 3000, suffix="", max_tokens=8)
    assert completion.text == "pass"


async def test_new_large_prompts_are_counted_one_at_a_time(server: FakeServer,
                                                           tokenizer_path: Path) -> None:
    """Several counting threads would take turns with the loop for the GIL; one at a time the
    loop waits behind one thread at most, and the loop still ticks while they count."""
    counter = SlowCounter(TokenizerCounter.from_file(tokenizer_path))
    async with _router(server, counter) as router:
        await router.complete(prefix="def f(", suffix=")", max_tokens=8)
        docs = [f"def handler_{i}(event):\n    return event * {i}\n\n" * 400 for i in range(4)]
        task = asyncio.ensure_future(asyncio.gather(
            *(router.complete(prefix=d, suffix="\n", max_tokens=8) for d in docs)))
        gap = await _longest_gap_while(task)
        assert [c.text for c in task.result()] == ["pass"] * 4
    assert len(counter.threads) == 4 and counter.most_at_once == 1
    assert gap < 0.3


async def test_an_editors_next_request_is_counted_on_the_loop(
        server: FakeServer, tokenizer_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default counter (found lazily) too: a prompt that mostly repeats the last one costs
    less to count on the loop than a thread hop, so only the first goes to a thread."""
    monkeypatch.setenv("STARCODER_ROUTER_TOKENIZER", str(tokenizer_path))
    hops = 0
    real = asyncio.to_thread

    async def counting_to_thread(*args: object) -> object:
        nonlocal hops
        hops += 1
        return await real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(asyncio, "to_thread", counting_to_thread)
    doc = "def handler(event):\n    return event\n\n" * 600
    async with AsyncRouter(catalog=Catalog.default().with_deployments(server.deployment()),
                           policy=CostPolicy(allow_providers={"openai-compatible"}),
                           env={}) as router:
        for typed in range(1, 6):
            completion = await router.complete(prefix=doc + "x" * typed, suffix="\n",
                                               max_tokens=8)
            assert completion.text == "pass"
        assert router.token_counter.exact
    assert hops == 1


async def test_a_stream_counts_a_large_prompt_off_the_loop(server: FakeServer,
                                                           tokenizer_path: Path) -> None:
    counter = SlowCounter(TokenizerCounter.from_file(tokenizer_path))
    prefix = "def handler(event):\n    return event\n\n" * 1200

    async def run() -> str:
        async with router.stream(prefix=prefix, suffix="\n", max_tokens=32) as stream:
            return "".join([chunk.text async for chunk in stream])

    async with _router(server, counter) as router:
        await router.complete(prefix="def f(", suffix=")", max_tokens=8)
        task = asyncio.ensure_future(run())
        gap = await _longest_gap_while(task)
        assert task.result() == "pass"
        async with router.stream(prefix="def f(", suffix=")", max_tokens=8) as small:
            assert "".join([c.text async for c in small]) == "pass"
    assert counter.threads and threading.get_ident() not in counter.threads
    assert gap < 0.3  # the count sleeps 0.5 s in its thread; the loop kept ticking
