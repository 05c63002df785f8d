"""Answers served from reuse or the cache are ledger entries at no cost that count as served,
not failed, in reports and in every store's roll-ups."""

from __future__ import annotations

from pathlib import Path

from starcoder_router._stores.rollup import roll_up
from starcoder_router._stores.sqlite import SQLiteStore
from support.stores import entry


def test_reuse_and_cache_count_as_served(tmp_path: Path) -> None:
    entries = [entry(1000)._replace(outcome="ok"), entry(0)._replace(outcome="reuse"),
               entry(0)._replace(outcome="cache"), entry(500)._replace(outcome="cancelled")]
    (row,) = roll_up(entries)
    assert (row.requests, row.failed, row.cost_nano) == (4, 1, 1500)
    store = SQLiteStore(tmp_path / "spend.db")
    try:
        for e in entries:
            store.record((), e.cost_nano, e)
        assert sorted(e.outcome for e in store.ledger()) == ["cache", "cancelled", "ok",
                                                             "reuse"]
        (stored,) = store.rollups()
        assert (stored.requests, stored.failed) == (4, 1)
    finally:
        store.close()
