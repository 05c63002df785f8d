"""A hostile tenant cannot freeze the gateway for another: while one tenant keeps 32 of the
worst inputs we know in flight (max-length stops on a stream, a backtracking schema pattern
over a steered answer, remote `$ref`s, deep JSON, deep schemas, max-size prompts, bad token
limits), another tenant's simple requests keep a p99 latency under 600 ms (SECURITY.md, "No
tenant can take the loop from another").

Measured on the shared 2-core machine with its load average at 5-6 from other work: 4-9 ms p50
alone, 40-60 ms p50 and 70-200 ms p99 under this attack; the code before per-tenant fairness
gave 500 ms p50 and 0.9-1.1 s p99 in the same conditions, and froze the loop for good before
the input caps. The bound leaves 3-5x over what was measured for a loaded CI machine. The
scenario is `benchmarks/bench_noisy_neighbour.py`'s, shorter."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
P99_BOUND_MS = 600.0


def _bench() -> Any:
    name = "bench_noisy_neighbour"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.mark.timeout(120)
def test_a_hostile_tenant_does_not_freeze_another() -> None:
    result = _bench().measure(seconds=2.0, attackers=32, rounds=1)
    attacked = result["attacked"]
    assert attacked["victim_requests"] >= 5
    shown = {k: v for k, v in attacked.items() if k != "latencies"}
    assert attacked["p99_ms"] < P99_BOUND_MS, shown
    assert attacked["trap_connections"] == 0
    statuses = {kind.rsplit(": ", 1)[1] for kind in attacked["attack"]}
    assert statuses <= {"200", "400", "429", "503"}, attacked["attack"]
    # 503 only where the steered answer fails the schema (no deployment could serve it).
    assert all(k.startswith("ReDoS") for k in attacked["attack"] if k.endswith(": 503"))
    assert attacked["attack_requests"] >= 30
