"""`on_store_error`: refuse while the spend store is down, or admit blind against a tenth of each
budget and book it all once the store is back."""

from __future__ import annotations

import random
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from starcoder_router._config import StoreSettings
from starcoder_router._errors import BudgetExceededError, ConfigError, StoreError
from starcoder_router._routing.cost import usd_to_nano
from starcoder_router._stores import open_configured, open_store
from starcoder_router._stores.memory import MemoryStore
from starcoder_router._stores.outage import OutageTolerantStore
from starcoder_router._stores.redis import RedisStore
from support.processes import stop
from support.redis_server import start_redis
from support.stores import entry, key

CENT = usd_to_nano(0.01)


class Flaky(MemoryStore):
    """A memory store that fails every call with `StoreError` while `down`."""

    down = False

    def __getattribute__(self, name: str) -> Any:
        if name in ("reserve", "settle", "release", "record", "areserve", "asettle",
                    "arelease", "arecord") and object.__getattribute__(self, "down"):
            raise StoreError("the store is down")
        return object.__getattribute__(self, name)


def test_reject_is_the_default_and_allow_wraps(tmp_path: Path) -> None:
    plain = open_store("sqlite", path=str(tmp_path / "a.db"))
    assert not isinstance(plain, OutageTolerantStore)
    plain.close()
    allowing = open_store("sqlite", path=str(tmp_path / "b.db"), on_store_error="allow")
    assert isinstance(allowing, OutageTolerantStore)
    allowing.close()
    with pytest.raises(ConfigError, match="on_store_error"):
        open_store("memory", on_store_error="maybe")  # type: ignore[arg-type]
    configured = open_configured(StoreSettings(kind="memory", on_store_error="allow"))
    assert isinstance(configured, OutageTolerantStore)
    assert StoreSettings().on_store_error == "reject"


def test_allow_admits_a_tenth_blind_and_books_it_when_the_store_returns() -> None:
    inner = Flaky()
    events: list[str] = []
    store = OutageTolerantStore(inner, observer=events.append)
    day = key(limit_usd=1.0)
    store.settle(store.reserve([day], CENT, 30.0), CENT, entry(CENT))
    inner.down = True
    for _ in range(10):
        store.settle(store.reserve([day], CENT, 30.0), CENT, entry(CENT))
    with pytest.raises(BudgetExceededError) as info:
        store.reserve([day], CENT, 30.0)
    assert info.value.status.limit_nano == 10 * CENT  # a tenth of $1
    assert inner.spent(day.key) == CENT and store.pending == 10
    inner.down = False
    store.settle(store.reserve([day], CENT, 30.0), CENT, entry(CENT))
    assert store.pending == 0
    assert inner.spent(day.key) == 12 * CENT == sum(e.cost_nano for e in inner.ledger())
    assert store.counts == {"admitted_blind": 10, "refused_blind": 1, "journaled": 10,
                            "booked": 10}
    assert events.count("admitted_blind") == 10
    # The allowance starts afresh for the next outage.
    inner.down = True
    store.release(store.reserve([day], 10 * CENT, 30.0))


async def test_the_gateway_counts_blind_admissions_in_its_metrics() -> None:
    from starcoder_router._server.gateway import Gateway

    inner = Flaky()
    store = OutageTolerantStore(inner)
    gateway = Gateway(store=store)
    try:
        inner.down = True
        store.release(store.reserve([key()], CENT, 30.0))
        body, _ = gateway.metrics.render()
        assert b'starcoder_router_store_outage_events_total{event="admitted_blind"} 1.0' in body
    finally:
        await gateway.aclose()


def test_a_failed_settle_is_journaled_not_lost_nor_raised() -> None:
    inner = Flaky()
    store = OutageTolerantStore(inner)
    day = key(limit_usd=1.0)
    res = store.reserve([day], 5 * CENT, 30.0)
    inner.down = True
    store.settle(res, 3 * CENT, entry(3 * CENT))
    store.record([day], CENT, entry(CENT))
    inner.down = False
    store.flush()
    [status] = inner.status([day])
    assert (status.spent_nano, status.reserved_nano) == (4 * CENT, 0)
    assert len(inner.ledger()) == 2


