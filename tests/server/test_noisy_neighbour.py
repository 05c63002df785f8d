"""A hostile tenant cannot freeze the gateway for another: while one tenant sends the worst
inputs we know (max-length stops on a stream, a backtracking schema pattern over a steered
answer, remote `$ref`s, deep JSON, deep schemas, max-size prompts, bad token limits; 8 in
flight), another tenant's simple requests keep a p99 latency under 2 s. Measured on the shared
2-core machine: ~10 ms alone, ~100-250 ms under this attack when the machine is quiet, up to
~1 s when other work loads it; the old code froze the loop for good on the first backtracking
pattern. Every request takes its turn on the loop, so the victim waits behind the attacker's
requests in flight, each bounded by the input caps. The scenario is
`benchmarks/bench_noisy_neighbour.py`'s, shorter."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
P99_BOUND_MS = 2000.0


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
    result = _bench().measure(seconds=3.0, attackers=8)
    attacked = result["attacked"]
    assert attacked["victim_requests"] >= 3
    assert attacked["p99_ms"] < P99_BOUND_MS, result
    assert attacked["trap_connections"] == 0
    statuses = {kind.rsplit(": ", 1)[1] for kind in attacked["attack"]}
    assert statuses <= {"200", "400", "503"}, attacked["attack"]
    # 503 only where the steered answer fails the schema (no deployment could serve it).
    assert all(k.startswith("ReDoS") for k in attacked["attack"] if k.endswith(": 503"))
    assert attacked["attack_requests"] >= 30
