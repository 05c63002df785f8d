"""How big the spend ledger grows, and what retention and roll-ups buy: synthetic ledger rows
over 60 days (50 tenants, 20 deployments, 3 tag sets) written to a SQLite store and a Redis
store, with `retention_days` off and at 30 days.

    python benchmarks/bench_ledger.py                      # 200,000 rows: under a minute
    python benchmarks/bench_ledger.py --rows 10000000 --write   # the full run (minutes)

Measures the SQLite file size, Redis `used_memory`, a month's spend report from the hourly
roll-ups (`spend` reads those), and the cost of one pruning batch (5,000 rows in one
transaction). Rows are written in large transactions through the store's own statements
(SQLite) or pipelined calls of its own script (Redis), not one request at a time, so the run
takes minutes rather than hours. Redis is measured on at most `--redis-rows` rows (memory per
row is flat, so the 10M figure is scaled from it). `--write` puts the section into
BENCHMARKS.md; `run.py` keeps it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from starcoder_router._stores.base import LedgerEntry  # noqa: E402
from starcoder_router._stores.redis import RedisStore  # noqa: E402
from starcoder_router._stores.redis_plan import settle_plan  # noqa: E402
from starcoder_router._stores.report import spend_report  # noqa: E402
from starcoder_router._stores.sqlite import _ADD, _GRAIN_US, _INSERT_LEDGER, SQLiteStore  # noqa: E402

HEADING = "## Ledger size, retention and roll-ups"
DAYS = 60
NOW = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
TAGS = [(), ("ci",), ("ide", "vscode")]


def entries(count: int, seed: int = 1):
    rng = random.Random(seed)
    span = DAYS * 86400
    for i in range(count):
        when = NOW - dt.timedelta(seconds=span * (count - i) / count)
        yield LedgerEntry(
            request_id=f"{i:016x}", time=when, deployment=f"dep-{rng.randrange(20)}",
            provider="fireworks", model="starcoder2-15b", prompt_tokens=rng.randrange(2000),
            completion_tokens=rng.randrange(200), cost_nano=rng.randrange(1, 400_000),
            outcome="ok" if rng.random() > 0.02 else "error", tenant=f"tenant-{rng.randrange(50)}",
            tags=rng.choice(TAGS), provider_request_id=None)


def fill_sqlite(path: Path, count: int) -> float:
    from starcoder_router._stores.sqlite import _ledger_row

    store = SQLiteStore(path)
    started = time.perf_counter()
    batch_rows: list = []
    batch_sums: dict[str, list] = {grain: [] for grain in _GRAIN_US}
    for e in entries(count):
        row = _ledger_row(e)
        batch_rows.append(row)
        for grain, unit in _GRAIN_US.items():
            batch_sums[grain].append((row[1] // unit * unit, True, e.tenant, row[10],
                                      e.deployment, e.outcome != "ok", e.prompt_tokens,
                                      e.completion_tokens, e.cost_nano))
        if len(batch_rows) == 100_000:
            _flush(store, batch_rows, batch_sums)
    _flush(store, batch_rows, batch_sums)
    store.close()
    return time.perf_counter() - started


def _flush(store: SQLiteStore, rows: list, sums: dict[str, list]) -> None:
    with store._transaction("BEGIN IMMEDIATE") as db:
        db.executemany(_INSERT_LEDGER, rows)
        for grain, params in sums.items():
            db.executemany(_ADD[grain], params)
            params.clear()
    rows.clear()


def month_report(store) -> tuple[float, int]:
    """Median seconds for last month's report by tenant and day, read from the daily roll-ups
    (as `starcoder-router spend --period day` does)."""
    until = NOW.replace(day=1, hour=0)
    since = (until - dt.timedelta(days=1)).replace(day=1)
    times = []
    for _ in range(3):
        started = time.perf_counter()
        rows = store.rollups(since=since, until=until, grain="day")
        spend_report(rows, period="day", by="tenant")
        times.append(time.perf_counter() - started)
    return statistics.median(times), len(rows)


def sqlite_figures(workdir: Path, count: int) -> dict:
    path = workdir / "spend.db"
    fill_s = fill_sqlite(path, count)
    out: dict = {"rows": count, "fill_s": fill_s, "size_off": os.path.getsize(path)}
    store = SQLiteStore(path)
    out["report_s"], out["report_rollups"] = month_report(store)
    store.close()
    store = SQLiteStore(path, retention_days=30)
    store._closing.set()  # prune by hand, timing each batch
    assert store._pruner is not None
    store._pruner.join()
    batches, pruned = [], 0
    while True:
        started = time.perf_counter()
        n = store.prune(batch=5000)
        batches.append(time.perf_counter() - started)
        pruned += n
        if not n:
            break
    out["pruned"], out["prune_batch_ms"] = pruned, 1000 * statistics.median(batches[:-1] or [0])
    out["prune_batch_max_ms"] = 1000 * max(batches)
    out["size_pruned"] = os.path.getsize(path)
    out["report_s_pruned"], _ = month_report(store)
    with store._transaction("BEGIN") as db:
        out["hourly_rows"] = db.execute("SELECT COUNT(*) FROM ledger_hourly").fetchone()[0]
        out["daily_rows"] = db.execute("SELECT COUNT(*) FROM ledger_daily").fetchone()[0]
    store.close()
    import sqlite3

    raw = sqlite3.connect(path)
    raw.execute("VACUUM")
    raw.close()
    out["size_vacuumed"] = os.path.getsize(path)
    return out


def redis_figures(workdir: Path, count: int) -> dict:
    out: dict = {"rows": count}
    for label, retention in (("off", None), ("on", 30.0)):
        proc, port = _start_redis(workdir / label)
        try:
            store = RedisStore(f"redis://127.0.0.1:{port}/0", prefix="b:",
                               retention_days=retention)
            base = store._sync.info("memory")["used_memory"]
            script = store._scripts["settle"]
            pipe = store._sync.pipeline(transaction=False)
            started = time.perf_counter()
            for i, e in enumerate(entries(count)):
                for call in settle_plan(store._names, (), f"r{i}", e.cost_nano, e):
                    script(keys=call.keys, args=call.args, client=pipe)
                if i % 2000 == 1999:
                    pipe.execute()
            pipe.execute()
            out[f"fill_s_{label}"] = time.perf_counter() - started
            out[f"memory_{label}"] = store._sync.info("memory")["used_memory"] - base
            out[f"report_s_{label}"], _ = month_report(store)
            store.close()
        finally:
            proc.terminate()
            proc.wait()
    return out


def _start_redis(folder: Path) -> tuple[subprocess.Popen[bytes], int]:
    import socket

    import redis

    folder.mkdir(parents=True)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    binary = shutil.which("redis-server") or "redis-server"
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(folder)],
                            stdout=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    for _ in range(200):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    client.close()
    return proc, port


def _mb(n: float) -> str:
    return f"{n / 1e6:,.0f} MB" if n >= 1e7 else f"{n / 1e6:,.1f} MB"


def markdown(sq: dict, rd: dict, total: int) -> str:
    scale = total / rd["rows"]
    per_off, per_on = rd["memory_off"] / rd["rows"], rd["memory_on"] / rd["rows"]
    return "\n".join([
        HEADING, "",
        f"`python benchmarks/bench_ledger.py --rows {total}` on this machine (2 shared cores), "
        f"{datetime_label()}. {total:,} synthetic ledger rows spread evenly over {DAYS} days "
        "(50 tenants, 20 deployments, 3 tag sets); retention at 30 days keeps half of them. "
        "A month's report is last calendar month by tenant and day, read from the daily "
        "roll-ups as `starcoder-router spend` does (median of 3).", "",
        "| | retention off | retention 30 days |", "|---|---:|---:|",
        f"| SQLite file | {_mb(sq['size_off'])} | {_mb(sq['size_pruned'])} "
        f"({_mb(sq['size_vacuumed'])} after `VACUUM`) |",
        f"| SQLite month report | {sq['report_s'] * 1000:.0f} ms | "
        f"{sq['report_s_pruned'] * 1000:.0f} ms |",
        f"| Redis `used_memory`, {rd['rows']:,} rows | {_mb(rd['memory_off'])} | "
        f"{_mb(rd['memory_on'])} |",
        f"| Redis, scaled to {total:,} rows | {_mb(per_off * rd['rows'] * scale)} | "
        f"{_mb(per_on * rd['rows'] * scale)} |",
        f"| Redis month report ({rd['rows']:,} rows) | {rd['report_s_off'] * 1000:.0f} ms | "
        f"{rd['report_s_on'] * 1000:.0f} ms |", "",
        f"Pruning: {sq['pruned']:,} rows (raw rows, then hourly roll-ups) deleted in batches "
        f"of 5,000, each its own "
        f"transaction: median {sq['prune_batch_ms']:.1f} ms a batch (slowest "
        f"{sq['prune_batch_max_ms']:.1f} ms), so a request waits at most that long for the "
        f"write lock. After pruning, {sq['hourly_rows']:,} hourly roll-ups (30 days) and "
        f"{sq['daily_rows']:,} daily ones ({DAYS} days, kept) remain; the month's report "
        f"read {sq['report_rollups']:,} daily roll-ups. "
        f"Deleted pages are reused by later rows: the file stops growing at the retained size "
        f"rather than shrinking (`VACUUM` gives the space back). Filling took "
        f"{sq['fill_s']:.0f} s (SQLite, 100,000 rows a transaction).", "",
    ])


def datetime_label() -> str:
    return dt.date.today().isoformat()


def write(section: str, path: Path) -> None:
    """Replace this script's section of BENCHMARKS.md (or add it); `run.py` keeps it."""
    text = path.read_text() if path.exists() else ""
    parts = [p for p in re.split(r"(?m)^(?=## )", text) if not p.startswith(HEADING)]
    path.write_text("".join(parts).rstrip("\n") + "\n\n" + section)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=200_000)
    p.add_argument("--redis-rows", type=int, default=100_000)
    p.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sq = sqlite_figures(Path(tmp), args.rows)
        print(json.dumps(sq), file=sys.stderr)
        rd = redis_figures(Path(tmp), min(args.rows, args.redis_rows))
        print(json.dumps(rd), file=sys.stderr)
    section = markdown(sq, rd, args.rows)
    print(section)
    if args.write:
        write(section, ROOT / "BENCHMARKS.md")


if __name__ == "__main__":
    main()
