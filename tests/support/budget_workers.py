"""Helpers for router-level budget tests: a fake provider on loopback and workers that drive
real Routers against it from other processes."""

from __future__ import annotations

import threading

from starcoder_router import (
    Budget,
    BudgetExceededError,
    Catalog,
    CostPolicy,
    Deployment,
    Router,
)
from starcoder_router._stores.memory import MemoryStore
from starcoder_router._stores.redis import RedisStore
from starcoder_router._stores.sqlite import SQLiteStore

# $100 per million tokens each way: "def f():" (8 bytes, the reservation's bound) plus
# max_tokens=100 reserves $0.0108; a scripted 2-token answer settles far less.
PRICE = 100.0
MAX_TOKENS = 100
WORST_USD = (8 + MAX_TOKENS) * PRICE / 1e6


def paid_deployment(base_url: str) -> Deployment:
    return Deployment(name="fake/paid", provider="openai-compatible", variant="starcoder2-3b",
                      model="fake", context_window=16384, base_url=base_url,
                      input_usd_per_mtok=PRICE, output_usd_per_mtok=PRICE)


def open_store(kind: str, where: str) -> MemoryStore | SQLiteStore | RedisStore:
    if kind == "sqlite":
        return SQLiteStore(where)
    if kind == "redis":
        url, _, prefix = where.partition("|")
        return RedisStore(url, prefix=prefix)
    return MemoryStore()


def drive(router: Router, threads: int) -> list[str]:
    """Each thread completes requests until the budget refuses; returns the request ids."""
    done: list[str] = []
    lock = threading.Lock()

    def loop() -> None:
        while True:
            try:
                c = router.complete(prompt="def f():", max_tokens=MAX_TOKENS)
            except BudgetExceededError:
                return
            with lock:
                done.append(c.attempts[-1].deployment)

    workers = [threading.Thread(target=loop) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return done


def process_main(kind: str, where: str, base_url: str, threads: int, limit_usd: float,
                 barrier: threading.Barrier) -> int:
    store = open_store(kind, where)
    router = Router(
        catalog=Catalog.default().with_deployments(paid_deployment(base_url)),
        policy=CostPolicy(allow_providers={"openai-compatible"},
                          budgets=[Budget(limit_usd=limit_usd, period="total")]),
        store=store, tokenizer=False, env={},
    )
    barrier.wait()
    done = drive(router, threads)
    router.close()
    store.close()
    return len(done)
