"""Where the report's deployment-window labels go, so that none overlaps another. Pure.

Deployments that share a context window share one label; labels whose boxes would touch at the
narrowest plot the report is laid out for go on separate rows above the plot. Text width is
estimated generously per character (the browser's font is not known here), so a label that fits
in the estimate fits on screen.

    >>> [(l.lines, l.row) for l in window_labels({"a/x": 8192, "b/y": 8192}, 20_000)]
    [(('8,192-token window', 'a/x', 'b/y'), 0)]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

__all__ = ["FONT_PX", "LINE_PX", "NARROWEST_PLOT_PX", "Label", "text_width_px",
           "window_labels"]

FONT_PX = 11
LINE_PX = 15
# The plot area of a report read in a 900 px wide window is about 800 px; leave room below it.
NARROWEST_PLOT_PX = 600
# An upper bound on the average advance of an 11 px sans-serif character (wide letters included).
_CHAR_PX = 7.0
_PAD_PX = 8
_GAP_PX = 6
_MAX_NAMES = 4


class Label(NamedTuple):
    """One label: its window (an x value), its lines, which side of the line its text sits on,
    its row above the plot (0 nearest), and its box at `NARROWEST_PLOT_PX` (left, right px)."""

    x: int
    lines: tuple[str, ...]
    right_of_line: bool
    row: int
    box: tuple[float, float]


def text_width_px(lines: tuple[str, ...]) -> float:
    return max(len(line) for line in lines) * _CHAR_PX + _PAD_PX


def window_labels(windows: Mapping[str, int], x_max: float, *,
                  plot_px: float = NARROWEST_PLOT_PX) -> list[Label]:
    """Labels for `windows` (deployment -> tokens) on an x axis from 0 to `x_max`."""
    by_window: dict[int, list[str]] = {}
    for name, window in windows.items():
        by_window.setdefault(window, []).append(name)
    rows: list[list[tuple[float, float]]] = []
    out = []
    for window in sorted(by_window):
        names = sorted(by_window[window])
        if len(names) > _MAX_NAMES:
            names = [*names[:_MAX_NAMES - 1], f"and {len(names) - _MAX_NAMES + 1} more"]
        lines = (f"{window:,}-token window", *names)
        width = text_width_px(lines)
        at = window / x_max * plot_px if x_max > 0 else 0.0
        # Text to the right of its line, unless it would run off the plot.
        right = at + width <= plot_px
        box = (at, at + width) if right else (at - width, at)
        row = next((i for i, taken in enumerate(rows)
                    if all(box[0] >= b[1] + _GAP_PX or box[1] + _GAP_PX <= b[0]
                           for b in taken)), len(rows))
        if row == len(rows):
            rows.append([])
        rows[row].append(box)
        out.append(Label(window, lines, right, row, box))
    return out
