"""The simulator runs the router's own routing, budgets, retries and circuit breakers: the same
choices as `Router.route`, budgets that hold, outages that open circuits, exact costs."""

from __future__ import annotations

from pathlib import Path

import pytest

from starcoder_router import ConfigError, EstimatingCounter, Router
from starcoder_router._routing.catalog import Catalog
from starcoder_router._routing.cost import actual_cost_nano, nano_to_usd
from starcoder_router._simulate.model import SimulationSettings, load_settings
from starcoder_router._simulate.runner import simulate
from starcoder_router._simulate.synthetic import SyntheticCounter
from starcoder_router._simulate.workload import WorkloadRequest
from support.simulation import budget_config, counts_workload

KEYS = {"FIREWORKS_API_KEY": "fw-test", "DEEPINFRA_API_KEY": "di-test"}
NO_FAILURES = SimulationSettings(deployments={
    d.name: {"ttft_s": 0.2, "prefill_tokens_per_s": 10_000, "tokens_per_s": 100}
    for d in Catalog.default().deployments})


def test_each_request_goes_where_the_router_would_send_it() -> None:
    requests = counts_workload(300, seed=5)
    result = simulate(requests, policies=["configured"], settings=NO_FAILURES)
    outcomes = result.runs["configured"].outcomes
    trimmed = 0
    with Router(tokenizer=SyntheticCounter(EstimatingCounter()), env=KEYS) as router:
        for wr, out in zip(requests, outcomes, strict=True):
            decision = router.route(wr.to_request())
            assert out.deployment == decision.chosen.name
            cand = decision.chosen_candidate
            cut = cand.trimmed.tokens_before - cand.trimmed.tokens_after if cand.trimmed else 0
            assert out.trimmed_tokens == cut
            trimmed += bool(cut)
            assert out.attempts == 1
    assert trimmed > 0  # the workload does exercise trimming


def test_costs_are_the_router_s_exact_costs() -> None:
    wr = WorkloadRequest(timestamp=0, kind="completion", prompt_tokens=1000, max_tokens=256,
                         output_tokens=100)
    result = simulate([wr], policies=["configured", "largest"], settings=NO_FAILURES)
    catalog = Catalog.default()
    cheap, big = (result.runs[p].outcomes[0] for p in ("configured", "largest"))
    assert cheap.deployment == "fireworks/starcoder2-3b"
    assert cheap.cost_nano == actual_cost_nano(catalog.deployment(cheap.deployment), 1000, 100)
    assert cheap.cost_nano == 110_000  # $0.10 per million in and out
    assert big.deployment == "deepinfra/starcoder2-15b"
    assert big.cost_nano == 1000 * 200 + 100 * 600
    assert result.summaries[1].cost_usd == nano_to_usd(big.cost_nano)


def test_a_tenant_budget_holds_and_its_exhaustion_is_reported(tmp_path: Path) -> None:
    config = budget_config(tmp_path / "r.toml", tenant_usd=0.01)
    result = simulate(counts_workload(600, seed=2), config=config, policies=["largest"])
    summary = result.summaries[0]
    assert set(summary.cost_by_tenant_usd) == {"ide", "bot"}
    for tenant, spent in summary.cost_by_tenant_usd.items():
        assert 0.009 < spent <= 0.01, tenant  # reserved worst cases never let it overspend
    assert set(summary.budget_exhausted_at_s) == {"tenant:ide/day|2030-01-07",
                                                  "tenant:bot/day|2030-01-07"}
    outcomes = result.runs["largest"].outcomes
    refused = [o for o in outcomes if o.refused and o.refused.startswith("budget tenant:")]
    assert refused and summary.refused_by_reason[refused[0].refused] > 0  # type: ignore[index]
    first = min(summary.budget_exhausted_at_s.values())
    assert all(o.arrival >= first - 60 for o in refused)
    assert sum(o.cost_nano for o in outcomes if o.refused) == 0


def test_downgrade_moves_to_cheaper_deployments_when_the_budget_runs_low(
        tmp_path: Path) -> None:
    config = budget_config(tmp_path / "r.toml", tenant_usd=0.01).read_text()
    path = tmp_path / "down.toml"
    path.write_text(config.replace('"reject"', '"downgrade"').replace(
        'objective = "cheapest"', 'objective = "quality"'), encoding="utf-8")
    result = simulate(counts_workload(600, seed=2), config=path, policies=["configured"])
    outcomes = result.runs["configured"].outcomes
    first = min(result.summaries[0].budget_exhausted_at_s.values())
    early = [o.deployment for o in outcomes if o.deployment and o.finished < first]
    late = [o.deployment for o in outcomes if o.deployment and o.arrival > first]
    assert len(early) > 10 and set(early) == {"deepinfra/starcoder2-15b"}
    assert late.count("fireworks/starcoder2-3b") >= 5  # until even its worst case is too much


def test_an_outage_opens_the_circuit_and_requests_fall_back(tmp_path: Path) -> None:
    path = tmp_path / "r.toml"
    path.write_text("""
[health]
failure_threshold = 3
cooldown_s = 60

[simulate.deployments."fireworks/starcoder2-3b"]
ttft_s = 0.2
prefill_tokens_per_s = 20000
tokens_per_s = 150
outages = [[0, 400]]
""", encoding="utf-8")
    requests = counts_workload(400, seed=4, rate=0.5)
    result = simulate(requests, config=path, policies=["configured"])
    outcomes = result.runs["configured"].outcomes
    during = [o for o in outcomes if o.arrival < 400]
    after = [o for o in outcomes if o.arrival > 500]
    assert all(o.deployment != "fireworks/starcoder2-3b" for o in during if o.deployment)
    # Only the first failures (and a probe per cooldown) are tried on the failing deployment.
    tried_first = sum(1 for o in during if o.attempts > 1)
    assert 3 <= tried_first < len(during) / 4
    assert sum(1 for o in after if o.deployment == "fireworks/starcoder2-3b") > len(after) / 2


