"""The gateway's throughput with each spend store, in the same run: memory, the default SQLite
file, and Redis (one redis-server), with a tenant that has rate limits and budgets that apply to
every request, so each request reserves, settles and counts against its limits.

    python benchmarks/bench_store_gateway.py [--seconds 5] [--concurrency 32] [--rounds 3]

Each round starts one `starcoder-router serve` (one worker) per store, in a rotating order, and
loads it with `--concurrency` clients sending `/v1/completions` back to back to the loopback
mock (`mock_server.py`). Redis round trips per request are the scripts the server ran
(`INFO commandstats`: `evalsha` + `eval`) over the requests served: the gateway sends nothing
but scripts on its hot path, each one round trip (tests/server/test_redis_round_trips.py
checks that at the socket). The machine may be shared: compare the per-round ratios, which
come from loads run back to back.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from bench_gateway import free_port, load, start_mock, stop, wait_http  # noqa: E402
from bench_stores import start_redis  # noqa: E402

KEY = "sk-bench-store-gateway"
STORES = ("memory", "sqlite", "redis")


def config(mock: str, path: Path, store: str, redis_url: str) -> None:
    import hashlib

    digest = hashlib.sha256(KEY.encode()).hexdigest()
    section = {"memory": '[store]\nkind = "memory"\n',
               "sqlite": "",  # the default: spend.db in the state directory
               "redis": f'[store]\nkind = "redis"\nurl = "{redis_url}"\n'}[store]
    path.write_text(
        '[policy]\nallow_providers = ["openai-compatible"]\n'
        "[[policy.budgets]]\nlimit_usd = 1000000\nperiod = \"day\"\n"
        "[[policy.budgets]]\nlimit_usd = 1000000\nperiod = \"day\"\nscope = \"tenant\"\n"
        + section +
        "[[deployments]]\n"
        'name = "mock/starcoder2-3b"\nprovider = "openai-compatible"\n'
        f'variant = "starcoder2-3b"\nmodel = "bench-model"\nbase_url = "{mock}/v1"\n'
        "context_window = 16384\ninput_usd_per_mtok = 0.1\noutput_usd_per_mtok = 0.1\n"
        "[server]\nmax_tokens = 4096\nmax_connections_per_client = 1024\naccess_log = false\n"
        "[[server.tenants]]\nname = \"bench\"\n"
        f'key_sha256 = "{digest}"\nrequests_per_minute = 100000000\n'
        "tokens_per_minute = 1000000000\n")


def redis_counters(redis_url: str) -> tuple[int, float]:
    """Scripts the server has run, and its CPU seconds."""
    import redis

    with redis.Redis.from_url(redis_url) as client:
        stats: dict[str, Any] = client.info("commandstats")
        cpu: dict[str, Any] = client.info("cpu")
    return (sum(int(stats.get(k, {"calls": 0})["calls"])
                for k in ("cmdstat_evalsha", "cmdstat_eval")),
            float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]))


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_one(store: str, mock: str, redis_url: str, tmp: Path,
            args: argparse.Namespace) -> dict[str, Any]:
    cfg = tmp / f"{store}.toml"
    config(mock, cfg, store, redis_url)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    log = (tmp / f"{store}.log").open("wb")
    gw = subprocess.Popen([sys.executable, "-m", "starcoder_router._cli", "serve", "--config",
                           str(cfg), "--port", str(port), "--state-dir",
                           str(tmp / f"state-{store}")], env=env, stdout=log,
                          stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/v1/completions"
    headers = {"Authorization": f"Bearer {KEY}"}
    try:
        try:
            wait_http(f"http://127.0.0.1:{port}/health", timeout=120)
        except RuntimeError:
            sys.exit(f"the {store} gateway did not start:\n"
                     f"{(tmp / f'{store}.log').read_text()[-2000:]}")
        asyncio.run(load(url, "starcoder2", seconds=1.0, concurrency=args.concurrency,
                         stream=False, headers=headers))  # warm-up
        scripts, redis_cpu = redis_counters(redis_url)
        gateway_cpu = cpu_s(gw.pid)
        started = time.perf_counter()
        res = asyncio.run(load(url, "starcoder2", seconds=args.seconds,
                               concurrency=args.concurrency, stream=False, headers=headers))
        served = res["rps"] * (time.perf_counter() - started)  # requests answered 200
        # CPU per request: what throughput would be on a core of its own, whatever else runs.
        res["gateway_cpu_us"] = 1e6 * (cpu_s(gw.pid) - gateway_cpu) / served
        after, redis_cpu_after = redis_counters(redis_url)
        res["round_trips"] = (after - scripts) / served if store == "redis" else 0.0
        res["redis_cpu_us"] = (1e6 * (redis_cpu_after - redis_cpu) / served
                               if store == "redis" else 0.0)
    finally:
        stop(gw)
        log.close()
    res["store"] = store
    print(json.dumps(res), flush=True)
    return res


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-store-gateway-"))
    mock, mock_url = start_mock()
    redis_proc, redis_url = start_redis(str(tmp))
    rounds: list[dict[str, dict[str, Any]]] = []
    try:
        for r in range(args.rounds):
            order = STORES[r % 3:] + STORES[:r % 3]
            rounds.append({s: run_one(s, mock_url, redis_url, tmp, args) for s in order})
    finally:
        redis_proc.terminate()
        redis_proc.wait(5)
        mock.terminate()
        mock.wait(5)
    print("\n| round | memory req/s | SQLite req/s | Redis req/s | Redis / memory | "
          "SQLite / memory | Redis round trips per request | gateway CPU us per request: "
          "memory / SQLite / Redis (+ redis-server) |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for i, row in enumerate(rounds, 1):
        m, s, r = row["memory"], row["sqlite"], row["redis"]
        print(f"| {i} | {m['rps']:,.0f} | {s['rps']:,.0f} | {r['rps']:,.0f} | "
              f"{r['rps'] / m['rps']:.2f} | {s['rps'] / m['rps']:.2f} | {r['round_trips']:.2f} | "
              f"{m['gateway_cpu_us']:,.0f} / {s['gateway_cpu_us']:,.0f} / "
              f"{r['gateway_cpu_us']:,.0f} (+ {r['redis_cpu_us']:,.0f}) |")
    ratios = [row["redis"]["rps"] / row["memory"]["rps"] for row in rounds]
    cpu = [row["memory"]["gateway_cpu_us"] / row["redis"]["gateway_cpu_us"] for row in rounds]
    print(f"\nRedis / memory throughput, median of {len(ratios)} rounds: "
          f"{statistics.median(ratios):.2f}; memory / Redis gateway CPU per request: "
          f"{statistics.median(cpu):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
