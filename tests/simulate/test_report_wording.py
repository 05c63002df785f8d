"""The report's words: a headline comparison, readable budget names, stable colours."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from starcoder_router._cli import main
from starcoder_router._simulate.summary import PolicySummary
from starcoder_router._simulate.wording import (
    budget_label,
    deployment_colour,
    headline,
    refusal_in_words,
)
from support.simulation import budget_config, counts_workload


def _summary(name: str, cost: float, served: int, quality: float | None = 35.0) -> PolicySummary:
    return PolicySummary(
        name=name, description="", requests=10_000, served=served, cost_usd=cost,
        cost_by_tenant_usd={}, requests_by_deployment={}, refused_by_reason={},
        trimmed_requests=0, tokens_trimmed=0, budget_exhausted_at_s={}, latency_p50_s=None,
        latency_p99_s=None, quality=quality, quality_benchmark="humaneval", retried_requests=0)


def test_the_headline_compares_the_configured_policy_with_the_cheapest_alternative() -> None:
    text = headline([_summary("configured", 33.12, 10_000, 35.4),
                     _summary("largest", 60.0, 10_000, 46.3),
                     _summary("7b", 12.5, 10_000, 31.7),
                     _summary("cheapest-summed", 5.0, 9_000)])
    assert text == ("The configured policy serves 10,000 of 10,000 requests for $33.12; 7b "
                    "would serve as many for $12.50 (62% less), at a lower expected quality "
                    "(31.7 against 35.4 humaneval).")


def test_the_headline_when_nothing_is_cheaper() -> None:
    assert headline([_summary("configured", 1.0, 10)]).endswith(
        "; no other policy serves as many.")
    assert "no other policy that serves as many costs less" in headline(
        [_summary("configured", 1.0, 10), _summary("largest", 2.0, 10)])
    assert headline([]) == "No policy was simulated."


def test_budget_keys_read_as_words() -> None:
    assert budget_label("tenant:ide/day|2030-01-07") == "ide's daily budget (2030-01-07)"
    assert budget_label("global/month|2030-01") == "monthly budget (2030-01)"
    assert budget_label("global/total|total") == "total budget"
    assert budget_label("odd") == "odd"


@given(st.lists(st.text(min_size=1, max_size=30), min_size=1, max_size=12, unique=True))
def test_a_deployment_keeps_its_colour_whatever_else_is_shown(names: list[str]) -> None:
    alone = {n: deployment_colour(n) for n in names}
    assert {n: deployment_colour(n) for n in reversed(names)} == alone
    assert all(c.startswith("#") and len(c) == 7 for c in alone.values())


def test_refusals_name_budgets_in_words() -> None:
    assert refusal_in_words("budget tenant:ide/day exhausted") == (
        "ide's daily budget exhausted")
    assert refusal_in_words("no route: lacks structured_output") == (
        "no route: lacks structured_output")


def test_the_terminal_summary_speaks_as_the_report_does(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Budgets in words and counts with thousands separators, as in the HTML report."""
    workload = tmp_path / "workload.jsonl"
    workload.write_text("".join(r.model_dump_json(exclude_none=True) + "\n"
                                for r in counts_workload(1500, seed=3, rate=5)),
                        encoding="utf-8")
    config = budget_config(tmp_path / "router.toml", tenant_usd=0.02)
    assert main(["simulate", str(workload), "--config", str(config),
                 "--policy", "configured", "--policy", "largest"]) == 0
    out = capsys.readouterr().out
    assert "1,500 requests from" in out
    assert "tenant:" not in out and "|20" not in out
    assert "ide's daily budget exhausted" in out
    assert "ide's daily budget (2030-01-07) ran out after" in out
    assert not re.search(r"(?<![\d.,])\d{4,}(?![\d.,])", out.replace("2030-01-07", "")), out
