"""A workload streamed through the simulator gives the numbers the whole workload in memory
gives: the summaries, the report's points and lists, and the report itself, to the byte. The
reference below is how they were computed from every request's outcome before the simulator
streamed; the shortcuts a simulated request takes (a count found again, a trim planned over
blocks of lines) give what the long way gives."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from starcoder_router import EstimatingCounter
from starcoder_router._errors import ConfigError, InvalidRequestError, StarcoderRouterError
from starcoder_router._routing.cost import nano_to_usd
from starcoder_router._routing.fit import PromptCounts, fit_prompt
from starcoder_router._routing.render import render
from starcoder_router._simulate.records import RequestOutcome
from starcoder_router._simulate.report import render_report
from starcoder_router._simulate.runner import SimulationResult, simulate
from starcoder_router._simulate.synthetic import SyntheticCounter
from starcoder_router._simulate.tally import MAX_LISTED
from starcoder_router._simulate.workload import (
    WorkloadRequest,
    parse_line,
    read_workload,
    stream_workload,
)
from support.simulation import budget_config, counts_workload

COUNTER = SyntheticCounter(EstimatingCounter())


def _config(tmp: Path) -> Path:
    # Daily budgets that run out, a monthly one beside them, and failures: refusals, retries,
    # several periods and the `random` module's jitter all show in the numbers.
    return budget_config(tmp / "router.toml", tenant_usd=0.004, extra="""
[[policy.budgets]]
limit_usd = 0.5
period = "month"

[simulate]
seed = 3

