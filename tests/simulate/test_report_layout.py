"""The report's layout, read from its figures: window labels that never overlap, and a budget
burn-down with one panel per budget, so no panel mixes a daily limit with a monthly one."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import plotly.graph_objects as go
import pytest
from hypothesis import given
from hypothesis import strategies as st

from starcoder_router._simulate.burndown import MAX_PANELS, burn_down_panels
from starcoder_router._simulate.labels import (
    LINE_PX,
    NARROWEST_PLOT_PX,
    text_width_px,
    window_labels,
)
from starcoder_router._simulate.records import RequestOutcome, ScenarioRun
from starcoder_router._simulate.report import _burn_down, _prompt_sizes
from starcoder_router._simulate.runner import SimulationResult, simulate
from support.simulation import budget_config, counts_workload


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> SimulationResult:
    tmp = tmp_path_factory.mktemp("layout")
    # Two deployments share each window, and a monthly budget sits beside the daily ones.
    config = budget_config(tmp / "router.toml", tenant_usd=0.02, extra="""
[[policy.budgets]]
limit_usd = 0.5
period = "month"

[[deployments]]
provider = "ollama"
variant = "starcoder2-3b"
model = "starcoder2:3b"
context_window = 16384
""")
    return simulate(counts_workload(300, seed=5, tenants=("ide", "bot")), config=config)


def _boxes(fig: Any, plot_px: float) -> list[tuple[float, float, float, float]]:
    """Each annotation's (left, right, bottom, top) in px, its text measured as the report
    estimates it, its x from the axis range at a plot `plot_px` wide."""
    lo, hi = fig.layout.xaxis.range
    out = []
    for a in fig.layout.annotations:
        lines = tuple(a.text.split("<br>"))
        width = text_width_px(lines)
        at = (a.x - lo) / (hi - lo) * plot_px + (a.xshift or 0)
        left = at if a.xanchor == "left" else at - width
        bottom = a.yshift or 0
        out.append((left, left + width, bottom, bottom + len(lines) * LINE_PX))
    return out


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return a[0] < b[1] and b[0] < a[1] and a[2] < b[3] and b[2] < a[3]


@pytest.mark.parametrize("plot_px", [NARROWEST_PLOT_PX, 800, 1100])
def test_window_labels_name_each_deployment_once_and_never_overlap(
        result: SimulationResult, plot_px: float) -> None:
    fig = _prompt_sizes(go, result)
    texts = [a.text for a in fig.layout.annotations]
    assert len(texts) == len(set(result.windows.values())), texts  # one per window
    for dep in result.windows:
        assert sum(dep in t for t in texts) == 1, (dep, texts)
    boxes = _boxes(fig, plot_px)
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not _overlap(a, b), (texts, boxes)
    # Every window is inside the axis, so no label is placed off the plot.
    assert max(result.windows.values()) < fig.layout.xaxis.range[1]


@given(st.dictionaries(st.text("abcdefgh/-", min_size=1, max_size=40),
                       st.sampled_from((512, 2048, 4096, 8192, 8500, 16384, 32768, 65536,
                                        131072)), min_size=1, max_size=20),
       st.floats(1_000, 200_000))
def test_labels_in_one_row_keep_apart_for_any_windows(windows: dict[str, int],
                                                       data_max: float) -> None:
    x_max = max(data_max, *windows.values()) * 1.05
    labels = window_labels(windows, x_max)
    assert sorted(label.x for label in labels) == sorted(set(windows.values()))
    named = "\n".join(line for label in labels for line in label.lines)
    listed = sum(len(label.lines) - 1 for label in labels)
    assert listed <= len(windows) and (listed == len(windows) or " more" in named)
    for i, a in enumerate(labels):
        at = a.x / x_max * NARROWEST_PLOT_PX
        if a.box[1] - a.box[0] <= max(at, NARROWEST_PLOT_PX - at):  # it fits on one side
            assert a.box[0] >= -1e-9 and a.box[1] <= NARROWEST_PLOT_PX + 1e-9, a
        for b in labels[i + 1:]:
            if a.row == b.row:
                assert a.box[1] <= b.box[0] or b.box[1] <= a.box[0], (a, b)


def test_the_burn_down_draws_one_panel_per_budget_with_one_period_each(
        result: SimulationResult) -> None:
    fig = _burn_down(go, result)
    by_axis: dict[str, set[str]] = defaultdict(set)
    for trace in fig.data:
        by_axis[trace.xaxis or "x"].add(trace.meta)
    budgets = {k.partition("|")[0] for run in result.runs.values() for k in run.limits_nano}
    assert {"global/month", "tenant:ide/day", "tenant:bot/day"} <= budgets
    assert len(by_axis) == len(budgets)  # a panel per budget...
    assert all(len(metas) == 1 for metas in by_axis.values())  # ...and one budget per panel
    titles = [a.text for a in fig.layout.annotations]
    assert sorted(titles) == sorted(["monthly budget, $0.50", "ide's daily budget, $0.02",
                                     "bot's daily budget, $0.02"])
    # A policy is one legend entry, whatever the number of panels.
    legend = [t.name for t in fig.data if t.showlegend is not False]
    assert sorted(legend) == sorted(set(legend))


def _outcome(n: int, hours: float, keys: tuple[str, ...], cost: int) -> RequestOutcome:
    return RequestOutcome(number=n, arrival=hours * 3600, finished=hours * 3600, tenant="t",
                          kind="fim", prompt_tokens=10, deployment="d", cost_nano=cost,
                          attempts=1, trimmed_tokens=0, refused=None, quality=None,
                          budgets=keys)


def test_a_new_period_starts_the_line_again_from_full() -> None:
    outcomes = [_outcome(0, 1, ("global/day|2030-01-07",), 30),
                _outcome(1, 20, ("global/day|2030-01-07",), 30),
                _outcome(2, 25, ("global/day|2030-01-08",), 50)]
    run = ScenarioRun(outcomes, {}, {"global/day|2030-01-07": 100,
                                     "global/day|2030-01-08": 100})
    panels, total = burn_down_panels({"configured": run})
    assert total == 1 and [p.title for p in panels] == ["daily budget, $0.00"]
    xs, ys = panels[0].series["configured"]
    assert xs == [1, 1, 20, None, 25, 25]
    assert ys == [100, 70, 40, None, 100, 50]


def test_many_budgets_show_those_closest_to_running_out() -> None:
    keys = [f"tenant:t{i:02d}/day|2030-01-07" for i in range(MAX_PANELS + 5)]
    outcomes = [_outcome(i, 1, (k,), i + 1) for i, k in enumerate(keys)]
    run = ScenarioRun(outcomes, {}, dict.fromkeys(keys, 100))
    panels, total = burn_down_panels({"configured": run})
    assert total == len(keys) and len(panels) == MAX_PANELS
    assert {p.budget for p in panels} == {k.partition("|")[0] for k in keys[5:]}
    assert all(len(p.title) <= 48 for p in panels)


def test_a_long_tenant_name_is_cut_so_titles_side_by_side_stay_apart() -> None:
    key = "tenant:" + "a-very-long-tenant-name-" * 4 + "/day|2030-01-07"
    run = ScenarioRun([_outcome(0, 1, (key,), 5)], {}, {key: 100})
    (panel,), _ = burn_down_panels({"configured": run})
    assert panel.title.startswith("a-very-long-tenant") and "…'s daily budget" in panel.title
    assert len(panel.title) <= 34 + len(", $0.00")


def test_policies_that_cost_the_same_stay_apart_in_both_charts(result: SimulationResult) -> None:
    # "configured" and "cheapest-summed" run alike here: equal costs, one line on another
    from starcoder_router._simulate.report import _cost_over_time

    costs = {s.name: s.cost_usd for s in result.summaries}
    assert costs["configured"] == costs["cheapest-summed"]
    for fig in (_cost_over_time(go, result), _burn_down(go, result)):
        style = {t.name: (t.line.dash, t.line.color) for t in fig.data}
        assert len(set(style.values())) == len(style) == len(result.runs), style


def test_the_page_explains_its_date_and_writes_every_count_with_separators(
        result: SimulationResult) -> None:
    import re

    from starcoder_router._simulate.report import render_report

    page = render_report(result, workload_name="w.jsonl")
    intro = page.split("<p>", 1)[1].split("</p>", 1)[0]
    assert f"starts at {result.start:%Y-%m-%d} 00:00 UTC (a fixed date" in intro
    assert "it is not a forecast" in intro
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", page)
    bare = [c for c in cells if re.fullmatch(r"\$?\d{4,}(\.\d+)?( s| h|%)?", c)]
    assert cells and bare == []
