"""The shortcuts `simulate` takes per request give what the long way gives: a workload line that
comes again is prepared as if it came alone, the memo stays within its bounds, a file in
arrival order is read front to back, and budget keys are the router's own at a period's end."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from starcoder_router import EstimatingCounter
from starcoder_router._errors import ConfigError
from starcoder_router._routing.catalog import Catalog
from starcoder_router._routing.policy import Budget, CostPolicy
from starcoder_router._routing.request import CompletionRequest
from starcoder_router._running.core import RouterCore
from starcoder_router._simulate.engine import SimClock, SimCore
from starcoder_router._simulate.memo import Made, PreparedMemo, make
from starcoder_router._simulate.records import Prepared
from starcoder_router._simulate.runner import DEFAULT_START, prepared, simulate
from starcoder_router._simulate.scenarios import build_scenarios
from starcoder_router._simulate.synthetic import SyntheticCounter
from starcoder_router._simulate.workload import WorkloadRequest, read_workload, stream_workload
from support.simulation import budget_config, counts_workload


def _repeated(copies: int, n: int = 60) -> list[WorkloadRequest]:
    """`n` lines said `copies` times, each copy later, with their own output lengths and
    sessions (half greedy) on some."""
    base = counts_workload(n, seed=4)
    span = base[-1].timestamp + 1
    out = []
    for c in range(copies):
        for i, wr in enumerate(base):
            extra: dict[str, Any] = {"timestamp": wr.timestamp + c * span}
            if i % 3 == 0:
                extra["output_tokens"] = 5 + c
            if i % 4 == 0 and wr.kind == "fim":
                extra |= {"session": f"s{i}", "temperature": 0.0 if c % 2 else 0.7}
            out.append(wr.model_copy(update=extra))
    return out


class _NoMemo(PreparedMemo):
    """Makes every line afresh."""

    def get(self, wr: WorkloadRequest) -> Made:
        return make(wr, self._counter, self._smallest)


def test_a_line_that_comes_again_is_prepared_as_if_it_came_alone(
        monkeypatch: pytest.MonkeyPatch) -> None:
    requests = _repeated(4)
    smallest = min(d.context_window for d in Catalog.default().deployments)

    def run() -> list[Prepared]:
        return list(prepared(requests, counter=SyntheticCounter(EstimatingCounter()), seed=2,
                             smallest_window=smallest))

    got = run()
    monkeypatch.setattr("starcoder_router._simulate.runner.PreparedMemo", _NoMemo)
    expected = run()
    assert got == expected
    assert any(p.trimmable for p in got) and any(p.repeat_key for p in got)
    # From a line's third coming on, its request is the one made before, not a copy (lines
    # of a session alternate their temperature: each is the same every other copy).
    n = len(requests) // 4
    plain = [i for i in range(n) if requests[i].session is None]
    assert plain and all(got[2 * n + i].request is got[3 * n + i].request for i in plain)
    assert all(got[i].request is not got[n + i].request for i in range(n))


def test_simulating_lines_that_repeat_gives_what_each_line_alone_gives(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = budget_config(tmp_path / "router.toml", tenant_usd=0.01)
    requests = _repeated(3)
    fast = simulate(requests, config=config, keep_outcomes=True, autocomplete="off")
    monkeypatch.setattr("starcoder_router._simulate.runner.PreparedMemo", _NoMemo)
    slow = simulate(requests, config=config, keep_outcomes=True, autocomplete="off")
    assert fast.summaries == slow.summaries
    assert {k: r.outcomes for k, r in fast.runs.items()} == \
        {k: r.outcomes for k, r in slow.runs.items()}


def test_the_memo_keeps_lines_only_when_they_come_again_and_within_its_bounds() -> None:
    once = counts_workload(50, seed=9)
    memo = PreparedMemo(SyntheticCounter(EstimatingCounter()), 0)
    for wr in once:
        memo.get(wr)
    assert not memo._entries and memo.hits == 0

    requests = _repeated(3, n=40)
    for max_entries, max_chars in ((5, 1 << 30), (1 << 20, 50_000)):
        counter = SyntheticCounter(EstimatingCounter())
        memo = PreparedMemo(counter, 0, max_entries=max_entries, max_chars=max_chars)
        made = [memo.get(wr) for wr in requests]
        assert len(memo._entries) <= max_entries
        assert memo._chars < max_chars + 60_000  # the last line kept may pass the bound
        for wr, m in zip(requests, made, strict=True):
            fresh = make(wr, SyntheticCounter(EstimatingCounter()), 0)
            assert (m.request, m.tokens, m.trimmable) == \
                (fresh.request, fresh.tokens, fresh.trimmable)


def test_a_file_in_arrival_order_is_read_front_to_back_past_the_lines_skipped(
        tmp_path: Path) -> None:
    lines = [
        '{"timestamp": 0, "kind": "completion", "prompt_tokens": 3}',
        "",
        "{not json",
        '{"timestamp": 1, "kind": "fim", "prefix_tokens": 100, "suffix_tokens": 20}',
        '{"timestamp": 1, "kind": "completion"}',
        "   ",
        '{"timestamp": 2, "kind": "structured", "prompt_tokens": 30, "output_tokens": 7}',
    ]
    path = tmp_path / "w.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    whole, streamed = read_workload(path), stream_workload(path)
    assert [e.line for e in streamed.errors] == [3, 5]
    assert tuple(streamed) == whole.requests and len(whole.requests) == 3
    # A line skipped before grows: the valid lines are no longer where they were.
    lines[2] = "{not json, and longer"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="changed"):
        list(streamed)


@pytest.mark.parametrize("before_s", [2.0, 1e-3, 4e-4, 4e-7, 0.0, -1e-6])
def test_budget_keys_at_a_periods_end_are_the_routers_own(before_s: float) -> None:
    policy = CostPolicy(budgets=[Budget(limit_usd=1, period="day", scope="tenant")])
    scenario = build_scenarios(Catalog.default(), policy, ["configured"])[0]
    clock = SimClock(DEFAULT_START)
    core = SimCore(scenario, counter=SyntheticCounter(EstimatingCounter()), clock=clock,
                   retry=None, health=None)
    request = CompletionRequest(prompt="x", max_tokens=1, tenant="ide")
    day = 86_400.0
    clock.t = day - 30
    first = core.budget_keys(request)
    clock.t = day - before_s
    got = core.budget_keys(request)
    assert got == RouterCore.budget_keys(core, request)
    same_day = DEFAULT_START + dt.timedelta(seconds=clock.t) < DEFAULT_START + dt.timedelta(
        days=1)
    assert (got == first) == same_day
