"""Budgets hold under concurrency: many threads, tasks and processes race for one $1 budget.

Each worker reserves the worst case, then settles a random actual cost no larger, until the
budget refuses it with nothing reserved. If admission were check-then-increment (the race other
routers have), the settled spend would overshoot the limit; here it must not, and the budget
must end used up to within one request's worst case.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import time
import uuid
from collections.abc import Callable

import pytest

from starcoder_router._errors import BudgetExceededError
from starcoder_router._routing.cost import usd_to_nano
from starcoder_router._stores.base import BudgetKey, Reservation
from starcoder_router._stores.memory import MemoryStore
from support.stores import entry, key, process_worker, run_threads

WORST = usd_to_nano(0.002)  # about 1,000 settled requests per dollar, half the worst on average


def check_outcome(store, budget: BudgetKey, settled: list[tuple[str, int]]) -> int:
    """Assert the budget held; return the overshoot (settled spend above the limit)."""
    spent = store.spent(budget.key)
    assert spent == sum(cost for _, cost in settled)
    overshoot = spent - budget.limit_nano
    assert overshoot <= 0, f"overspent by {overshoot} nano-dollars"
    assert budget.limit_nano - spent < WORST, "the budget refused requests it had room for"
    ids = sorted(e.request_id for e in store.ledger())
    assert ids == sorted(rid for rid, _ in settled), "each settled request: one ledger entry"
    [status] = store.status([budget])
    assert status.reserved_nano == 0
    assert len(settled) > 300
    return overshoot


class CheckThenIncrement:
    """What other routers do: check the spend, call the model, then add the cost. No hold."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def reserve(self, keys, amount_nano, ttl_s):
        [status] = self.inner.status(keys)
        if status.spent_nano + amount_nano > status.limit_nano:
            raise BudgetExceededError(status, requested_usd=amount_nano / 1e9)
        return Reservation(id=uuid.uuid4().hex, keys=tuple(keys), amount_nano=0, expires_at=0.0)

    def settle(self, reservation, actual_nano, entry=None) -> None:
        time.sleep(0.0005)  # the request was in flight meanwhile
        self.inner.settle(reservation, actual_nano, entry)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_the_checks_catch_a_check_then_increment_race() -> None:
    store = CheckThenIncrement(MemoryStore())
    budget = key(limit_usd=1.0)
    settled = run_threads(store, budget, WORST, threads=50, seed=1)
    with pytest.raises(AssertionError, match="overspent"):
        check_outcome(store, budget, settled)


def test_threads_never_overspend(make_store: Callable[[], object]) -> None:
    store = make_store()
    budget = key(limit_usd=1.0)
    settled = run_threads(store, budget, WORST, threads=50, seed=1)
    check_outcome(store, budget, settled)


async def test_tasks_never_overspend(make_store: Callable[[], object]) -> None:
    store = make_store()
    budget = key(limit_usd=1.0)
    settled: list[tuple[str, int]] = []

    async def work(rng: random.Random) -> None:
        while True:
            try:
                res = await store.areserve([budget], WORST, 60.0)
            except BudgetExceededError as exc:
                if exc.status.reserved_nano == 0:
                    return
                await asyncio.sleep(0.001)
                continue
            await asyncio.sleep(rng.uniform(0, 0.002))  # the request is in flight
            actual, rid = rng.randint(1, WORST), uuid.uuid4().hex
            await store.asettle(res, actual, entry(actual, request_id=rid))
            settled.append((rid, actual))

    try:
        await asyncio.gather(*(work(random.Random(i)) for i in range(100)))
        check_outcome(store, budget, settled)
    finally:
        await store.aclose()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "redis", "cluster"])
def test_processes_never_overspend(kind: str, shared_store) -> None:
    """8 processes x 50 threads, each process with its own store on one backend."""
    store, spec = shared_store
    budget, processes = key(limit_usd=1.0), 8
    context = multiprocessing.get_context("spawn")
    start, results = context.Barrier(processes), context.Queue()
    workers = [context.Process(target=process_worker,
                               args=(spec, budget, WORST, 50, seed, start, results))
               for seed in range(processes)]
    for worker in workers:
        worker.start()
    per_process = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
        assert worker.exitcode == 0
    settled = [pair for result in per_process for pair in result]
    check_outcome(store, budget, settled)
    assert sum(1 for result in per_process if result) >= processes // 2, [
        len(result) for result in per_process]
