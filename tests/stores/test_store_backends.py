"""What only SQLite or Redis do: files, expiry in the server, scripts, crashed holders."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import sys
import time

import pytest

from starcoder_router._errors import BudgetExceededError, MissingDependencyError
from starcoder_router._routing.cost import usd_to_nano
from starcoder_router._stores.redis import RedisStore
from starcoder_router._stores.sqlite import SQLiteStore
from support.stores import hold_reservations, key

CENT = usd_to_nano(0.01)


def test_sqlite_spend_survives_reopening(tmp_path) -> None:
    path = tmp_path / "spend.db"
    day = key()
    with_store = SQLiteStore(path)
    with_store.record([day], 42 * CENT)
    with_store.reserve([day], 10 * CENT, 60.0)
    with_store.close()
    again = SQLiteStore(path)
    [status] = again.status([day])
    assert (status.spent_nano, status.reserved_nano) == (42 * CENT, 10 * CENT)
    again.close()


def test_sqlite_uses_wal_and_normal_sync(tmp_path) -> None:
    store = SQLiteStore(tmp_path / "spend.db")
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    store.close()
    with sqlite3.connect(tmp_path / "spend.db") as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    raw.close()


@pytest.mark.parametrize("kind", ["redis"])
def test_redis_buckets_expire_with_their_period(make_store, redis_url) -> None:
    import redis

    store = make_store()
    day, forever = key(), key("global/total", bucket="total", expires_in=None)
    store.reserve([day, forever], CENT, 60.0)
    store.settle(store.reserve([day, forever], CENT, 60.0), CENT)
    client = redis.Redis.from_url(redis_url)
    expected = day.expires_at.timestamp() - time.time()
    for name in ("b", "x", "s"):
        assert client.ttl(f"{store.prefix}{{{day.key}}}:{name}") == pytest.approx(expected, abs=5)
    assert client.ttl(f"{store.prefix}{{{forever.key}}}:b") == -1  # no expiry
    client.close()


@pytest.mark.parametrize("kind", ["redis"])
def test_redis_reservations_expire_by_the_server_clock(make_store, redis_url) -> None:
    import redis

    store = make_store()
    client = redis.Redis.from_url(redis_url)
    seconds, micros = client.time()
    res = store.reserve([key()], CENT, 30.0)
    assert res.expires_at == pytest.approx(seconds + micros / 1e6 + 30.0, abs=1.0)
    client.close()


@pytest.mark.parametrize("kind", ["redis"])
async def test_redis_scripts_are_reloaded_after_a_script_flush(make_store, redis_url) -> None:
    import redis

    store = make_store()
    day = key()
    store.reserve([day], CENT, 30.0)
    client = redis.Redis.from_url(redis_url)
    client.script_flush()
    client.close()
    store.settle(store.reserve([day], CENT, 30.0), CENT)
    res = await store.areserve([day], CENT, 30.0)
    await store.asettle(res, CENT)
    await store.aclose()
    assert store.spent(day.key) == 2 * CENT


def test_redis_store_without_the_redis_package(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)
    monkeypatch.setitem(sys.modules, "redis.asyncio", None)
    with pytest.raises(MissingDependencyError) as info:
        RedisStore("redis://127.0.0.1:1/0")
    assert (info.value.package, info.value.extra) == ("redis", "redis")
    assert isinstance(info.value, ImportError)
    assert "starcoder-router[redis]" in str(info.value)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "redis", "cluster"])
def test_a_killed_holder_frees_the_budget_once_the_ttl_passes(kind, shared_store) -> None:
    """An app instance reserves the whole budget and is SIGKILLed: nothing settles or releases
    its reservations, so only their TTL can give the budget back."""
    store, spec = shared_store
    budget, ttl = key(limit_usd=1.0), 2.0
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    holder = context.Process(target=hold_reservations,
                             args=(spec, budget, 10 * CENT, 10, ttl, ready))
    holder.start()
    assert ready.wait(60), "the holder never reserved"
    os.kill(holder.pid, signal.SIGKILL)
    holder.join(10)
    assert holder.exitcode == -signal.SIGKILL
    killed = time.monotonic()

    with pytest.raises(BudgetExceededError) as info:
        store.reserve([budget], 10 * CENT, 30.0)
    assert info.value.status.reserved_nano == 100 * CENT

    while True:
        try:
            store.reserve([budget], 100 * CENT, 30.0)
            break
        except BudgetExceededError:
            assert time.monotonic() - killed < ttl + 3, "the dead reservations never expired"
            time.sleep(0.05)
    assert time.monotonic() - killed <= ttl + 0.5
    [status] = store.status([budget])
    assert (status.spent_nano, status.reserved_nano) == (0, 100 * CENT)

