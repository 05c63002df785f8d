"""The shipped workload is valid, and the README's table is what simulating it gives."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from starcoder_router import read_workload, simulate

ROOT = Path(__file__).resolve().parents[2]
ROW = re.compile(r"^\| `([a-z0-9-]+)`: [^|]+\| \$([\d.]+) \| ([\d,]+) \| ([\d,]+) \| "
                 r"([\d.]+) / ([\d.]+) s \| ([\d.]+) \|$", re.MULTILINE)


@pytest.mark.slow
def test_the_readme_table_is_what_the_shipped_workload_gives() -> None:
    workload = read_workload(ROOT / "examples" / "workload.jsonl")
    assert workload.errors == ()
    assert len(workload.requests) == 10_000
    assert all(r.input_tokens is not None for r in workload.requests)  # counts, never code
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## What will it cost?"):]
    rows = {m[0]: m[1:] for m in ROW.findall(section)}
    result = simulate(workload.requests)
    assert set(rows) == {s.name for s in result.summaries}
    for s in result.summaries:
        cost, served, trimmed, p50, p99, quality = rows[s.name]
        assert (float(cost), int(served.replace(",", "")), int(trimmed.replace(",", ""))) == \
            (round(s.cost_usd, 2), s.served, s.trimmed_requests), s.name
        assert (p50, p99, quality) == (f"{s.latency_p50_s:.2f}", f"{s.latency_p99_s:.2f}",
                                       f"{s.quality:.1f}"), s.name


@pytest.mark.slow
def test_the_readme_budget_claim_holds() -> None:
    workload = read_workload(ROOT / "examples" / "workload.jsonl")
    result = simulate(workload.requests, config=ROOT / "examples" / "router.toml",
                      policies=["largest"])
    [largest] = result.summaries
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    hours = largest.budget_exhausted_at_s["tenant:ide/day|2030-01-07"] / 3600
    assert f"`ide` tenant's day after {hours:.1f} hours" in readme
    assert f"the next {largest.refused:,} of its requests" in readme
    assert largest.refused_by_reason == {"budget tenant:ide/day exhausted": largest.refused}
