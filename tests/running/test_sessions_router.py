"""Autocomplete sessions in `Router` and `AsyncRouter`: a newer request of a session
supersedes the older one (its hold freed, what it cost booked, its caller answered, nothing
left running), a request typing through a recent or running completion is answered from it, and
the exact-repeat cache; on a real loopback server (`FakeServer`).

Each test body runs with both routers: `Pair` starts the older request in a thread (`Router`)
or a task (`AsyncRouter`) and sends the newer one from the test."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from starcoder_router import (
    AsyncRouter,
    AutocompletePolicy,
    Budget,
    Catalog,
    Completion,
    CostPolicy,
    MemoryStore,
    Router,
)
from starcoder_router.testing import FakeServer, Reply

TEXT = "total = add(a, b)\n    return total\n"
PREFIX = "def f(a, b):\n    "
MODES = ["sync", "async"]


@pytest.fixture
def server() -> Iterator[FakeServer]:
    with FakeServer(text=TEXT) as s:
        yield s


def router_for(mode: str, server: FakeServer, store: MemoryStore,
               autocomplete: AutocompletePolicy | None = None) -> Any:
    cls = Router if mode == "sync" else AsyncRouter
    return cls(catalog=Catalog.default().with_deployments(
        server.deployment(input_usd_per_mtok=1.0, output_usd_per_mtok=2.0)),
        policy=CostPolicy(allow_providers={"openai-compatible"},
                          budgets=[Budget(limit_usd=10, period="day")]),
        env={}, store=store, tokenizer=False, autocomplete=autocomplete)


def _router_threads() -> set[threading.Thread]:
    # FakeServer's own handler threads sleep out their scripted delays; they are not ours.
    return {t for t in threading.enumerate()
            if "process_request" not in t.name and "serve_forever" not in t.name}


class Run:
    """Runs one scenario with either router and checks nothing is left running after it."""

    def __init__(self, mode: str, router: Any):
        self.mode = mode
        self.router = router

    def __call__(self, scenario: Callable[[Run], Any]) -> Any:
        before = _router_threads()
        if self.mode == "sync":
            try:
                return scenario(self)
            finally:
                self.router.close()
                assert _router_threads() <= before

        async def main() -> Any:
            try:
                return await scenario(self)
            finally:
                await self.router.aclose()
                # asyncio finalises async generators the garbage collector found in tasks of
                # their own (the transport's line readers): let those run first.
                for _ in range(20):
                    await asyncio.sleep(0)
                assert asyncio.all_tasks() == {asyncio.current_task()}

        return asyncio.run(main())


# One body for both routers: each helper returns what the scenario needs, sync or async.

def complete(run: Run, **kw: Any) -> Any:
    return run.router.complete(session="ed", max_tokens=32, **kw)


def collect(run: Run, started: threading.Event | None = None, **kw: Any) -> Any:
    """Read a whole stream; `started` is set at its first chunk. Returns (chunks, completion)."""
    if run.mode == "sync":
        chunks = []
        with run.router.stream(session="ed", max_tokens=32, **kw) as s:
            for c in s:
                chunks.append(c)
                if started is not None:
                    started.set()
        return chunks, s.completion

    async def read() -> Any:
        chunks = []
        async with run.router.stream(session="ed", max_tokens=32, **kw) as s:
            async for c in s:
                chunks.append(c)
                if started is not None:
                    started.set()
        return chunks, s.completion
    return read()


def ledger(store: MemoryStore) -> list[tuple[str, int]]:
    return [(e.outcome, e.cost_nano) for e in store.ledger()]


def reserved(store: MemoryStore, router: Any) -> int:
    from starcoder_router import CompletionRequest

    keys = router._core.budget_keys(CompletionRequest(prompt="x"))
    return sum(s.reserved_nano for s in store.status(keys))


def in_background(run: Run, work: Callable[[], Any]) -> Any:
    """Start `work` beside the test (a thread or a task); returns a getter for its result."""
    if run.mode == "sync":
        out: dict[str, Any] = {}

        def target() -> None:
            try:
                out["v"] = work()
            except BaseException as exc:  # handed to the test
                out["e"] = exc
        t = threading.Thread(target=target)
        t.start()

        def result() -> Any:
            t.join(10)
            assert not t.is_alive()
            if "e" in out:
                raise out["e"]
            return out["v"]
        return result
    task = asyncio.ensure_future(work())

    async def aresult() -> Any:
        return await asyncio.wait_for(task, 10)
    return aresult


async def _until(check: Callable[[], bool]) -> None:
    for _ in range(1000):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out")


def until(run: Run, check: Callable[[], bool]) -> Any:
    if run.mode == "sync":
        for _ in range(1000):
            if check():
                return None
            time.sleep(0.01)
        raise AssertionError("timed out")
    return _until(check)


# -- supersession -------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_a_newer_request_supersedes_an_older_complete(mode: str, server: FakeServer) -> None:
    store = MemoryStore()
    # The older request's reply takes 4 s: a slow first byte (`AsyncRouter` aborts the wait),
    # or a slow stream (`Router` streams a session's `complete()` and stops between chunks).
    server.script(Reply(delay_s=4.0) if mode == "async"
                  else Reply(chunks=8, chunk_delay_s=0.5))
    router = router_for(mode, server, store)

    def check(older: Completion, newer: Completion, elapsed: float) -> None:
        assert older.finish_reason == "superseded"
        assert older.text == ""
        assert newer.finish_reason == "stop"
        assert newer.text == TEXT
        outcomes = ledger(store)
        assert ("cancelled", older.cost_nano) in outcomes
        assert [o for o, _ in outcomes].count("ok") == 1  # the newer one
        assert older.cost_nano > 0
        if mode == "async":  # aborted while waiting: its prompt is booked, nothing else
            assert older.usage.completion_tokens == 0
        else:  # cut between chunks: its prompt and the output produced so far
            assert 0 < older.usage.completion_tokens < newer.usage.completion_tokens
        assert elapsed < 3.0  # it did not wait for the slow reply
        assert reserved(store, router) == 0

    def sync_body(run: Run) -> None:
        t0 = time.monotonic()
        older = in_background(run, lambda: complete(run, prefix=PREFIX, suffix="\n"))
        until(run, lambda: len(server.requests) == 1)
        newer = complete(run, prefix=PREFIX + "x", suffix="\n")
        got_older = older()
        check(got_older, newer, time.monotonic() - t0)

    async def async_body(run: Run) -> None:
        t0 = time.monotonic()
        older = in_background(run, lambda: complete(run, prefix=PREFIX, suffix="\n"))
        await until(run, lambda: len(server.requests) == 1)
        newer_task = asyncio.ensure_future(complete(run, prefix=PREFIX + "x", suffix="\n"))
        got_older = await older()
        elapsed = time.monotonic() - t0
        check(got_older, await newer_task, elapsed)

    Run(mode, router)(sync_body if mode == "sync" else async_body)


@pytest.mark.parametrize("mode", MODES)
def test_a_newer_request_ends_an_older_stream_cleanly(mode: str, server: FakeServer) -> None:
    store = MemoryStore()
    server.script(Reply(chunks=8, chunk_delay_s=0.15))
    router = router_for(mode, server, store)
    started = threading.Event()

    def check(older: Any, newer: Completion) -> None:
        chunks, completion = older
        assert chunks[-1].finish_reason == "superseded"
        assert chunks[-1].text == ""
        delivered = "".join(c.text for c in chunks)
        assert delivered and len(delivered) < len(TEXT)
        assert completion.finish_reason == "superseded"
        assert completion.text == delivered
        assert completion.usage.completion_tokens > 0  # the output it produced is booked
        assert ("cancelled", completion.cost_nano) in ledger(store)
        assert newer.text == TEXT
        assert reserved(store, router) == 0

    def sync_body(run: Run) -> None:
        older = in_background(run, lambda: collect(run, started, prefix=PREFIX, suffix="\n"))
        assert started.wait(10)
        newer = complete(run, prefix=PREFIX + "y", suffix="\n")
        check(older(), newer)

    async def async_body(run: Run) -> None:
        older = in_background(run, lambda: collect(run, started, prefix=PREFIX, suffix="\n"))
        await until(run, started.is_set)
        newer = await complete(run, prefix=PREFIX + "y", suffix="\n")
        check(await older(), newer)

    Run(mode, router)(sync_body if mode == "sync" else async_body)


@pytest.mark.parametrize("mode", MODES)
def test_a_stream_superseded_before_its_first_chunk(mode: str, server: FakeServer) -> None:
    store = MemoryStore()
    server.script(Reply(delay_s=1.0, chunks=4))
    router = router_for(mode, server, store)

    def check(older: Any, newer: Any) -> None:
        chunks, completion = older
        assert [(c.text, c.finish_reason) for c in chunks][-1] == ("", "superseded")
        assert completion.finish_reason == "superseded"
        assert newer.text == TEXT
        assert reserved(store, router) == 0
        assert len(ledger(store)) == 2

    def sync_body(run: Run) -> None:
        older = in_background(run, lambda: collect(run, prefix=PREFIX, suffix="\n"))
        until(run, lambda: len(server.requests) == 1)
        newer = complete(run, prefix=PREFIX + "z", suffix="\n")
        check(older(), newer)

    async def async_body(run: Run) -> None:
        older = in_background(run, lambda: collect(run, prefix=PREFIX, suffix="\n"))
        await until(run, lambda: len(server.requests) == 1)
        newer = await complete(run, prefix=PREFIX + "z", suffix="\n")
        check(await older(), newer)

    Run(mode, router)(sync_body if mode == "sync" else async_body)


# -- reuse ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_typing_through_a_recent_completion_reuses_it(mode: str, server: FakeServer) -> None:
    store = MemoryStore()
    router = router_for(mode, server, store)

    def check(first: Completion, second: Completion, third: Completion) -> None:
        assert first.served_from == "upstream"
        assert second.served_from == "reuse"
        assert second.text == TEXT[len("total"):]
        assert second.cost_usd == 0
        assert second.usage.total_tokens == 0
        assert third.served_from == "upstream"  # typed something else: asked again
        assert len(server.requests) == 2
        assert [o for o, _ in ledger(store)] == ["ok", "reuse", "ok"]
        assert ledger(store)[1][1] == 0

    def sync_body(run: Run) -> None:
        first = complete(run, prefix=PREFIX, suffix="\n")
        second = complete(run, prefix=PREFIX + "total", suffix="\n")
        third = complete(run, prefix=PREFIX + "totes", suffix="\n")
        check(first, second, third)

    async def async_body(run: Run) -> None:
        first = await complete(run, prefix=PREFIX, suffix="\n")
        second = await complete(run, prefix=PREFIX + "total", suffix="\n")
        third = await complete(run, prefix=PREFIX + "totes", suffix="\n")
        check(first, second, third)

    Run(mode, router)(sync_body if mode == "sync" else async_body)


@pytest.mark.parametrize("mode", MODES)
def test_a_request_typing_through_a_running_stream_follows_it(mode: str,
                                                              server: FakeServer) -> None:
    store = MemoryStore()
    server.script(Reply(chunks=8, chunk_delay_s=0.1))
    router = router_for(mode, server, store)
    started = threading.Event()

    def check(leader: Any, follower: Any) -> None:
        l_chunks, l_done = leader
        f_chunks, f_done = follower
        assert l_done.text == TEXT  # the leader was not superseded
        assert l_done.finish_reason == "stop"
        typed = l_chunks[0].text[:3]
        assert "".join(c.text for c in f_chunks) == TEXT[len(typed):]
        assert f_done.served_from == "reuse"
        assert f_done.text == TEXT[len(typed):]
        assert f_done.cost_nano == 0
        assert len(server.requests) == 1  # followed, not restarted
        assert sorted(o for o, _ in ledger(store)) == ["ok", "reuse"]

    def sync_body(run: Run) -> None:
        leader = in_background(run, lambda: collect(run, started, prefix=PREFIX, suffix="\n"))
        assert started.wait(10)
        typed = TEXT[:3]
        follower = collect(run, prefix=PREFIX + typed, suffix="\n")
        check(leader(), follower)

    async def async_body(run: Run) -> None:
        leader = in_background(run, lambda: collect(run, started, prefix=PREFIX, suffix="\n"))
        await until(run, started.is_set)
        follower = await collect(run, prefix=PREFIX + TEXT[:3], suffix="\n")
        check(await leader(), follower)

    Run(mode, router)(sync_body if mode == "sync" else async_body)


# -- the exact-repeat cache ---------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_exact_repeats_of_greedy_requests_come_from_the_cache(mode: str,
                                                              server: FakeServer) -> None:
    store = MemoryStore()
    router = router_for(mode, server, store, AutocompletePolicy(cache_entries=4))

    def ask(run: Run, **kw: Any) -> Any:
        return run.router.complete(prompt="def g():", max_tokens=32, **kw)

    def check(got: list[Completion]) -> None:
        assert [c.served_from for c in got] == ["upstream", "cache", "upstream", "upstream",
                                                 "upstream"]
        assert got[1].text == got[0].text
        assert got[1].cost_nano == 0
        assert len(server.requests) == 4
        assert [o for o, _ in ledger(store)] == ["ok", "cache", "ok", "ok", "ok"]

    def calls(run: Run) -> list[Any]:
        return [ask(run, temperature=0), ask(run, temperature=0),
                ask(run, temperature=0, session="off"),  # opted out
                ask(run, temperature=0.7), ask(run, temperature=0.7)]  # sampling: never cached

    def sync_body(run: Run) -> None:
        check(calls(run))

    async def async_body(run: Run) -> None:
        got = []
        for c in calls(run):
            got.append(await c)
        check(got)

    Run(mode, router)(sync_body if mode == "sync" else async_body)


def test_without_a_session_nothing_changes(server: FakeServer) -> None:
    with router_for("sync", server, MemoryStore()) as router:
        a = router.complete(prefix=PREFIX, suffix="\n", max_tokens=32)
        b = router.complete(prefix=PREFIX + "total", suffix="\n", max_tokens=32)
    assert (a.served_from, b.served_from) == ("upstream", "upstream")
    assert len(server.requests) == 2


@pytest.mark.parametrize("shape", [None, "line", "block"])
def test_a_session_complete_answers_as_a_plain_one(shape: str | None,
                                                   server: FakeServer) -> None:
    # `Router` streams a session's `complete()` (to stop it between chunks when superseded);
    # what it answers is what the plain reply gives, shaped once at its end.
    store = MemoryStore()
    with router_for("sync", server, store) as router:
        kw: dict[str, Any] = {"prefix": PREFIX, "suffix": "\n", "max_tokens": 32, "mode": shape}
        in_session = router.complete(session="ed", **kw)
        plain = router.complete(**kw)
    assert [bool(r.body.get("stream")) for r in server.requests] == [True, False]

    def seen(c: Completion) -> tuple[Any, ...]:
        return c.text, c.usage, c.cost_nano, c.finish_reason, c.served_from, c.mode

    assert seen(in_session) == seen(plain)
    assert [e.outcome for e in store.ledger()] == ["ok", "ok"]
    assert reserved(store, router) == 0


@pytest.mark.parametrize("mode", MODES)
def test_a_session_stream_closed_early_books_what_it_produced(mode: str,
                                                              server: FakeServer) -> None:
    store = MemoryStore()
    server.script(Reply(chunks=8, chunk_delay_s=0.05))
    router = router_for(mode, server, store)

    def check(completion: Completion) -> None:
        assert completion.finish_reason == "cancelled"
        assert ledger(store) == [("cancelled", completion.cost_nano)]
        assert reserved(store, router) == 0

    def sync_body(run: Run) -> None:
        with run.router.stream(prefix=PREFIX, suffix="\n", session="ed", max_tokens=32) as s:
            next(s)
        check(s.completion)

    async def async_body(run: Run) -> None:
        async with run.router.stream(prefix=PREFIX, suffix="\n", session="ed",
                                     max_tokens=32) as s:
            await s.__anext__()
        check(s.completion)

    Run(mode, router)(sync_body if mode == "sync" else async_body)