def test_failures_are_retried_and_a_run_is_reproducible() -> None:
    flaky = SimulationSettings(seed=1, deployments={
        name: b.model_copy(update={"failure_rate": 0.2})
        for name, b in NO_FAILURES.deployments.items()})
    requests = counts_workload(300, seed=6)
    one = simulate(requests, policies=["configured"], settings=flaky)
    two = simulate(requests, policies=["configured"], settings=flaky)
    assert one.summaries == two.summaries
    assert one.summaries[0].retried_requests > 20
    other = simulate(requests, policies=["configured"],
                     settings=flaky.model_copy(update={"seed": 2}))
    assert other.summaries[0].latency_p50_s != one.summaries[0].latency_p50_s


def test_too_slow_a_deployment_times_out(tmp_path: Path) -> None:
    path = tmp_path / "r.toml"
    path.write_text("""
[retry]
timeout_s = 5

[simulate.deployments."fireworks/starcoder2-7b"]
ttft_s = 10
prefill_tokens_per_s = 1000
tokens_per_s = 10
""", encoding="utf-8")
    result = simulate(counts_workload(20, seed=1), config=path, policies=["7b"])
    reasons = result.summaries[0].refused_by_reason
    assert reasons.get("every deployment failed (timed out)", 0) >= 5
    # Timeouts open the circuit: later requests do not wait for a deployment known to hang.
    assert reasons.get("every deployment's circuit open", 0) >= 3
    assert reasons["no route: lacks structured_output"] + reasons[
        "every deployment failed (timed out)"] + reasons["every deployment's circuit open"] == 20
    timed_out = [o for o in result.runs["7b"].outcomes if o.refused and "timed" in o.refused]
    assert all(4.9 < o.latency < 6 for o in timed_out)


def test_latency_follows_the_configured_model() -> None:
    fast = SimulationSettings(deployments={
        d.name: {"ttft_s": 1.0, "prefill_tokens_per_s": 1e9, "tokens_per_s": 1e9}
        for d in Catalog.default().deployments})
    result = simulate(counts_workload(400, seed=8), policies=["configured"], settings=fast)
    s = result.summaries[0]
    assert s.latency_p50_s is not None and 0.92 < s.latency_p50_s < 1.08
    assert s.latency_p99_s is not None and 1.3 < s.latency_p99_s < 2.5


def test_the_baselines_do_what_they_say() -> None:
    result = simulate(counts_workload(400, seed=9), settings=NO_FAILURES)
    by = {s.name: s for s in result.summaries}
    assert set(by["largest"].requests_by_deployment) == {"deepinfra/starcoder2-15b"}
    assert set(by["7b"].requests_by_deployment) == {"fireworks/starcoder2-7b"}
    assert by["7b"].refused_by_reason.get("no route: lacks structured_output", 0) > 0
    assert by["no-trim"].trimmed_requests == 0 and by["no-trim"].tokens_trimmed == 0
    assert by["no-trim"].refused_by_reason.get("no route: does not fit the window", 0) > 0
    assert by["configured"].trimmed_requests > 0
    assert by["configured"].cost_usd < by["7b"].cost_usd < by["largest"].cost_usd
    assert by["largest"].quality == pytest.approx(46.3)
    for s in result.summaries:
        assert s.served + s.refused == 400
        assert sum(s.refused_by_reason.values()) == s.refused
        assert sum(s.requests_by_deployment.values()) == s.served


def test_the_simulate_section_of_a_config(tmp_path: Path) -> None:
    path = tmp_path / "r.toml"
    path.write_text('[simulate]\nseed = 3\n[simulate.deployments."x/y"]\nttft_s = 1\n'
                    'prefill_tokens_per_s = 5\ntokens_per_s = -1\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"\[simulate\] deployments\.x/y\.tokens_per_s"):
        load_settings(path)
    path.write_text("[simulate]\nseed = 3\n[policy]\nobjective = \"quality\"\n",
                    encoding="utf-8")
    assert load_settings(path).seed == 3
    with Router.from_config(path, store=None) as router:
        assert router.policy.objective == "quality"


def test_summed_price_overpays_for_prompt_heavy_requests(tmp_path: Path) -> None:
    """A deployment with cheap input and dear output: summed price ranks it last, yet for code
    completion (long prompts, short answers) it is the cheapest; the router's expected cost
    sees that, the summed-price baseline does not."""
    path = tmp_path / "r.toml"
    path.write_text("""
[policy]
expected_output_tokens = 32

[[deployments]]
name = "cheap-input/starcoder2-7b"
provider = "vllm"
variant = "starcoder2-7b"
model = "bigcode/starcoder2-7b"
pricing = "serverless"
context_window = 16384
input_usd_per_mtok = 0.02
output_usd_per_mtok = 0.90
""", encoding="utf-8")
    requests = [r for r in counts_workload(300, seed=10) if r.kind == "fim"]
    requests = [r.model_copy(update={"output_tokens": 24}) for r in requests]
    result = simulate(requests, config=path, policies=["configured", "cheapest-summed"],
                      settings=NO_FAILURES)
    configured, summed = result.summaries
    assert configured.requests_by_deployment.get("cheap-input/starcoder2-7b", 0) > \
        0.9 * configured.served
    assert "cheap-input/starcoder2-7b" not in summed.requests_by_deployment
    assert configured.cost_usd < summed.cost_usd / 2
