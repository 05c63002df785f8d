"""Builders and worker functions for the store tests.

Worker functions live here, not in a test module, because `multiprocessing` with the spawn
context imports them by module name in each child, and this module imports only the stores.
"""

from __future__ import annotations

import datetime as dt
import random
import threading
import time
import uuid
from typing import Any

from starcoder_router._errors import BudgetExceededError
from starcoder_router._routing.cost import usd_to_nano
from starcoder_router._stores.base import BudgetKey, LedgerEntry, Reservation
from starcoder_router._stores.memory import MemoryStore
from starcoder_router._stores.redis import RedisStore
from starcoder_router._stores.sqlite import SQLiteStore

T0 = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)


def key(name: str = "global/day", limit_usd: float = 1.0, *, bucket: str = "2026-11-26",
        expires_in: dt.timedelta | None = dt.timedelta(days=3)) -> BudgetKey:
    """A budget key that expires relative to the real clock: stores really expire buckets, so a
    fixed date would make these tests fail once it has passed."""
    if expires_in is None:
        return BudgetKey(budget=name, key=f"{name}|{bucket}", limit_nano=usd_to_nano(limit_usd),
                         resets_at=None, expires_at=None)
    expires = dt.datetime.now(dt.UTC).replace(microsecond=0) + expires_in
    return BudgetKey(budget=name, key=f"{name}|{bucket}", limit_nano=usd_to_nano(limit_usd),
                     resets_at=expires - dt.timedelta(days=2), expires_at=expires)


def entry(cost_nano: int, *, request_id: str | None = None, time: dt.datetime = T0,
          tenant: str | None = None, deployment: str = "dep-a") -> LedgerEntry:
    return LedgerEntry(request_id=request_id or uuid.uuid4().hex, time=time,
                       deployment=deployment, provider="fake", model="starcoder2-3b",
                       prompt_tokens=100, completion_tokens=20, cost_nano=cost_nano,
                       outcome="ok", tenant=tenant, tags=("ci",), provider_request_id="p-1")


def open_store(spec: tuple[str, str, str]) -> MemoryStore | SQLiteStore | RedisStore:
    kind, target, prefix = spec
    if kind == "sqlite":
        return SQLiteStore(target)
    if kind == "redis":
        return RedisStore(target, prefix=prefix)
    raise ValueError(f"cannot open a {kind} store in another process")


def run_threads(store: Any, budget: BudgetKey, worst_nano: int, threads: int,
                seed: int) -> list[tuple[str, int]]:
    """`threads` threads each reserve the worst case and settle a random actual cost, until the
    budget refuses with nothing reserved (truly exhausted). Returns (request id, cost) settled."""
    settled: list[tuple[str, int]] = []
    lock = threading.Lock()
    deadline = time.monotonic() + 120

    def work(rng: random.Random) -> None:
        while time.monotonic() < deadline:
            try:
                res = store.reserve([budget], worst_nano, 60.0)
            except BudgetExceededError as exc:
                if exc.status.reserved_nano == 0:
                    return
                time.sleep(rng.uniform(0.001, 0.005))  # others hold reservations: wait for them
                continue
            actual = rng.randint(1, worst_nano)
            request_id = uuid.uuid4().hex
            store.settle(res, actual, entry(actual, request_id=request_id))
            with lock:
                settled.append((request_id, actual))

    pool = [threading.Thread(target=work, args=(random.Random(seed * 1000 + i),))
            for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return settled


def process_worker(spec: tuple[str, str, str], budget: BudgetKey, worst_nano: int, threads: int,
                   seed: int, start: Any, results: Any) -> None:
    """Open a store, wait until every process is ready, race; put the settled pairs on
    `results`. The barrier matters: spawned children start a second apart, and without it the
    first would spend the budget alone."""
    store = open_store(spec)
    try:
        start.wait()
        results.put(run_threads(store, budget, worst_nano, threads, seed))
    finally:
        store.close()


def hold_reservations(spec: tuple[str, str, str], budget: BudgetKey, amount_nano: int,
                      count: int, ttl_s: float, ready: Any) -> None:
    """Reserve `count` times, say so, then hang until killed: a crashed app instance."""
    store = open_store(spec)
    held: list[Reservation] = [store.reserve([budget], amount_nano, ttl_s) for _ in range(count)]
    ready.set()
    time.sleep(600)
    store.close()
    del held
