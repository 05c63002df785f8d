"""Leak checks: after a few thousand faulty requests and `close()`, threads, file descriptors and
asyncio tasks are back to where they were, and the memory a request leaves behind (traced by
tracemalloc, past a warm-up) stays under 64 bytes.

The faults here are the quick ones (no hangs or drips, which only cost time); the spend store's
ledger is capped so it does not count as a leak.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import itertools
import logging
import os
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fault_server import SpawnedFaultServer
from fault_support import TrackingStore
from scenarios import Outcome, one_async, one_sync, router_args

from starcoder_router import AsyncRouter, HealthPolicy, HedgePolicy, Router
from starcoder_router._transports.aiohttp_transport import AiohttpTransport
from starcoder_router._transports.base import WireRequest

UNTRACED = 900      # requests before memory is traced: warm-up, and the bulk of the load
TRACED = 300        # requests per traced window
WINDOWS = 4
MAX_BYTES_PER_REQUEST = 64


@pytest.fixture
def server() -> Iterator[SpawnedFaultServer]:
    # In a process of its own: only the client's threads, descriptors and memory are measured.
    with SpawnedFaultServer(seed=11, rate=0.1) as s:
        yield s


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _settles(measure: Callable[[], int], want: int, within: float = 3.0) -> int:
    """`measure()` once it is back to `want` (the server closes its side of a connection a
    moment after the client), or its last value."""
    until = time.monotonic() + within
    while (value := measure()) > want and time.monotonic() < until:
        time.sleep(0.05)
    return value


class _LeanStore(TrackingStore):
    """Keeps only the newest ledger entries: a full ledger is retained memory by design."""

    def __init__(self) -> None:
        super().__init__()
        self._ledger = type(self._ledger)(maxlen=32)


def _args(server: SpawnedFaultServer, store: TrackingStore, **extra: Any) -> dict[str, Any]:
    # A quarter of the requests hedge (each leg of a sync hedge runs on a thread). The breaker
    # keeps a minute of outcomes by default, memory that is bounded by time, not by requests:
    # a one-second window keeps it out of the measurement.
    return router_args(server, store, hedge=HedgePolicy(after_s=0.001),
                       health=HealthPolicy(failure_threshold=10**9, min_requests=10**9,
                                           window_s=1.0), **extra)


@contextlib.contextmanager
def _logs_counted() -> Iterator[collections.Counter[str]]:
    """While memory is measured, log records go to a counter instead of pytest's capture, which
    keeps every record of a test (with its formatted traceback) until the test ends: memory the
    harness holds, not the router. The counts name what was logged if the check fails."""
    counts: collections.Counter[str] = collections.Counter()

    class _Count(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            counts[f"{record.name}: {record.msg}"] += 1

    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers = [_Count()]
    try:
        yield counts
    finally:
        root.handlers = saved


def _kept_per_request(marks: list[int]) -> float:
    """Bytes kept per request, from traced memory after each window of `TRACED` requests: the
    least growth of any window. A leak grows memory in every window; a cache filling up, or the
    number of pooled connections that happen to be open, moves it in some and not others."""
    return min(b - a for a, b in itertools.pairwise(marks)) / TRACED


def test_sync_router_leaks_nothing(server: SpawnedFaultServer) -> None:
    threads, fds = threading.active_count(), _fds()
    store = _LeanStore()
    router = Router(**_args(server, store))
    outcome = Outcome(keep=False)

    def run(n: int) -> int:
        for i in range(n):
            one_sync(router, outcome, stream=i % 2 == 1, prompt="def f(x):",
                     hedge=i % 4 == 0)
        gc.collect()
        return tracemalloc.get_traced_memory()[0]

    with _logs_counted() as logged:
        run(UNTRACED)
        tracemalloc.start()
        try:
            per_request = _kept_per_request([run(TRACED) for _ in range(WINDOWS + 1)])
        finally:
            tracemalloc.stop()
    router.close()
    assert _settles(threading.active_count, threads) == threads
    assert _settles(_fds, fds) == fds
    assert not outcome.problems, outcome.problems[:3]
    assert not store.open, store.open_holds()
    assert per_request < MAX_BYTES_PER_REQUEST, (
        f"{per_request:.0f} bytes kept per request; logged: {logged.most_common(3)}")


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_async_router_leaks_nothing(server: SpawnedFaultServer, transport: str) -> None:
    fds = _fds()
    store = _LeanStore()
    outcome = Outcome(keep=False)

    async def main() -> tuple[float, int]:
        tasks = len(asyncio.all_tasks())
        router = AsyncRouter(**_args(server, store, transport=transport))
        gate = asyncio.Semaphore(16)

        async def one(i: int) -> None:
            async with gate:
                await one_async(router, outcome, stream=i % 2 == 1, prompt="def f(x):",
                                hedge=i % 4 == 0)

        async def run(n: int) -> int:
            await asyncio.gather(*(one(i) for i in range(n)))
            gc.collect()
            return tracemalloc.get_traced_memory()[0]

        # httpx's pool is slower: fewer untraced requests keep the test short.
        await run(UNTRACED if transport == "aiohttp" else UNTRACED // 2)
        tracemalloc.start()
        try:
            per_request = _kept_per_request([await run(TRACED) for _ in range(WINDOWS + 1)])
        finally:
            tracemalloc.stop()
        await router.aclose()
        await asyncio.sleep(0.1)  # let closed connections' callbacks run
        return per_request, len(asyncio.all_tasks()) - tasks

    with _logs_counted() as logged:
        per_request, extra_tasks = asyncio.run(main())
    assert extra_tasks == 0, f"{extra_tasks} tasks left running"
    assert _settles(_fds, fds) == fds
    assert not outcome.problems, outcome.problems[:3]
    assert not store.open, store.open_holds()
    assert per_request < MAX_BYTES_PER_REQUEST, (
        f"{per_request:.0f} bytes kept per request; logged: {logged.most_common(3)}")


def test_aiohttp_transport_keeps_nothing_per_timeout() -> None:
    """The transport once cached a `ClientTimeout` per distinct timeout, and the router's
    timeout is what is left of each request's deadline: a new entry on almost every call."""
    with SpawnedFaultServer(rate=0.0) as server:
        deployment = server.deployment("t")
        per_request = asyncio.run(_send_many(deployment.base_url))
    assert per_request < MAX_BYTES_PER_REQUEST, f"{per_request:.0f} bytes kept per request"


async def _send_many(base_url: str) -> float:
    request = WireRequest("POST", base_url + "/completions",
                          {"content-type": "application/json"},
                          b'{"model": "m", "prompt": "x", "max_tokens": 1}')
    transport = AiohttpTransport()

    calls = itertools.count()

    async def run(n: int) -> int:
        for _ in range(n):
            # A different timeout on every call, as the router's (what is left of a deadline).
            await transport.asend(request, timeout=5.0 - next(calls) * 1e-6, connect_timeout=1.0)
        gc.collect()
        return tracemalloc.get_traced_memory()[0]

    await run(TRACED)
    tracemalloc.start()
    try:
        return _kept_per_request([await run(TRACED) for _ in range(WINDOWS + 1)])
    finally:
        tracemalloc.stop()
        await transport.aclose()