def test_the_allowance_is_never_more_than_the_store_last_said_was_left() -> None:
    inner = Flaky()
    store = OutageTolerantStore(inner, fraction=0.5)
    day = key(limit_usd=1.0)
    store.settle(store.reserve([day], 95 * CENT, 30.0), 95 * CENT)
    store.release(store.reserve([day], CENT, 30.0))  # the store says: 4 cents left
    inner.down = True
    with pytest.raises(BudgetExceededError):
        store.reserve([day], 5 * CENT, 30.0)
    store.release(store.reserve([day], 4 * CENT, 30.0))


async def test_the_async_twins_admit_blind_and_replay() -> None:
    inner = Flaky()
    store = OutageTolerantStore(inner)
    day = key(limit_usd=1.0)
    inner.down = True
    res = await store.areserve([day], CENT, 30.0)
    await store.asettle(res, CENT, entry(CENT))
    await store.arecord([day], CENT)
    inner.down = False
    await store.asettle(await store.areserve([day], CENT, 30.0), CENT)
    assert inner.spent(day.key) == 3 * CENT
    assert store.counts["booked"] == 2


@pytest.mark.slow
def test_a_redis_server_killed_under_load_loses_nothing(tmp_path: Path) -> None:
    """8 threads spend through a real redis-server that is SIGKILLed, left down for 2 s and
    started again on the same port. With "allow" they keep being served from the allowance;
    afterwards the server's spend and ledger hold every request, blind or not, exactly once."""
    proc, url = start_redis(tmp_path, durable=True)
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    store = open_store("redis", url=url, prefix="outage:", on_store_error="allow")
    assert isinstance(store, OutageTolerantStore)
    budget, worst = key(limit_usd=20.0), usd_to_nano(0.002)
    settled: list[tuple[str, int]] = []
    refused = 0
    lock = threading.Lock()
    stop_at = [time.monotonic() + 120.0]

    def work(rng: random.Random) -> None:
        nonlocal refused
        while time.monotonic() < stop_at[0]:
            try:
                res = store.reserve([budget], worst, 30.0)
            except BudgetExceededError:
                with lock:
                    refused += 1
                time.sleep(0.01)
                continue
            time.sleep(rng.uniform(0.001, 0.005))
            actual, rid = rng.randint(1, worst), uuid.uuid4().hex
            store.settle(res, actual, entry(actual, request_id=rid))
            with lock:
                settled.append((rid, actual))

    pool = [threading.Thread(target=work, args=(random.Random(i),)) for i in range(8)]
    try:
        for thread in pool:
            thread.start()
        while len(settled) < 200:
            time.sleep(0.01)
        proc.kill()
        proc.wait()
        time.sleep(2.0)
        proc, _ = start_redis(tmp_path, port=port, durable=True)
        while store.counts["booked"] < store.counts["journaled"] or store.pending:
            time.sleep(0.05)
        stop_at[0] = time.monotonic() + 1.0
        for thread in pool:
            thread.join()
        store.flush()
        counts = store.counts
        assert counts["admitted_blind"] > 0
        assert counts["booked"] == counts["journaled"] >= counts["admitted_blind"]
        reader = RedisStore(url, prefix="outage:")
        assert reader.spent(budget.key) == sum(cost for _, cost in settled)
        assert sorted(e.request_id for e in reader.ledger()) == sorted(r for r, _ in settled)
        reader.close()
        print(f"redis outage: {len(settled)} settled, {counts['admitted_blind']} admitted blind, "
              f"{counts['refused_blind']} refused blind, {counts['journaled']} journaled, "
              f"{counts['booked']} booked")
    finally:
        stop_at[0] = 0.0
        for thread in pool:
            thread.join()
        store.close()
        stop(proc)
