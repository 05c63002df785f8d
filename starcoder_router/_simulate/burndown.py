"""The budget burn-down as data: one panel per budget (so one period per panel), in which each
policy is a line of the share of the limit left, broken where a new period begins. Pure.

A budget's periods follow one another on the same line (a daily budget over three days draws
three falling segments), so a panel never puts a daily limit next to a monthly one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

from .._routing.cost import nano_to_usd
from .records import RequestOutcome, ScenarioRun
from .wording import budget_label

__all__ = ["MAX_PANELS", "Panel", "burn_down_panels"]

MAX_PANELS = 12
_MAX_POINTS = 400
# Two panels side by side in a 900 px window leave about 360 px for each title.
_TITLE_CHARS = 34
_PERIOD_ORDER = ("hour", "day", "week", "month", "total")


class Panel(NamedTuple):
    """One budget: its name (`tenant:ide/day`), title, and per policy the hours and the share
    of the limit left (None between periods)."""

    budget: str
    title: str
    series: dict[str, tuple[list[float | None], list[float | None]]]
    lowest: float


def burn_down_panels(runs: dict[str, ScenarioRun]) -> tuple[list[Panel], int]:
    """The panels to draw (at most `MAX_PANELS`: the budgets that come closest to running
    out), and how many budgets there are in all."""
    panels: dict[str, Panel] = {}
    for policy, run in runs.items():
        for budget, segments in _segments(run.outcomes, run.limits_nano).items():
            limit = next(v for k, v in run.limits_nano.items() if k.startswith(budget + "|"))
            panel = panels.setdefault(budget, Panel(
                budget, f"{_short(budget_label(budget))}, ${nano_to_usd(limit):,.2f}", {},
                100.0))
            xs, ys = _join(segments)
            panel.series[policy] = (xs, ys)
            low = min((y for y in ys if y is not None), default=100.0)
            panels[budget] = panel._replace(lowest=min(panel.lowest, low))
    shown = sorted(panels.values(), key=lambda p: p.lowest)[:MAX_PANELS]
    return sorted(shown, key=_order), len(panels)


def _short(label: str, most: int = _TITLE_CHARS) -> str:
    """`label` cut in its owner's name, so two titles side by side never run into each other
    (the hover keeps the whole name)."""
    if len(label) <= most:
        return label
    owner, sep, rest = label.rpartition("'s ")
    if sep and len(rest) + 4 < most:
        return owner[:most - len(rest) - 4] + "…" + sep + rest
    return label[:most - 1] + "…"


def _order(panel: Panel) -> tuple[int, bool, str]:
    period = panel.budget.rpartition("/")[2]
    rank = _PERIOD_ORDER.index(period) if period in _PERIOD_ORDER else len(_PERIOD_ORDER)
    return rank, ":" in panel.budget, panel.budget


def _segments(outcomes: Iterable[RequestOutcome],
              limits: dict[str, int]) -> dict[str, list[list[tuple[float, float]]]]:
    """Per budget, one list of (hours, % left) per period, starting full."""
    spent: dict[str, int] = {}
    out: dict[str, list[list[tuple[float, float]]]] = {}
    current: dict[str, str] = {}
    for o in sorted(outcomes, key=lambda o: o.finished):
        if not o.cost_nano:
            continue
        hours = o.finished / 3600
        for key in o.budgets:
            budget = key.partition("|")[0]
            limit = limits[key]
            segments = out.setdefault(budget, [])
            if current.get(budget) != key:
                current[budget] = key
                segments.append([(hours, 100.0)])
            spent[key] = spent.get(key, 0) + o.cost_nano
            left = max(0, limit - spent[key])
            segments[-1].append((hours, 100 * left / limit if limit else 0.0))
    return out


def _join(segments: Sequence[list[tuple[float, float]]]
          ) -> tuple[list[float | None], list[float | None]]:
    xs: list[float | None] = []
    ys: list[float | None] = []
    for i, seg in enumerate(segments):
        if i:
            xs.append(None)
            ys.append(None)
        for x, y in _downsample(seg, max(2, _MAX_POINTS // len(segments))):
            xs.append(x)
            ys.append(y)
    return xs, ys


def _downsample(points: Sequence[tuple[float, float]], most: int) -> list[tuple[float, float]]:
    if len(points) <= most:
        return list(points)
    step = len(points) / most
    return [points[int(i * step)] for i in range(most)] + [points[-1]]