[simulate.deployments."fireworks/starcoder2-3b"]
ttft_s = 0.2
prefill_tokens_per_s = 20000
tokens_per_s = 150
failure_rate = 0.15
""")


# -- the numbers as they were computed from a list of every outcome ------------------------

def _reference_summary(outcomes: Sequence[RequestOutcome]) -> dict[str, Any]:
    served = [o for o in outcomes if o.refused is None]
    tenants: Counter[str] = Counter()
    for o in outcomes:
        tenants[o.tenant] += o.cost_nano
    latencies = sorted(o.latency for o in served)
    scores = [o.quality for o in served if o.quality is not None]

    def quantile(q: float) -> float | None:
        if not latencies:
            return None
        return round(latencies[min(len(latencies) - 1,
                                   max(0, round(q * (len(latencies) - 1))))], 4)

    return {
        "requests": len(outcomes), "served": len(served),
        "cost_usd": nano_to_usd(sum(o.cost_nano for o in outcomes)),
        "cost_by_tenant_usd": {t: nano_to_usd(n) for t, n in sorted(tenants.items())},
        "requests_by_deployment": dict(sorted(Counter(o.deployment for o in served
                                                      if o.deployment).items())),
        "refused_by_reason": dict(Counter(o.refused for o in outcomes
                                          if o.refused is not None).most_common()),
        "trimmed_requests": sum(1 for o in served if o.trimmed_tokens),
        "tokens_trimmed": sum(o.trimmed_tokens for o in served),
        "latency_p50_s": quantile(0.5), "latency_p99_s": quantile(0.99),
        "quality": round(sum(scores) / len(scores), 2) if scores else None,
        "retried_requests": sum(1 for o in served if o.attempts > 1),
    }


def _reference_cumulative(outcomes: Sequence[RequestOutcome]) -> list[tuple[float, float]]:
    total, points = 0, []
    for o in sorted(outcomes, key=lambda o: o.finished):
        if o.cost_nano:
            total += o.cost_nano
            points.append((o.finished / 3600, nano_to_usd(total)))
    return points


def _reference_segments(outcomes: Sequence[RequestOutcome], limits: dict[str, int]
                        ) -> dict[str, list[list[tuple[float, float]]]]:
    spent: dict[str, int] = {}
    out: dict[str, list[list[tuple[float, float]]]] = {}
    current: dict[str, str] = {}
    for o in sorted(outcomes, key=lambda o: o.finished):
        if not o.cost_nano:
            continue
        hours = o.finished / 3600
        for key in o.budgets:
            budget = key.partition("|")[0]
            segments = out.setdefault(budget, [])
            if current.get(budget) != key:
                current[budget] = key
                segments.append([(hours, 100.0)])
            spent[key] = spent.get(key, 0) + o.cost_nano
            left = max(0, limits[key] - spent[key])
            segments[-1].append((hours, 100 * left / limits[key]))
    return out


@pytest.fixture(scope="module")
def kept(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SimulationResult]:
    tmp = tmp_path_factory.mktemp("streaming")
    config = _config(tmp)
    return config, simulate(counts_workload(500, seed=11), config=config, keep_outcomes=True)


def test_the_tally_gives_what_every_outcome_gave(kept: tuple[Path, SimulationResult]) -> None:
    _, result = kept
    assert any(s.refused for s in result.summaries) and any(
        s.retried_requests for s in result.summaries)
    for summary, (name, run) in zip(result.summaries, result.runs.items(), strict=True):
        outcomes = run.outcomes
        assert len(outcomes) == 500 and [o.number for o in outcomes] == list(range(500))
        got = {k: v for k, v in summary.as_json().items() if k in _reference_summary([])}
        assert got == _reference_summary(outcomes), name
        tally = run.numbers()
        assert list(zip(tally.cost_hours, map(nano_to_usd, tally.cost_running_nano),
                        strict=True)) == _reference_cumulative(outcomes)
        segments = {b: [list(zip(xs, ys, strict=True)) for xs, ys in lines]
                    for b, lines in tally.burn.items()}
        assert segments == _reference_segments(outcomes, run.limits_nano)
        picked = [o for o in outcomes if o.refused is not None or o.trimmed_tokens]
        assert tally.listed == picked[:MAX_LISTED] and tally.listed_total == len(picked)
        assert tally.last_finished == max(o.finished for o in outcomes)
    first = next(iter(result.runs.values()))
    assert list(result.prompt_tokens) == [o.prompt_tokens for o in first.outcomes]


def test_streaming_a_file_gives_the_same_summaries_and_report(
        kept: tuple[Path, SimulationResult], tmp_path: Path) -> None:
    config, result = kept
    path = tmp_path / "w.jsonl"
    path.write_text("".join(r.model_dump_json(exclude_defaults=True) + "\n"
                            for r in counts_workload(500, seed=11)), encoding="utf-8")
    streamed = simulate(stream_workload(path), config=config, keep_outcomes=False)
    assert streamed.summaries == result.summaries
    assert all(run.outcomes == [] for run in streamed.runs.values())
    assert render_report(streamed, workload_name="w") == render_report(result, workload_name="w")


def test_each_policy_draws_as_if_it_ran_alone(kept: tuple[Path, SimulationResult]) -> None:
    config, result = kept
    requests = counts_workload(500, seed=11)
    for summary in result.summaries[:3]:
        alone = simulate(requests, config=config, policies=[summary.name],
                         keep_outcomes=False)
        assert alone.summaries == (summary,)


def test_requests_out_of_order_are_refused_when_they_cannot_be_sorted() -> None:
    late, early = (WorkloadRequest(timestamp=t, kind="completion", prompt_tokens=5)
                   for t in (5, 1))
    with pytest.raises(InvalidRequestError, match="arrival order"):
        simulate(iter([late, early]), policies=["configured"])
    # A list is sorted first, as read_workload sorts a file.
    assert simulate([late, early], policies=["configured"]).summaries[0].served == 2


# -- reading a file lazily ----------------------------------------------------------------

def test_a_streamed_file_reads_as_the_file_in_memory(tmp_path: Path) -> None:
    lines = [
        '{"timestamp": 5, "kind": "fim", "prefix_tokens": 100, "suffix_tokens": 20}',
        "{not json",
        "",
        '{"timestamp": 1, "kind": "completion"}',
        '{"timestamp": 0, "kind": "chat", "prompt": "explain", "tenant": "a"}\r',
        '{"timestamp": 0.5, "kind": "completion", "prompt_tokens": 3, "colour": "red"}',
        '{"timestamp": 0.5, "kind": "structured", "prompt_tokens": 30, "output_tokens": 7}',
        '{"timestamp": 0.5, "kind": "completion", "prompt_tokens": 4}',
    ]
    path = tmp_path / "w.jsonl"
    path.write_text("\n".join(lines), encoding="utf-8")
    whole, streamed = read_workload(path), stream_workload(path)
    assert streamed.errors == whole.errors and len(streamed) == len(whole.requests) == 4
    assert tuple(streamed) == whole.requests == tuple(streamed)  # read again, lazily
    assert [r.timestamp for r in streamed] == [0, 0.5, 0.5, 5]

    path.write_bytes(b'{"timestamp": 1, "kind": "completion", "prompt": "\xff"}\n'
                     + lines[0].encode() + b"\n")
    streamed = stream_workload(path)
    assert [e.line for e in streamed.errors] == [1] and "UTF-8" in streamed.errors[0].message
    path.write_text("[]\n" * 2, encoding="utf-8")  # the file changes between the readings
    with pytest.raises(ConfigError, match="changed"):
        list(streamed)


_FIELDS = st.fixed_dictionaries({}, optional={
    "timestamp": st.one_of(st.floats(-1, 1e6), st.integers(-2, 10), st.text(max_size=3)),
    "kind": st.sampled_from(["completion", "fim", "chat", "structured", "nope"]),
    "prompt": st.text(max_size=20), "prefix": st.text(max_size=20),
    "prompt_tokens": st.integers(-1, 5000), "prefix_tokens": st.integers(-1, 5000),
    "suffix_tokens": st.integers(-1, 500),
    "file_tokens": st.lists(st.integers(-1, 3000), max_size=3),
    "max_tokens": st.integers(-1, 600), "tenant": st.text(max_size=5),
    "tags": st.lists(st.text(max_size=4), max_size=2),
    "output_tokens": st.one_of(st.none(), st.integers(-1, 100)), "extra": st.just(1)})


@settings(max_examples=300, deadline=None)
@given(_FIELDS)
def test_a_line_parses_as_the_checked_request_would(data: dict[str, Any]) -> None:
    line = json.dumps(data)
    try:
        expected: WorkloadRequest | None = WorkloadRequest(**data)
        if expected is not None and expected.has_text:
            expected.to_request()
    except (StarcoderRouterError, TypeError):
        expected = None
    got = parse_line(line)
    if expected is None:
        assert isinstance(got, str) and got
    else:
        assert got == expected and not isinstance(got, str)
        assert got.to_request() == expected.to_request()


# -- the shortcuts of a simulated request -------------------------------------------------

_SHAPES = st.builds(
    lambda pre, suf, files, max_tokens: WorkloadRequest(
        timestamp=0, kind="fim", prefix_tokens=pre, suffix_tokens=suf,
        file_tokens=tuple(files), max_tokens=max_tokens),
    st.integers(0, 12_000), st.integers(0, 3_000),
    st.lists(st.integers(0, 4_000), max_size=3), st.sampled_from([16, 64, 256]))


@settings(max_examples=120, deadline=None)
@given(_SHAPES, st.sampled_from([2048, 4096, 8192, 16384]))
def test_a_synthetic_prompt_counts_fits_and_trims_the_same_by_every_way(
        wr: WorkloadRequest, window: int) -> None:
    counter = SyntheticCounter(EstimatingCounter())
    pieces = counter.with_pieces()
    assert pieces is not None
    request = wr.to_request(made=counter.known)
    prompt = render(request).prompt
    plain = SyntheticCounter(EstimatingCounter())  # remembers nothing it was told
    assert counter.fim_tokens(request, wr.input_tokens or 0) == plain.count(prompt) \
        == counter.count(prompt) == sum(counter.pieces(prompt, fine=False)[1])
    # The pieces of parts it was told about are worked out, not compared block by block.
    assert counter.pieces(prompt, fine=False) == plain.pieces(prompt, fine=False)
    rendered = render(request)
    slow = fit_prompt(rendered, window=window, max_tokens=wr.max_tokens,
                      counts=PromptCounts(plain))
    fast = fit_prompt(rendered, window=window, max_tokens=wr.max_tokens,
                      counts=PromptCounts(pieces))
    assert type(fast) is type(slow)
    assert fast.prompt_tokens == slow.prompt_tokens
    if hasattr(slow, "rendered"):
        assert fast.rendered.prompt == slow.rendered.prompt  # type: ignore[union-attr]
        assert fast.trimmed == slow.trimmed  # type: ignore[union-attr]
