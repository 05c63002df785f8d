"""Soak: the async router under steady load with injected faults, for a bounded time.

64 concurrent tasks send requests (half plain, half streamed) for `--seconds` through
`AsyncRouter` to three deployments on our loopback fault server (`tests/faults/fault_server.py`,
run in a process of its own), which answers 5% of requests with a fault from its seeded
schedule: 429s, 5xx, hangs, resets, cut and malformed streams, errors inside 200 answers,
missing usage and byte-by-byte drips. Reports throughput, errors by type, p50/p99 latency,
deadline overruns, RSS growth and threads, and checks that no budget hold is left open and that
the store's spend equals its ledger.

Run: `python benchmarks/soak.py [--seconds 90] [--transport aiohttp|httpx] [--write]`;
`--write` puts the section into BENCHMARKS.md (`run.py` keeps sections it does not write).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import re
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "faults"))  # the fault server and its checks

from fault_server import SpawnedFaultServer  # noqa: E402
from fault_support import TrackingStore, budget_policy  # noqa: E402

from starcoder_router import (  # noqa: E402
    AsyncRouter,
    Catalog,
    HealthPolicy,
    RetryPolicy,
    StarcoderRouterError,
)
from starcoder_router._routing.cost import actual_cost_nano  # noqa: E402
from starcoder_router._transports.base import DEADLINE_SLACK_S  # noqa: E402

HEADING = "## Soak: 64 concurrent tasks, 5% injected faults"
CONCURRENCY = 64
FAULT_RATE = 0.05
DEADLINE_S = 5.0
ATTEMPT_S = 1.0


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class _Lean(TrackingStore):
    """A capped ledger (a full one is memory kept by design), with running totals to check
    spend against."""

    def __init__(self) -> None:
        super().__init__()
        self._ledger = collections.deque(maxlen=1000)
        self.booked = 0
        self.entries = 0

    def _append(self, entry):  # type: ignore[no-untyped-def]
        if entry is not None:
            self.booked += entry.cost_nano
            self.entries += 1
        super()._append(entry)


async def soak(seconds: float, transport: str) -> dict:
    with SpawnedFaultServer(seed=2026, rate=FAULT_RATE, no_slow=False, drip_s=0.05,
                            hang_s=30) as server:
        deps = [server.deployment("a", input_usd_per_mtok=0.1, output_usd_per_mtok=0.2),
                server.deployment("b", protocol="ollama", input_usd_per_mtok=0.2,
                                  output_usd_per_mtok=0.4),
                server.deployment("c", input_usd_per_mtok=0.4, output_usd_per_mtok=0.8)]
        store = _Lean()
        settings = {"timeout": ATTEMPT_S, "connect_timeout": ATTEMPT_S}
        router = AsyncRouter(
            catalog=Catalog.default().with_deployments(*deps),
            policy=budget_policy("openai-compatible", "ollama"), store=store,
            providers={"openai-compatible": settings, "ollama": settings}, tokenizer=False,
            env={}, transport=transport,  # type: ignore[arg-type]
            retry=RetryPolicy(max_retries=1, backoff_initial_s=0.02, backoff_max_s=0.2,
                              timeout_s=DEADLINE_S),
            health=HealthPolicy(cooldown_s=1.0))
        latencies: list[float] = []
        errors: collections.Counter[str] = collections.Counter()
        problems: list[str] = []
        stop_at = time.monotonic() + seconds
        rss0, threads0 = rss_mib(), threading.active_count()

        async def worker(w: int) -> None:
            i = 0
            while time.monotonic() < stop_at:
                i += 1
                started = time.monotonic()
                try:
                    if (w + i) % 2:
                        async with router.stream(prompt=f"def w{w}_{i}(x):", max_tokens=6) as s:
                            text = "".join([chunk.text async for chunk in s])
                        c = s.completion
                        if c is None or c.text != text:
                            problems.append("a stream's text differs from what was costed")
                    else:
                        c = await router.complete(prompt=f"def w{w}_{i}(x):", max_tokens=6)
                    assert c is not None
                    if c.cost_nano != actual_cost_nano(c.deployment, c.usage.prompt_tokens,
                                                       c.usage.completion_tokens):
                        problems.append("a cost is not usage times price")
                except StarcoderRouterError as exc:
                    errors[type(exc).__name__] += 1
                except Exception as exc:
                    errors["ESCAPED " + type(exc).__name__] += 1
                latencies.append(time.monotonic() - started)

        t0 = time.monotonic()
        await asyncio.gather(*(worker(w) for w in range(CONCURRENCY)))
        elapsed = time.monotonic() - t0
        await router.aclose()
        await asyncio.sleep(0.2)
        served = server.stats()
    lat = sorted(latencies)
    n = len(lat)
    spent = store.spent_total()
    return {
        "transport": transport, "seconds": round(elapsed, 1), "requests": n,
        "throughput_rps": round(n / elapsed, 1),
        "faults_injected": sum(v for k, v in served.items() if k != "ok"),
        "faults": {k: v for k, v in sorted(served.items()) if k != "ok"},
        "server_answers": sum(served.values()),
        "errors": dict(errors.most_common()),
        "error_rate": round(sum(errors.values()) / max(n, 1), 4),
        "p50_ms": round(statistics.median(lat) * 1000, 1) if lat else None,
        "p99_ms": round(lat[min(n - 1, int(n * 0.99))] * 1000, 1) if lat else None,
        "max_ms": round(lat[-1] * 1000, 1) if lat else None,
        "overruns": sum(1 for x in lat if x > DEADLINE_S + DEADLINE_SLACK_S),
        "rss_start_mib": round(rss0, 1), "rss_end_mib": round(rss_mib(), 1),
        "threads_start": threads0, "threads_end": threading.active_count(),
        "holds_open": len(store.open), "misused_holds": len(store.misuse),
        "spent_equals_ledger": spent == store.booked,
        "problems": problems[:5],
    }


def markdown(results: list[dict]) -> str:
    rows = ["| transport | requests | req/s | error rate | p50 ms | p99 ms | max ms | overruns "
            "| RSS MiB start → end | threads start → end | holds open | spend = ledger |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        rows.append(
            f"| {r['transport']} | {r['requests']} | {r['throughput_rps']} | "
            f"{r['error_rate']:.2%} | {r['p50_ms']} | {r['p99_ms']} | {r['max_ms']} | "
            f"{r['overruns']} | {r['rss_start_mib']} → {r['rss_end_mib']} | "
            f"{r['threads_start']} → {r['threads_end']} | {r['holds_open']} | "
            f"{'yes' if r['spent_equals_ledger'] else 'NO'} |")
    details = []
    for r in results:
        faults = ", ".join(f"{k} {v}" for k, v in r["faults"].items())
        errs = ", ".join(f"{k} {v}" for k, v in r["errors"].items()) or "none"
        details.append(f"- {r['transport']}: {r['faults_injected']} faults injected in "
                       f"{r['server_answers']} server answers ({faults}); errors raised to the "
                       f"caller: {errs}.")
    return "\n".join([
        HEADING, "",
        f"`python benchmarks/soak.py --write` ({results[0]['seconds']} s per transport): "
        "`AsyncRouter` over three deployments on the loopback fault server (its own process), "
        f"half plain and half streamed requests, deadline {DEADLINE_S:g} s, {ATTEMPT_S:g} s per "
        "attempt, one retry. An overrun is a request that ended later than its deadline plus "
        f"`DEADLINE_SLACK_S` ({DEADLINE_SLACK_S:g} s). Errors are what reached the caller after "
        "retries and fallbacks (a stream cut after its first chunk cannot fall back: "
        "`StreamInterruptedError`).", "", *rows, "", *details, ""])


def write(section: str, path: Path) -> None:
    """Replace the soak section of BENCHMARKS.md (or add it); `run.py` keeps it as it is."""
    text = path.read_text() if path.exists() else ""
    parts = re.split(r"(?m)^(?=## )", text)
    parts = [p for p in parts if not p.startswith(HEADING)]
    path.write_text("".join(parts).rstrip("\n") + "\n\n" + section)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--transport", choices=["aiohttp", "httpx", "both"], default="both")
    p.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = p.parse_args()
    kinds = ["aiohttp", "httpx"] if args.transport == "both" else [args.transport]
    results = [asyncio.run(soak(args.seconds, kind)) for kind in kinds]
    section = markdown(results)
    print(section)
    for r in results:
        print(r, file=sys.stderr)
    if args.write:
        write(section, ROOT / "BENCHMARKS.md")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
