"""Workloads and configs for the simulator tests."""

from __future__ import annotations

import random
from pathlib import Path

from starcoder_router._simulate.workload import WorkloadRequest


def counts_workload(n: int, *, seed: int = 0, rate: float = 0.5,
                    tenants: tuple[str, ...] = ("ide", "bot")) -> list[WorkloadRequest]:
    """`n` requests given as token counts: FIM (some with repository files, some too long for
    an 8K window), left-to-right and structured, arriving as a Poisson process."""
    rng = random.Random(seed)
    t = 0.0
    out = []
    for _ in range(n):
        t += rng.expovariate(rate)
        kind = rng.choice(("fim", "fim", "completion", "structured"))
        common = {"timestamp": t, "kind": kind, "max_tokens": rng.choice((64, 128, 256)),
                  "tenant": rng.choice(tenants)}
        if kind == "fim":
            files = [int(rng.lognormvariate(7, 0.8)) for _ in range(rng.choice((0, 0, 3)))]
            out.append(WorkloadRequest(prefix_tokens=int(rng.lognormvariate(7, 1.1)),
                                       suffix_tokens=int(rng.lognormvariate(5, 1)),
                                       file_tokens=tuple(files), **common))
        else:
            out.append(WorkloadRequest(prompt_tokens=int(rng.lognormvariate(6.5, 0.8)),
                                       **common))
    return out


def budget_config(path: Path, *, tenant_usd: float, extra: str = "") -> Path:
    """A router config with a small per-tenant daily budget (and `extra` TOML appended)."""
    path.write_text(f"""
[policy]
objective = "cheapest"
on_budget_exhausted = "reject"

[[policy.budgets]]
limit_usd = {tenant_usd}
period = "day"
scope = "tenant"
{extra}
""", encoding="utf-8")
    return path
