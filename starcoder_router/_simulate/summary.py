"""The numbers of one simulated policy, for the terminal, `--json` and the report."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from .._routing.cost import nano_to_usd
from .._text import text_table
from .records import RequestOutcome, Scenario
from .tally import Tally

__all__ = ["PolicySummary", "summarize", "summary_of", "summary_table"]


class PolicySummary(NamedTuple):
    """Totals for one policy over the whole workload."""

    name: str
    description: str
    requests: int
    served: int
    cost_usd: float
    cost_by_tenant_usd: dict[str, float]
    requests_by_deployment: dict[str, int]
    refused_by_reason: dict[str, int]
    trimmed_requests: int
    tokens_trimmed: int
    budget_exhausted_at_s: dict[str, float]
    latency_p50_s: float | None
    latency_p99_s: float | None
    quality: float | None
    quality_benchmark: str
    retried_requests: int

    @property
    def refused(self) -> int:
        return self.requests - self.served

    def as_json(self) -> dict[str, Any]:
        out = self._asdict()
        out["refused"] = self.refused
        return out


def _quantile(sorted_values: Sequence[float], q: float) -> float | None:
    if not sorted_values:
        return None
    i = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[i]


def summarize(scenario: Scenario, outcomes: Sequence[RequestOutcome],
              exhausted: dict[str, float]) -> PolicySummary:
    """Aggregate one scenario's outcomes (in workload order)."""
    tally = Tally({})
    for o in outcomes:
        tally.by_request(o)
    return summary_of(scenario, tally, exhausted)


def summary_of(scenario: Scenario, tally: Tally, exhausted: dict[str, float]) -> PolicySummary:
    """One scenario's summary from the numbers gathered while it ran."""
    latencies = sorted(tally.latencies)
    return PolicySummary(
        name=scenario.name,
        description=scenario.description,
        requests=tally.requests,
        served=tally.served,
        cost_usd=nano_to_usd(tally.cost_nano),
        cost_by_tenant_usd={t: nano_to_usd(n)
                            for t, n in sorted(tally.cost_by_tenant_nano.items())},
        requests_by_deployment=dict(sorted(tally.by_deployment.items())),
        refused_by_reason=dict(tally.refused_by_reason.most_common()),
        trimmed_requests=tally.trimmed_requests,
        tokens_trimmed=tally.tokens_trimmed,
        budget_exhausted_at_s={b: round(at, 3) for b, at in
                               sorted(exhausted.items(), key=lambda kv: kv[1])},
        latency_p50_s=_rounded(_quantile(latencies, 0.50), _LATENCY_DIGITS),
        latency_p99_s=_rounded(_quantile(latencies, 0.99), _LATENCY_DIGITS),
        quality=_rounded(tally.quality, _QUALITY_DIGITS),
        quality_benchmark=scenario.policy.ranking_benchmark,
        retried_requests=tally.retried_requests,
    )


# Money stays exact (whole nano-dollars, 9 decimals); simulated latencies and averaged benchmark
# scores carry float noise past these digits (33.16000000000497), which no reader wants to see.
_LATENCY_DIGITS = 4
_QUALITY_DIGITS = 2


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _usd(v: float) -> str:
    return f"${v:,.4f}" if v < 10 else f"${v:,.2f}"


def _secs(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}s"


def summary_table(summaries: Sequence[PolicySummary]) -> str:
    """One row per policy, for the terminal."""
    rows = [("policy", "cost", "served", "refused", "trimmed", "p50", "p99", "quality",
             "busiest deployment")]
    for s in summaries:
        top = max(s.requests_by_deployment.items(), key=lambda kv: kv[1], default=None)
        rows.append((
            s.name, _usd(s.cost_usd), f"{s.served:,}", f"{s.refused:,}",
            f"{s.trimmed_requests:,}", _secs(s.latency_p50_s), _secs(s.latency_p99_s),
            "-" if s.quality is None else f"{s.quality:.1f}",
            f"{top[0]} ({top[1]:,})" if top else "-",
        ))
    return text_table(rows)
