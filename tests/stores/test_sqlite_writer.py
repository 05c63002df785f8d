"""`SQLiteStore`'s async methods run in its writer thread, many requests to a commit, and a ledger
entry nobody waits for is still written: before a sync read, at close, after a locked file."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from starcoder_router._errors import BudgetExceededError
from starcoder_router._routing.cost import usd_to_nano
from starcoder_router._stores.sqlite import SQLiteStore
from support.stores import entry, key

CENT = usd_to_nano(0.01)


def trace(store: SQLiteStore) -> list[tuple[int, str]]:
    """(thread id, statement) for every statement the store's connection runs from now on."""
    seen: list[tuple[int, str]] = []
    store._db.set_trace_callback(lambda sql: seen.append((threading.get_ident(), sql)))
    return seen


async def test_async_methods_run_off_the_event_loop(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "spend.db")
    seen = trace(store)
    day = key(limit_usd=1.0)
    res = await store.areserve([day], 10 * CENT, 60.0)
    await store.asettle(res, 4 * CENT, entry(4 * CENT))
    await store.arecord((), 0, entry(0))
    [status] = await store.astatus([day])
    await store.aclose()
    assert status.spent_nano == 4 * CENT
    assert seen, "no statement ran"
    loop_thread = threading.get_ident()
    assert not [sql for thread, sql in seen if thread == loop_thread]


async def test_concurrent_bookings_share_commits(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "spend.db")
    day = key(limit_usd=100.0)
    held = [await store.areserve([day], CENT, 60.0) for _ in range(50)]
    seen = trace(store)
    await asyncio.gather(*(store.asettle(res, CENT, entry(CENT)) for res in held))
    commits = sum(1 for _, sql in seen if sql == "COMMIT")
    assert store.spent(day.key) == 50 * CENT
    assert len(store.ledger()) == 50
    await store.aclose()
    assert 1 <= commits < 25


async def test_a_ledger_entry_nobody_waits_for_is_read_back_at_once(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "spend.db")
    one = entry(3 * CENT)
    await store.arecord((), 3 * CENT, one)  # returns before it is written
    assert [e.request_id for e in store.ledger()] == [one.request_id]  # sync reads write first
    assert [e.request_id for e in await store.aledger()] == [one.request_id]
    await store.aclose()


def test_close_writes_what_is_queued(tmp_path: Path) -> None:
    path = tmp_path / "spend.db"
    store = SQLiteStore(path)
    entries = [entry(CENT) for _ in range(20)]

    async def book() -> None:
        for one in entries:
            await store.arecord((), CENT, one)

    asyncio.run(book())
    store.close()
    again = SQLiteStore(path)
    assert sorted(e.request_id for e in again.ledger()) == sorted(e.request_id for e in entries)
    again.close()


async def test_a_locked_file_delays_queued_entries_but_loses_none(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "spend.db"
    store = SQLiteStore(path, busy_timeout_s=0.05)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    one = entry(CENT)
    with caplog.at_level(logging.WARNING, logger="starcoder_router.store"):
        await store.arecord((), CENT, one)  # the caller is not held up
        deadline = time.monotonic() + 5
        while "trying again" not in caplog.text and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
    assert "trying again" in caplog.text
    other.execute("ROLLBACK")
    other.close()
    deadline = time.monotonic() + 5
    while store._writer is not None and store._writer.pending and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await store.aclose()
    again = SQLiteStore(path)
    assert [e.request_id for e in again.ledger()] == [one.request_id]
    again.close()


async def test_a_waiting_caller_gets_the_locked_file_error(tmp_path: Path) -> None:
    path = tmp_path / "spend.db"
    store = SQLiteStore(path, busy_timeout_s=0.05)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            await store.areserve([key()], CENT, 60.0)
    finally:
        other.execute("ROLLBACK")
        other.close()
        await store.aclose()


async def test_a_refusal_in_a_shared_commit_leaves_the_others_written(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "spend.db")
    day = key(limit_usd=1.0)
    await store.arecord([day], 95 * CENT)
    results = await asyncio.gather(store.areserve([day], 10 * CENT, 60.0),
                                   store.arecord([day], CENT, entry(CENT)),
                                   return_exceptions=True)
    assert isinstance(results[0], BudgetExceededError)
    assert store.spent(day.key) == 96 * CENT
    await store.aclose()


async def test_a_cancelled_caller_still_books(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "spend.db")
    day = key(limit_usd=1.0)
    res = await store.areserve([day], 10 * CENT, 60.0)
    task = asyncio.ensure_future(store.asettle(res, 2 * CENT, entry(2 * CENT)))
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    [status] = store.status([day])  # sync: what was queued is written first
    assert (status.spent_nano, status.reserved_nano) == (2 * CENT, 0)
    await store.aclose()


def test_entries_queued_by_a_process_that_never_closes_its_store_are_written_at_exit(
        tmp_path: Path) -> None:
    """A script that books and ends without closing its store (as `asyncio.run(main())` often
    does) keeps every entry: the queue is written as the interpreter exits."""
    path = tmp_path / "spend.db"
    script = (
        "import asyncio, sys\n"
        "from starcoder_router._stores.sqlite import SQLiteStore\n"
        "from support.stores import entry\n"
        "store = SQLiteStore(sys.argv[1])\n"
        "async def main():\n"
        "    for _ in range(20):\n"
        "        await store.arecord((), 1000, entry(1000))\n"
        "asyncio.run(main())\n"
    )
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{root / 'tests'}"}
    subprocess.run([sys.executable, "-c", script, str(path)], check=True, env=env, timeout=60)
    again = SQLiteStore(path)
    assert len(again.ledger()) == 20
    again.close()
