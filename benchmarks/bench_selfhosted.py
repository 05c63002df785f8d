"""What pricing a machine by the hour costs the router: the throughput meter's bookkeeping per
finished attempt, and `Router.route()` with and without a local deployment that states
`usd_per_hour` (its price is worked out from the meter on every decision).

* `ThroughputMeter.observe` with its span list full (64 disjoint spans kept), for attempts that
  overlap nothing and for attempts that overlap the last few (4 requests in flight at once).
* `route(prompt="def fib(n):", max_tokens=16)` over the default catalog plus one local
  deployment, priced by the hour or not, with 1,000 attempts observed; and an observation
  followed by a route, so the price is worked out again each time.

Single calls timed one by one (`perf_counter_ns`); medians and p99. Prints one JSON object.

Run: `python benchmarks/bench_selfhosted.py [--quick]`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
KEYS = {"FIREWORKS_API_KEY": "bench", "DEEPINFRA_API_KEY": "bench"}


def timed(fn: Callable[[int], object], calls: int) -> dict[str, float]:
    samples = []
    for i in range(calls):
        t0 = time.perf_counter_ns()
        fn(i)
        samples.append(time.perf_counter_ns() - t0)
    samples.sort()
    return {"median_us": samples[len(samples) // 2] / 1000,
            "p99_us": samples[int(len(samples) * 0.99)] / 1000, "calls": calls}


def main() -> None:
    from starcoder_router import Catalog, Deployment, Router
    from starcoder_router._routing.throughput import ThroughputMeter

    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    calls = 20_000 if parser.parse_args().quick else 200_000
    out: dict[str, object] = {}

    meter = ThroughputMeter()
    for i in range(64):
        meter.observe("d", started=2.0 * i, ended=2.0 * i + 1, tokens=100)
    base = 200.0
    out["observe, disjoint"] = timed(
        lambda i: meter.observe("d", started=base + 2.0 * i, ended=base + 2.0 * i + 1,
                                tokens=100), calls)
    base = 1e7
    out["observe, 4 in flight"] = timed(
        lambda i: meter.observe("d", started=base + 0.25 * i, ended=base + 0.25 * i + 1,
                                tokens=100), calls)

    for label, hourly in (("route, local not priced", None), ("route, local priced", 0.9)):
        box = Deployment(provider="llamacpp", variant="starcoder2-3b", model="m",
                         context_window=16384, usd_per_hour=hourly)
        router = Router(catalog=Catalog.default().with_deployments(box), env=KEYS)
        for i in range(1000):
            router._core.throughput.observe(box.name, started=i, ended=i + 0.5, tokens=500)
        out[label] = timed(lambda i, r=router: r.route(prompt="def fib(n):", max_tokens=16),
                           calls // 4)
        if hourly is not None:
            # The price is worked out again after every new observation: the worst case.
            def observed_then_routed(i: int, r: Router = router, name: str = box.name) -> None:
                r._core.throughput.observe(name, started=2000.0 + i, ended=2000.5 + i,
                                           tokens=500)
                r.route(prompt="def fib(n):", max_tokens=16)
            out["observe + route, local priced"] = timed(observed_then_routed, calls // 4)
        router.close()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
