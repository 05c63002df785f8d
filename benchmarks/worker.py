"""Runs one measurement of one stack in a fresh process and prints one JSON line.

Usage (the runner does this): `python benchmarks/worker.py '{"stack": "httpx", "mode": "complete",
"base": "http://127.0.0.1:PORT", ...}'`. Modes:

* `complete`: sync requests one after another, or async requests from `concurrency` tasks.
* `stream`: streams one after another; time to the first chunk and time per later chunk.

CPU is this process's user+system time (all threads); server CPU and new connections come from
the mock server's `/stats`, read over one connection opened before the warm-up.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
if os.environ.get("BENCH_ENV") == "project":
    sys.path.insert(0, str(HERE.parent))  # the package under test, from the work tree


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class ServerStats:
    """Reads `/stats` over one persistent connection, so reading adds no connection."""

    def __init__(self, base: str) -> None:
        u = urlsplit(base)
        self.sock = socket.create_connection((u.hostname, u.port))
        self.req = b"GET /stats HTTP/1.1\r\nHost: %s\r\n\r\n" % u.netloc.encode()

    def read(self) -> dict:
        self.sock.sendall(self.req)
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += self.sock.recv(65536)
        head, _, body = buf.partition(b"\r\n\r\n")
        length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length"))
        while len(body) < length:
            body += self.sock.recv(65536)
        return json.loads(body)


def _delta(before: dict, after: dict, requests: int) -> dict:
    # The stats request itself is served between the two snapshots once.
    served = after["requests"] - before["requests"] - 1
    return {
        "server_cpu_us": (after["cpu_s"] - before["cpu_s"]) * 1e6 / max(served, 1),
        "new_conns_per_req": (after["accepted"] - before["accepted"]) / max(requests, 1),
        "served": served,
    }


def _cpu_precise() -> float:
    return time.process_time()


def _build(spec: dict):  # type: ignore[no-untyped-def]
    import stacks

    stack = stacks.BY_NAME[spec["stack"]]
    ctx = stacks.Ctx(base=spec["base"], concurrency=spec.get("concurrency", stacks.CONCURRENCY))
    if stack.requires:
        import starcoder_router

        missing = [n for n in stack.requires if not hasattr(starcoder_router, n)]
        if missing:
            raise Unavailable("starcoder_router does not export " + ", ".join(missing) + " yet")
    client = getattr(stacks, stack.factory)(ctx)
    _CLIENT.append(client)
    return client


_CLIENT: list = []  # the stack under test, for reporting what it ran on


class Unavailable(Exception):
    """The stack cannot run here (yet); reported, not fatal."""


def run_sync(spec: dict) -> dict:
    rss0 = rss_mib()
    client = _build(spec)
    rss_built = rss_mib()
    stats = ServerStats(spec["base"])
    if spec["mode"] == "stream":
        return _sync_stream(spec, client, stats)
    for _ in range(spec["warmup"]):
        client.complete()
    n, budget = spec["n"], spec["budget_s"]
    lat = []
    before = stats.read()
    c0, p0 = _cpu_precise(), time.perf_counter()
    deadline = p0 + budget
    i = 0
    while i < n:
        t = time.perf_counter()
        client.complete()
        t2 = time.perf_counter()
        lat.append(t2 - t)
        i += 1
        if t2 > deadline and i >= spec["min_n"]:
            break
    p1, c1 = time.perf_counter(), _cpu_precise()
    after = stats.read()
    client.close()
    lat.sort()
    return {
        "requests": i,
        "us_per_req": (p1 - p0) * 1e6 / i,
        "p50_us": lat[len(lat) // 2] * 1e6,
        "p99_us": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e6,
        "cpu_us_per_req": (c1 - c0) * 1e6 / i,
        "rss_start_mib": rss0,
        "rss_built_mib": rss_built,
        "rss_after_mib": rss_mib(),
        "requests_total": i + spec["warmup"],
        **_delta(before, after, i),
    }


def _stream_once(it) -> tuple[float, float, int]:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    first = last = 0.0
    count = 0
    for _ in it:
        last = time.perf_counter()
        if count == 0:
            first = last
        count += 1
    return first - t0, last - first, count


def _stream_result(samples: list[tuple[float, float, int]], chunks: int, cpu: float,
                   wall: float, delta: dict) -> dict:
    counts = {s[2] for s in samples}
    total_chunks = sum(s[2] for s in samples)
    return {
        "streams": len(samples),
        "chunks_seen": sorted(counts),
        "ttft_us": statistics.median(s[0] for s in samples) * 1e6,
        "us_per_chunk": statistics.median(s[1] / max(s[2] - 1, 1) for s in samples) * 1e6,
        "wall_us_per_chunk": wall * 1e6 / max(total_chunks, 1),
        "cpu_us_per_chunk": cpu * 1e6 / max(total_chunks, 1),
        "rss_after_mib": rss_mib(),
        **delta,
    }


def _sync_stream(spec: dict, client, stats: ServerStats) -> dict:  # type: ignore[no-untyped-def]
    chunks = spec["chunks"]
    for _ in range(spec["warmup_streams"]):
        _stream_once(client.stream(chunks))
    before = stats.read()
    c0, p0 = _cpu_precise(), time.perf_counter()
    samples = []
    deadline = p0 + spec["budget_s"]
    while len(samples) < spec["streams"]:
        samples.append(_stream_once(client.stream(chunks)))
        if time.perf_counter() > deadline and len(samples) >= spec["min_streams"]:
            break
    p1, c1 = time.perf_counter(), _cpu_precise()
    after = stats.read()
    client.close()
    return _stream_result(samples, chunks, c1 - c0, p1 - p0, _delta(before, after, len(samples)))


async def _astream_once(it) -> tuple[float, float, int]:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    first = last = 0.0
    count = 0
    async for _ in it:
        last = time.perf_counter()
        if count == 0:
            first = last
        count += 1
    return first - t0, last - first, count


async def run_async(spec: dict) -> dict:
    rss0 = rss_mib()
    client = _build(spec)
    await client.start()
    rss_built = rss_mib()
    stats = ServerStats(spec["base"])
    try:
        if spec["mode"] == "stream":
            return await _async_stream(spec, client, stats)
        return await _async_complete(spec, client, stats, rss0, rss_built)
    finally:
        await client.aclose()


async def _async_complete(spec: dict, client, stats: ServerStats, rss0: float,  # type: ignore[no-untyped-def]
                          rss_built: float) -> dict:
    conc = spec["concurrency"]

    async def batch(total: int, deadline: float | None) -> int:
        done = 0
        remaining = total

        async def worker() -> None:
            nonlocal done, remaining
            while remaining > 0:
                remaining -= 1
                await client.acomplete()
                done += 1
                if deadline is not None and done >= spec["min_n"] and \
                        time.perf_counter() > deadline:
                    remaining = 0

        await asyncio.gather(*(worker() for _ in range(conc)))
        return done

    await batch(spec["warmup"], None)
    before = stats.read()
    c0, p0 = _cpu_precise(), time.perf_counter()
    done = await batch(spec["n"], p0 + spec["budget_s"])
    p1, c1 = time.perf_counter(), _cpu_precise()
    after = stats.read()
    return {
        "requests": done,
        "rps": done / (p1 - p0),
        "us_per_req": (p1 - p0) * 1e6 / done,
        "cpu_us_per_req": (c1 - c0) * 1e6 / done,
        "rss_start_mib": rss0,
        "rss_built_mib": rss_built,
        "rss_after_mib": rss_mib(),
        "requests_total": done + spec["warmup"],
        **_delta(before, after, done),
    }


async def _async_stream(spec: dict, client, stats: ServerStats) -> dict:  # type: ignore[no-untyped-def]
    chunks = spec["chunks"]
    for _ in range(spec["warmup_streams"]):
        await _astream_once(client.astream(chunks))
    before = stats.read()
    c0, p0 = _cpu_precise(), time.perf_counter()
    samples = []
    deadline = p0 + spec["budget_s"]
    while len(samples) < spec["streams"]:
        samples.append(await _astream_once(client.astream(chunks)))
        if time.perf_counter() > deadline and len(samples) >= spec["min_streams"]:
            break
    p1, c1 = time.perf_counter(), _cpu_precise()
    after = stats.read()
    return _stream_result(samples, chunks, c1 - c0, p1 - p0, _delta(before, after, len(samples)))


def main() -> None:
    spec = json.loads(sys.argv[1])
    if spec.get("cpu") is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {spec["cpu"]})
    try:
        from stacks import BY_NAME

        if BY_NAME[spec["stack"]].kind == "async":
            out = asyncio.run(run_async(spec))
        else:
            out = run_sync(spec)
        out["ok"] = True
        if _CLIENT and getattr(_CLIENT[0], "provider_used", None):
            out["provider"] = _CLIENT[0].provider_used
    except Unavailable as exc:
        out = {"ok": False, "unavailable": True, "error": str(exc)}
    except ImportError as exc:
        out = {"ok": False, "unavailable": True, "error": f"{type(exc).__name__}: {exc}"}
    except Exception as exc:
        out = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    sys.stdout.write("\nRESULT " + json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
