"""Who owns what while a request runs, on every path: budget holds, hedge threads and tasks,
connections after `close()`, and what a stream closed early keeps. Each body runs through
`Router` and through `AsyncRouter` on both transports, against real loopback servers."""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from starcoder_router import (
    AsyncRouter,
    Budget,
    Catalog,
    CoolingWait,
    CostPolicy,
    HealthPolicy,
    HedgePolicy,
    Hooks,
    InvalidResponseError,
    MemoryStore,
    NoRouteError,
    ProviderServerError,
    RetryPolicy,
    Router,
    RouterClosedError,
)
from starcoder_router._providers.base import Provider
from starcoder_router._running.run import RequestRun
from starcoder_router._stores.base import BudgetKey, LedgerEntry, Reservation
from starcoder_router.testing import FakeServer, Reply

MODES = ["sync", "async-httpx", "async-aiohttp"]


class TrackingStore(MemoryStore):
    """A MemoryStore that knows which reservations are still held."""

    def __init__(self) -> None:
        super().__init__()
        self.held: set[str] = set()

    def reserve(self, keys: Sequence[BudgetKey], amount_nano: int, ttl_s: float) -> Reservation:
        res = super().reserve(keys, amount_nano, ttl_s)
        self.held.add(res.id)
        return res

    def settle(self, reservation: Reservation, actual_nano: int,
               entry: LedgerEntry | None = None) -> None:
        super().settle(reservation, actual_nano, entry)
        self.held.discard(reservation.id)

    def release(self, reservation: Reservation, entry: LedgerEntry | None = None) -> None:
        super().release(reservation, entry)
        self.held.discard(reservation.id)


class Drive:
    """Runs one test body through a sync or an async router."""

    def __init__(self, mode: str, servers: Sequence[FakeServer], **kwargs: Any):
        deps = [s.deployment(name=f"fake/{i}", input_usd_per_mtok=1.0, output_usd_per_mtok=2.0)
                for i, s in enumerate(servers)]
        kwargs.setdefault("retry", RetryPolicy(max_retries=0))
        kwargs.setdefault("store", TrackingStore())
        kwargs.setdefault("policy", CostPolicy(allow_providers={"openai-compatible"},
                                               budgets=[Budget(limit_usd=100)]))
        common = dict(catalog=Catalog(variants=Catalog.default().variants, deployments=deps),
                      tokenizer=False, env={}, **kwargs)
        self.mode = mode
        if mode == "sync":
            self.router: Router | AsyncRouter = Router(**common)
        else:
            self.router = AsyncRouter(transport=mode.removeprefix("async-"), **common)

    @property
    def store(self) -> TrackingStore:
        store = self.router.store
        assert isinstance(store, TrackingStore)
        return store

    async def complete(self, **fields: Any) -> Any:
        out = self.router.complete(**fields)
        return await out if inspect.isawaitable(out) else out

    async def read_then_close(self, n: int, **fields: Any) -> tuple[list[str], Any]:
        """Read `n` chunks of a stream, then close it; the texts and the stream."""
        stream = self.router.stream(**fields)
        if isinstance(stream, Iterator):
            with stream:
                texts = [next(stream).text for _ in range(n)]
        else:
            async with stream:
                texts = [(await stream.__anext__()).text for _ in range(n)]
        return texts, stream

    async def close(self) -> None:
        out = self.router.close()
        if inspect.isawaitable(out):
            await out


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def servers() -> Iterator[list[FakeServer]]:
    with FakeServer() as a, FakeServer() as b:
        yield [a, b]


async def test_a_closed_router_refuses_requests(mode: str, servers: list[FakeServer]) -> None:
    drive = Drive(mode, servers[:1])
    assert (await drive.complete(prompt="def f():", max_tokens=4)).text
    await drive.close()
    with pytest.raises(RouterClosedError, match="closed"):
        await drive.complete(prompt="def f():", max_tokens=4)
    with pytest.raises(RouterClosedError):
        drive.router.stream(prompt="def f():", max_tokens=4)
    assert drive.router.closed
    assert len(servers[0].requests) == 1


async def test_a_stream_closed_early_keeps_what_it_delivered(mode: str,
                                                             servers: list[FakeServer]) -> None:
    servers[0].script(Reply(text="a b c d e f g h", chunks=8))
    drive = Drive(mode, servers[:1])
    texts, stream = await drive.read_then_close(2, prompt="def f():", max_tokens=8)
    done = stream.completion
    assert done is not None
    assert (done.finish_reason, done.text) == ("cancelled", "".join(texts))
    [entry] = drive.store.ledger()
    assert (entry.outcome, entry.cost_nano) == ("cancelled", done.cost_nano)
    assert done.cost_nano > 0 and not drive.store.held
    await drive.close()


