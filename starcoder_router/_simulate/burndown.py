"""The budget burn-down as data: one panel per budget (so one period per panel), in which each
policy is a line of the share of the limit left, broken where a new period begins. Pure.

A budget's periods follow one another on the same line (a daily budget over three days draws
three falling segments), so a panel never puts a daily limit next to a monthly one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from .._routing.cost import nano_to_usd
from .records import ScenarioRun
from .wording import budget_label

__all__ = ["MAX_PANELS", "Panel", "burn_down_panels", "downsampled"]

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
        for budget, segments in run.numbers().burn.items():
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


def _join(segments: Sequence[tuple[Sequence[float], Sequence[float]]]
          ) -> tuple[list[float | None], list[float | None]]:
    xs: list[float | None] = []
    ys: list[float | None] = []
    for i, (seg_x, seg_y) in enumerate(segments):
        if i:
            xs.append(None)
            ys.append(None)
        for j in downsampled(len(seg_x), max(2, _MAX_POINTS // len(segments))):
            xs.append(seg_x[j])
            ys.append(seg_y[j])
    return xs, ys


def downsampled(n: int, most: int) -> list[int]:
    """Which of `n` points in a row to draw: all of them, or `most` evenly spaced and the
    last."""
    if n <= most:
        return list(range(n))
    step = n / most
    return [int(i * step) for i in range(most)] + [n - 1]
