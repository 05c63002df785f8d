"""Spend reports from a store's ledger, and the `starcoder-router spend` command over them."""

from __future__ import annotations

import datetime as dt

import pytest

from starcoder_router._cli import main
from starcoder_router._errors import ConfigError
from starcoder_router._stores import open_store
from starcoder_router._stores.report import spend_report
from starcoder_router._stores.sqlite import SQLiteStore
from support.stores import T0, entry, key

ENTRIES = [
    entry(1_000_000, tenant="acme", time=T0),
    entry(2_000_000, tenant="acme", time=T0 + dt.timedelta(hours=3), deployment="dep-b"),
    entry(4_000_000, tenant="globex", time=T0 + dt.timedelta(days=1)),
    entry(0, time=T0 + dt.timedelta(days=8))._replace(outcome="error"),
]


def rows(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines()[2:]]


def test_by_period_sums_each_bucket_and_the_total() -> None:
    assert rows(spend_report(ENTRIES, period="day", by="period")) == [
        ["2026-11-26", "2", "0", "200", "40", "$0.003000"],
        ["2026-11-27", "1", "0", "100", "20", "$0.004000"],
        ["2026-12-04", "1", "1", "100", "20", "$0.000000"],
        ["total", "4", "1", "400", "80", "$0.007000"],
    ]


def test_by_tenant_and_week() -> None:
    assert rows(spend_report(ENTRIES, period="week", by="tenant")) == [
        ["2026-W48", "acme", "2", "0", "200", "40", "$0.003000"],
        ["2026-W48", "globex", "1", "0", "100", "20", "$0.004000"],
        ["2026-W49", "(none)", "1", "1", "100", "20", "$0.000000"],
        ["total", "4", "1", "400", "80", "$0.007000"],
    ]


def test_by_deployment_over_all_time() -> None:
    assert rows(spend_report(ENTRIES, period="total", by="deployment")) == [
        ["total", "dep-a", "3", "1", "300", "60", "$0.005000"],
        ["total", "dep-b", "1", "0", "100", "20", "$0.002000"],
        ["total", "4", "1", "400", "80", "$0.007000"],
    ]


def test_without_by_every_table_is_printed() -> None:
    text = spend_report(ENTRIES, period="month")
    assert [line for line in text.splitlines() if line.startswith("by ")] == [
        "by period", "by tenant", "by deployment"]


def test_no_entries_and_unknown_period() -> None:
    assert spend_report([], period="day") == "no spend recorded"
    with pytest.raises(ConfigError, match="unknown period"):
        spend_report(ENTRIES, period="fortnight")


def test_open_store_refuses_what_it_cannot_open(tmp_path) -> None:
    with pytest.raises(ConfigError, match="needs a path"):
        open_store("sqlite", path=None, url=None)
    with pytest.raises(ConfigError, match="no spend database"):
        open_store("sqlite", path=str(tmp_path / "typo.db"), must_exist=True)
    assert not (tmp_path / "typo.db").exists()
    with pytest.raises(ConfigError, match="needs a url"):
        open_store("redis", path=None, url=None)
    with pytest.raises(ConfigError, match="unknown store"):
        open_store("postgres")


def test_open_store_reads_a_redis_ledger(redis_url) -> None:
    writer = open_store("redis", path=None, url=redis_url, prefix="report-test:")
    writer.record([key()], 1_000_000, ENTRIES[0])
    writer.close()
    reader = open_store("redis", path=None, url=redis_url, prefix="report-test:")
    assert reader.ledger() == [ENTRIES[0]]
    reader.close()


def test_the_spend_command_prints_the_report(tmp_path, capsys) -> None:
    path = tmp_path / "spend.db"
    store = SQLiteStore(path)
    for line in ENTRIES:
        store.record([key()], line.cost_nano, line)
    store.close()
    assert main(["spend", "--store", "sqlite", "--path", str(path), "--by", "tenant"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:2] == ["day", "tenant"]
    assert "$0.007000" in out