async def test_an_unreadable_reply_falls_back_and_frees_its_hold(
        mode: str, servers: list[FakeServer], monkeypatch: pytest.MonkeyPatch) -> None:
    real = Provider.parse

    def parse(self: Provider, call: Any, resp: Any) -> Any:
        if call.deployment.name == "fake/0":
            raise TypeError("a choice that is `true`")
        return real(self, call, resp)

    monkeypatch.setattr(Provider, "parse", parse)
    drive = Drive(mode, servers, retry=RetryPolicy(max_retries=0))
    done = await drive.complete(prompt="def f():", max_tokens=4)
    assert done.deployment.name == "fake/1"
    assert isinstance(done.attempts[0].error, InvalidResponseError)
    assert done.attempts[0].error.deployment == "fake/0"
    assert not drive.store.held
    await drive.close()


@pytest.mark.parametrize("raised", [RuntimeError("a bug"), KeyboardInterrupt()])
async def test_an_unforeseen_exception_frees_the_hold(mode: str, servers: list[FakeServer],
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      raised: BaseException) -> None:
    def succeeded(*args: Any, **kwargs: Any) -> Any:
        raise raised

    monkeypatch.setattr(RequestRun, "succeeded", succeeded)
    drive = Drive(mode, servers[:1])
    with pytest.raises(type(raised)):
        await drive.complete(prompt="def f():", max_tokens=4)
    assert not drive.store.held
    with pytest.raises(type(raised)):
        async_or_sync = drive.router.stream(prompt="def f():", max_tokens=4)
        if isinstance(async_or_sync, Iterator):
            list(async_or_sync)
        else:
            [c async for c in async_or_sync]
    assert not drive.store.held
    await drive.close()


@pytest.mark.parametrize("transport", ["httpx", "aiohttp"])
async def test_a_cancelled_task_frees_the_hold(transport: str, servers: list[FakeServer]) -> None:
    servers[0].script(Reply(delay_s=2.0))
    drive = Drive(f"async-{transport}", servers[:1])
    task = asyncio.ensure_future(drive.complete(prompt="def f():", max_tokens=4))
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not drive.store.held
    await drive.close()


async def test_every_candidate_cooling_answers_at_once_saying_why(
        mode: str, servers: list[FakeServer]) -> None:
    servers[0].script(Reply(status=500))
    drive = Drive(mode, servers[:1], health=HealthPolicy(failure_threshold=1, cooldown_s=30))
    with pytest.raises(ProviderServerError):
        await drive.complete(prompt="def f():", max_tokens=4)
    started = time.monotonic()
    with pytest.raises(NoRouteError) as info:
        await drive.complete(prompt="def f():", max_tokens=4)
    assert time.monotonic() - started < 0.5
    text = str(info.value)
    assert "fake/0: cooling down until " in text
    assert "1 failure in a row, the last ProviderServerError (HTTP 500)" in text
    assert "HealthPolicy.max_wait_s" in text
    assert not drive.store.held
    await drive.close()


async def test_a_short_cooling_wait_is_announced(mode: str, servers: list[FakeServer]) -> None:
    servers[0].script(Reply(status=500))
    waits: list[CoolingWait] = []
    drive = Drive(mode, servers[:1], hooks=Hooks(on_wait=[waits.append]),
                  health=HealthPolicy(failure_threshold=1, cooldown_s=0.2, max_wait_s=1))
    with pytest.raises(ProviderServerError):
        await drive.complete(prompt="def f():", max_tokens=4)
    done = await drive.complete(prompt="def f():", max_tokens=4)
    assert done.text
    assert [w.deployment for w in waits] == ["fake/0"]
    assert 0.0 < waits[0].seconds <= 0.21
    await drive.close()


def _threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith("starcoder-router-hedge"))


async def _settle_threads(limit_s: float = 3.0) -> int:
    deadline = time.monotonic() + limit_s
    while _threads() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return _threads()


async def _tasks_besides_this_one() -> int:
    await asyncio.sleep(0.05)
    return len(asyncio.all_tasks()) - 1


async def test_hedged_requests_leave_no_thread_or_task_behind(mode: str) -> None:
    with FakeServer(latency_s=0.3) as slow, FakeServer(latency_s=0.05) as fast:
        drive = Drive(mode, [slow, fast], hedge=HedgePolicy(after_s=0.01),
                      policy=CostPolicy(allow_providers={"openai-compatible"},
                                        budgets=[Budget(limit_usd=100)]))
        for _ in range(20):
            done = await drive.complete(prompt="def f():", max_tokens=4, hedge=True)
            assert done.text
        await drive.close()
        assert await _settle_threads() == 0
        if mode != "sync":
            assert await _tasks_besides_this_one() == 0
        assert not drive.store.held
        # Every leg was booked once: the winner as ok, each loser as cancelled.
        outcomes = [e.outcome for e in drive.store.ledger()]
        assert outcomes.count("ok") == 20
        assert len(outcomes) <= 40


async def test_hedged_streams_leave_no_thread_or_task_behind(mode: str) -> None:
    with FakeServer(latency_s=0.3) as slow, FakeServer(latency_s=0.05) as fast:
        drive = Drive(mode, [slow, fast], hedge=HedgePolicy(after_s=0.01))
        for _ in range(5):
            texts, stream = await drive.read_then_close(1, prompt="def f():", max_tokens=4,
                                                        hedge=True)
            assert texts and stream.completion is not None
        await drive.close()
        assert await _settle_threads() == 0
        assert not drive.store.held
