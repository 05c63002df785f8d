"""What a budget costs per request: reserve + settle on each spend store.

    python benchmarks/bench_stores.py                 # starts its own redis-server
    python benchmarks/bench_stores.py --redis-url redis://127.0.0.1:6379/0 --requests 5000

Prints a markdown table of microseconds per request (reserve the worst case, then settle the
actual cost with a ledger entry) with one thread, with several threads on one store instance,
with several processes on one backend (SQLite, Redis), and with many asyncio tasks. Under
contention the figure is wall time divided by requests, i.e. the inverse of throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from starcoder_router._stores.base import BudgetKey, LedgerEntry
from starcoder_router._stores.memory import MemoryStore
from starcoder_router._stores.redis import RedisStore
from starcoder_router._stores.sqlite import SQLiteStore

WORST, ACTUAL = 2_000_000, 1_000_000  # $0.002 reserved, $0.001 settled
NOW = dt.datetime.now(dt.UTC)
KEY = BudgetKey(budget="bench/day", key=f"bench/day|{uuid.uuid4().hex[:8]}",
                limit_nano=10**15, resets_at=NOW + dt.timedelta(days=1),
                expires_at=NOW + dt.timedelta(days=3))


def ledger_entry() -> LedgerEntry:
    return LedgerEntry(request_id=uuid.uuid4().hex, time=dt.datetime.now(dt.UTC),
                       deployment="bench", provider="bench", model="starcoder2-3b",
                       prompt_tokens=500, completion_tokens=100, cost_nano=ACTUAL, outcome="ok")


def one_request(store: Any) -> None:
    store.settle(store.reserve([KEY], WORST, 60.0), ACTUAL, ledger_entry())


def single(store: Any, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        one_request(store)
    return (time.perf_counter() - start) / n


def threaded(store: Any, n: int, threads: int) -> float:
    per = n // threads
    barrier = threading.Barrier(threads + 1)

    def work() -> None:
        barrier.wait()
        for _ in range(per):
            one_request(store)

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for t in pool:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in pool:
        t.join()
    return (time.perf_counter() - start) / (per * threads)


def open_spec(spec: tuple[str, str, str]) -> Any:
    kind, target, prefix = spec
    return SQLiteStore(target) if kind == "sqlite" else RedisStore(target, prefix=prefix)


def process_worker(spec: tuple[str, str, str], n: int, barrier: Any, out: Any) -> None:
    store = open_spec(spec)
    one_request(store)  # connect and load scripts before the clock starts
    barrier.wait()
    start = time.time()
    for _ in range(n):
        one_request(store)
    out.put((start, time.time()))
    store.close()


def multiprocess(spec: tuple[str, str, str], n: int, processes: int) -> float:
    context = multiprocessing.get_context("spawn")
    barrier, out = context.Barrier(processes), context.Queue()
    per = n // processes
    workers = [context.Process(target=process_worker, args=(spec, per, barrier, out))
               for _ in range(processes)]
    for w in workers:
        w.start()
    spans = [out.get() for _ in workers]
    for w in workers:
        w.join()
    return (max(e for _, e in spans) - min(s for s, _ in spans)) / (per * processes)


def tasks(store: Any, n: int, concurrency: int) -> float:
    async def run() -> float:
        per = n // concurrency

        async def work() -> None:
            for _ in range(per):
                res = await store.areserve([KEY], WORST, 60.0)
                await store.asettle(res, ACTUAL, ledger_entry())

        await work_once(store)
        start = time.perf_counter()
        await asyncio.gather(*(work() for _ in range(concurrency)))
        elapsed = (time.perf_counter() - start) / (per * concurrency)
        await store.aclose()
        return elapsed

    return asyncio.run(run())


async def work_once(store: Any) -> None:
    await store.asettle(await store.areserve([KEY], WORST, 60.0), ACTUAL, ledger_entry())


def start_redis(workdir: str) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server not found: install it (apt-get install redis-server) "
                 "or pass --redis-url")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", workdir],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    import redis

    client = redis.Redis.from_url(url)
    for _ in range(200):
        try:
            client.ping()
            client.close()
            return proc, url
        except redis.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    sys.exit("redis-server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", help="use this Redis instead of starting one")
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--tasks", type=int, default=64)
    args = parser.parse_args()

    workdir = tempfile.mkdtemp(prefix="bench-stores-")
    server, url = (None, args.redis_url) if args.redis_url else start_redis(workdir)
    prefix = f"bench:{uuid.uuid4().hex[:8]}:"
    db = os.path.join(workdir, "spend.db")
    n = args.requests
    makers: dict[str, Callable[[], Any]] = {
        "MemoryStore": MemoryStore,
        "SQLiteStore": lambda: SQLiteStore(db),
        "RedisStore": lambda: RedisStore(url, prefix=prefix),
    }
    specs = {"SQLiteStore": ("sqlite", db, ""), "RedisStore": ("redis", url, prefix)}
    rows = []
    try:
        for name, make in makers.items():
            store = make()
            one_request(store)  # warm up: schema, connections, script cache
            cells = [single(store, n), threaded(store, n, args.threads)]
            cells.append(multiprocess(specs[name], n, args.processes) if name in specs else None)
            store.close()
            cells.append(tasks(make(), n, args.tasks))
            rows.append((name, cells))
    finally:
        if server is not None:
            server.terminate()
            server.wait()
        shutil.rmtree(workdir, ignore_errors=True)

    print(f"reserve + settle (with ledger entry), microseconds per request, {n} requests; "
          f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs\n")
    print(f"| store | 1 thread | {args.threads} threads | {args.processes} processes | "
          f"{args.tasks} async tasks |")
    print("|---|---:|---:|---:|---:|")
    for name, cells in rows:
        shown = [f"{c * 1e6:.0f}" if c is not None else "n/a" for c in cells]
        print(f"| {name} | " + " | ".join(shown) + " |")


if __name__ == "__main__":
    main()
