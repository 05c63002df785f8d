"""Hourly roll-ups that reconcile with the raw ledger rows, raw rows pruned after
`retention_days`, and `starcoder-router spend --export`."""

from __future__ import annotations

import csv
import datetime as dt
import json
import random
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from starcoder_router._cli import main
from starcoder_router._errors import ConfigError
from starcoder_router._stores.redis import RedisStore
from starcoder_router._stores.report import export_ledger, spend_report
from starcoder_router._stores.rollup import roll_up
from starcoder_router._stores.sqlite import SQLiteStore
from support.stores import T0, entry, key


def _random_entries(seed: int, count: int = 300) -> list[Any]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        when = T0 + dt.timedelta(seconds=rng.randint(-3 * 86400, 3 * 86400))
        e = entry(rng.randint(0, 5_000_000), time=when,
                  tenant=rng.choice([None, "acme", "globex", "", "a|b"]),
                  deployment=rng.choice(["dep-a", "dep-b"]))
        out.append(e._replace(tags=rng.choice([(), ("ci",), ("ci", "nightly")]),
                              outcome=rng.choice(["ok", "ok", "error"]),
                              prompt_tokens=rng.randint(0, 900),
                              completion_tokens=rng.randint(0, 300)))
    return out


@pytest.mark.parametrize("kind", ["memory", "sqlite", "redis", "cluster"])
def test_rollups_reconcile_with_the_raw_rows_to_the_nano_dollar(make_store) -> None:
    store = make_store()
    entries = _random_entries(7)
    day = key(limit_usd=1000.0)
    for e in entries:
        store.record([day], e.cost_nano, e)
    raw = store.ledger()
    assert store.rollups() == roll_up(raw) == roll_up(entries)
    assert sum(r.cost_nano for r in store.rollups()) == sum(e.cost_nano for e in entries)
    assert store.rollups(grain="day") == roll_up(raw, "day")
    for period in ("hour", "day", "week", "month"):
        for by in ("period", "tenant", "deployment"):
            expected = spend_report(raw, period=period, by=by)
            assert spend_report(store.rollups(), period=period, by=by) == expected
            if period != "hour":
                assert spend_report(store.rollups(grain="day"), period=period,
                                    by=by) == expected
    since, until = T0 - dt.timedelta(hours=5), T0 + dt.timedelta(hours=30)
    assert store.rollups(since=since, until=until) == roll_up(store.ledger(since=since,
                                                                           until=until))
    assert store.rollups(tenant="acme") == roll_up(store.ledger(tenant="acme"))


def test_sqlite_prunes_in_bounded_batches_and_the_rollups_stay(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "spend.db")
    old = _random_entries(3, 50)
    recent = [e._replace(time=dt.datetime.now(dt.UTC)) for e in _random_entries(4, 5)]
    for e in old + recent:
        store.record([], e.cost_nano, e)
    store.close()
    store = SQLiteStore(tmp_path / "spend.db", retention_days=1)
    store._closing.set()  # stop the background pruner: this test prunes by hand
    assert store._pruner is not None
    store._pruner.join()
    daily = store.rollups(grain="day")
    hourly_old = len(roll_up(old))
    counts = []
    while n := store.prune(batch=7):
        counts.append(n)
    assert sum(counts) == 50 + hourly_old and max(counts) == 7
    assert sorted(e.request_id for e in store.ledger()) == sorted(e.request_id for e in recent)
    assert store.rollups() == roll_up(recent)  # hourly roll-ups go with the raw rows
    assert store.rollups(grain="day") == daily  # daily ones stay
    assert sum(r.cost_nano for r in daily) == sum(e.cost_nano for e in old + recent)
    store.close()


def test_sqlite_prunes_in_the_background(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "spend.db", retention_days=0.5)
    for e in _random_entries(5, 20):
        store.record([], e.cost_nano, e)
    deadline = time.monotonic() + 10
    while store.ledger() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert store.ledger() == []
    assert sum(r.requests for r in store.rollups(grain="day")) == 20
    store.close()


def test_an_old_database_gets_its_rollups_from_its_raw_rows(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "spend.db")
    entries = _random_entries(6, 80)
    for e in entries:
        store.record([], e.cost_nano, e)
    store.close()
    with sqlite3.connect(tmp_path / "spend.db") as raw:
        raw.execute("DROP TABLE ledger_hourly")
        raw.execute("DROP TABLE ledger_daily")
    raw.close()
    store = SQLiteStore(tmp_path / "spend.db")
    assert store.rollups() == roll_up(entries)
    assert store.rollups(grain="day") == roll_up(entries, "day")
    store.close()


def test_redis_raw_rows_expire_after_the_retention(redis_url: str) -> None:
    import redis

    store = RedisStore(redis_url, prefix="retain:", retention_days=2)
    now = dt.datetime.now(dt.UTC)
    store.record([], 5, entry(5, time=now))
    client = redis.Redis.from_url(redis_url)
    day = now.date().isoformat()
    day_end = dt.datetime.combine(now.date() + dt.timedelta(days=1), dt.time(), dt.UTC)
    expected = (day_end + dt.timedelta(days=2)).timestamp() - time.time()
    assert client.ttl(f"retain:{{ledger:{day}}}:rows") == pytest.approx(expected, abs=5)
    assert client.ttl(f"retain:{{ledger:{day}}}:hourly") == pytest.approx(expected, abs=5)
    assert client.ttl(f"retain:{{ledger:{day}}}:daily") == -1
    client.close()
    store.close()


def test_export_writes_jsonl_and_csv_by_extension(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    entries = _random_entries(8, 30)
    db = tmp_path / "spend.db"
    store = SQLiteStore(db)
    for e in entries:
        store.record([], e.cost_nano, e)
    store.close()
    assert main(["spend", "--store", "sqlite", "--path", str(db), "--export",
                 str(tmp_path / "out.jsonl")]) == 0
    assert "wrote 30 ledger rows" in capsys.readouterr().out
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert sum(json.loads(line)["cost_nano"] for line in lines) == sum(
        e.cost_nano for e in entries)
    assert export_ledger(entries, str(tmp_path / "out.CSV")) == 30
    with open(tmp_path / "out.CSV", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sum(int(r["cost_nano"]) for r in rows) == sum(e.cost_nano for e in entries)
    with pytest.raises(ConfigError, match=r"jsonl or \.csv"):
        export_ledger(entries, str(tmp_path / "out.txt"))
