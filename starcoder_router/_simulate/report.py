"""The HTML report of a simulation: one self-contained file, plotted with Plotly.

Plotly (the `report` extra) writes interactive figures whose JavaScript can be inlined, so the
file opens with no network, and hovering shows each point's numbers; the whole library is inlined
once and every figure refers to it.

    write_report("report.html", simulate(requests), workload_name="workload.jsonl")
"""

from __future__ import annotations

import html
import os
import re
from collections.abc import Iterable, Sequence
from types import ModuleType
from typing import Any

from .._errors import MissingDependencyError
from .._routing.cost import nano_to_usd
from .burndown import burn_down_panels, downsampled
from .labels import FONT_PX, LINE_PX, window_labels
from .runner import SimulationResult
from .summary import PolicySummary
from .tally import MAX_LISTED, Tally
from .wording import (
    budget_label,
    deployment_colour,
    headline,
    policy_colour,
    refusal_in_words,
)

__all__ = ["check_report_dependencies", "render_report", "write_report"]

# Enough points for a smooth line; a workload of 100,000 requests would otherwise put 100,000
# points per policy in the file.
_MAX_POINTS = 400
# Counts on an axis read as in the tables, 2,500 and 10,000 (Plotly would write 2500 and 10k):
# d3-format's "," groups thousands (https://d3js.org/d3-format).
_COUNT = ",~f"
_DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")


def _plotly() -> ModuleType:
    try:
        import plotly.graph_objects as go
    except ImportError as exc:
        raise MissingDependencyError("the HTML report", "plotly", "report") from exc
    module: ModuleType = go
    return module


def check_report_dependencies() -> None:
    """Raise `MissingDependencyError` now if the report could not be drawn later."""
    _plotly()


def write_report(path: str | os.PathLike[str], result: SimulationResult, *,
                 workload_name: str) -> None:
    """Write the report of `result` to `path`."""
    text = render_report(result, workload_name=workload_name)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def render_report(result: SimulationResult, *, workload_name: str) -> str:
    """The report as one HTML document."""
    go = _plotly()
    from plotly.offline import get_plotlyjs

    figures = [
        ("Cost over time", _cost_over_time(go, result)),
        ("Deployment mix", _deployment_mix(go, result.summaries)),
        ("Budget burn-down", _burn_down(go, result)),
        ("Prompt sizes and deployment windows", _prompt_sizes(go, result)),
    ]
    parts = [f"<h2>{html.escape(title)}</h2>" + (
        fig.to_html(full_html=False, include_plotlyjs=False, div_id=_slug(title),
                    config={"displaylogo": False})
        if fig is not None else "<p>No budgets are configured.</p>")
        for title, fig in figures]
    requests = result.summaries[0].requests if result.summaries else 0
    return _PAGE.format(
        plotly=get_plotlyjs(),
        title=html.escape(f"starcoder-router simulation: {workload_name}"),
        headline=html.escape(headline(result.summaries)),
        intro=html.escape(
            f"{requests:,} requests from {workload_name}, replayed on a simulated clock that "
            f"starts at {result.start:%Y-%m-%d %H:%M} UTC (a fixed date, so that daily and "
            f"monthly budgets fall the same way in every run; it is not a forecast), "
            f"seed {result.seed}."),
        summary=_summary_table(result.summaries),
        autocomplete=_autocomplete_table(result),
        figures="\n".join(parts),
        listed=_listed(result),
    )


def _slug(title: str) -> str:
    return "fig-" + "-".join(title.lower().split())[:40]


def _cumulative(tally: Tally) -> list[tuple[float, float]]:
    hours, running = tally.cost_hours, tally.cost_running_nano
    return [(hours[i], nano_to_usd(running[i])) for i in downsampled(len(hours), _MAX_POINTS)]


def _cost_over_time(go: ModuleType, result: SimulationResult) -> Any:
    fig = go.Figure()
    for i, (name, run) in enumerate(result.runs.items()):
        pts = _cumulative(run.numbers())
        # A dash of its own per policy: two policies that cost the same stay both visible.
        fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], name=name,
                                 mode="lines", line={"dash": _DASHES[i % len(_DASHES)],
                                                     "width": 2 + (i == 0),
                                                     "color": policy_colour(i)}))
    fig.update_layout(xaxis_title="hours since start", yaxis_title="cumulative cost (USD)")
    return fig


def _deployment_mix(go: ModuleType, summaries: Sequence[PolicySummary]) -> Any:
    fig = go.Figure()
    names = [s.name for s in summaries]
    deployments = sorted({d for s in summaries for d in s.requests_by_deployment})
    for dep in deployments:
        fig.add_trace(go.Bar(x=names, y=[s.requests_by_deployment.get(dep, 0)
                                         for s in summaries], name=dep,
                             marker_color=deployment_colour(dep)))
    fig.add_trace(go.Bar(x=names, y=[s.refused for s in summaries], name="refused",
                         marker_color="#999999"))
    fig.update_layout(barmode="stack", yaxis_title="requests", yaxis_tickformat=_COUNT)
    return fig


def _burn_down(go: ModuleType, result: SimulationResult) -> Any:
    from plotly.subplots import make_subplots

    panels, total = burn_down_panels(result.runs)
    if not panels:
        return None
    cols = 1 if len(panels) == 1 else 2
    rows = -(-len(panels) // cols)
    height = 140 + 250 * rows
    fig = make_subplots(rows=rows, cols=cols,
                        subplot_titles=[html.escape(p.title, quote=False) for p in panels],
                        horizontal_spacing=0.08, vertical_spacing=min(0.3, 90 / height))
    order = list(result.runs)
    shown: set[str] = set()
    hours = max((run.numbers().last_finished for run in result.runs.values()),
                default=0.0) / 3600
    for n, panel in enumerate(panels):
        row, col = n // cols + 1, n % cols + 1
        for policy, (xs, ys) in panel.series.items():
            i = order.index(policy)
            full = html.escape(budget_label(panel.budget), quote=False)
            fig.add_trace(go.Scatter(
                x=xs, y=ys, mode="lines", name=policy, legendgroup=policy,
                showlegend=policy not in shown, meta=panel.budget,
                line={"dash": _DASHES[i % len(_DASHES)], "width": 2 + (i == 0),
                      "color": policy_colour(i)},
                hovertemplate=f"{html.escape(policy)}: %{{y:.0f}}% left at %{{x:.1f}} h"
                              f"<extra>{full}</extra>"),
                row=row, col=col)
            shown.add(policy)
        fig.update_yaxes(range=[0, 105], row=row, col=col,
                         title_text="% of limit left" if col == 1 else None)
        fig.update_xaxes(range=[0, hours * 1.02 or 1], row=row, col=col,
                         title_text="hours since start" if n + cols >= len(panels) else None)
    title = None if total == len(panels) else (
        f"The {len(panels)} of {total} budgets that came closest to running out")
    # The policies' legend sits above the panels, out of their way at any width.
    fig.update_layout(height=height, title_text=title, title_y=0.99,
                      legend={"orientation": "h", "x": 0, "xanchor": "left",
                              "y": 1 - (30 if title else 0) / height, "yanchor": "top",
                              "yref": "container"},
                      margin={"t": 100 if title else 70, "b": 60, "r": 30})
    return fig


def _prompt_sizes(go: ModuleType, result: SimulationResult) -> Any:
    sizes = list(result.prompt_tokens) if result.runs else []
    x_max = 1.05 * max([*sizes, *result.windows.values(), 1])
    fig = go.Figure(go.Histogram(x=sizes, nbinsx=80, name="requests"))
    labels = window_labels(result.windows, x_max)
    row_px = max((len(label.lines) for label in labels), default=1) * LINE_PX + 6
    for label in labels:
        fig.add_vline(x=label.x, line_dash="dash", line_color="#c0392b")
        fig.add_annotation(
            x=label.x, xref="x", y=1, yref="paper", yanchor="bottom",
            xanchor="left" if label.right_of_line else "right",
            xshift=3 if label.right_of_line else -3, yshift=label.row * row_px,
            align="left" if label.right_of_line else "right", showarrow=False,
            text="<br>".join(html.escape(line, quote=False) for line in label.lines),
            font={"size": FONT_PX, "color": "#c0392b"})
    rows = max((label.row + 1 for label in labels), default=0)
    fig.update_layout(xaxis_title="prompt tokens", yaxis_title="requests", bargap=0.05,
                      xaxis_tickformat=_COUNT, yaxis_tickformat=_COUNT,
                      xaxis_range=[0, x_max], showlegend=False,
                      margin={"t": 20 + rows * row_px, "l": 60, "r": 20})
    return fig


def _usd(v: float) -> str:
    return f"${v:,.4f}"


def _summary_table(summaries: Sequence[PolicySummary]) -> str:
    head = ("policy", "what it does", "cost", "cost by tenant", "served", "refused", "trimmed",
            "tokens trimmed", "p50 latency", "p99 latency", "expected quality",
            "budgets exhausted")
    rows = []
    for s in summaries:
        tenants = ", ".join(f"{t} {_usd(v)}" for t, v in s.cost_by_tenant_usd.items())
        exhausted = ", ".join(f"{budget_label(k)} at {at / 3600:.1f} h"
                              for k, at in s.budget_exhausted_at_s.items()) or "-"
        quality = "-" if s.quality is None else f"{s.quality:.1f} ({s.quality_benchmark})"
        cells = (s.name, s.description, _usd(s.cost_usd), tenants, f"{s.served:,}",
                 f"{s.refused:,}", f"{s.trimmed_requests:,}", f"{s.tokens_trimmed:,}",
                 _secs(s.latency_p50_s), _secs(s.latency_p99_s), quality, exhausted)
        rows.append(cells)
    return _table(head, rows, "summary", free=(3, 11))


def _autocomplete_table(result: SimulationResult) -> str:
    """Each policy with editor sessions, reuse and the cache off and on (when simulated)."""
    if not result.autocomplete:
        return ""
    head = ("policy", "features", "requests", "upstream requests", "cost",
            "served by reuse or cache", "reused", "cached", "superseded")
    rows = [(f.policy, f.features, f"{f.requests:,}", f"{f.upstream_requests:,}",
             _usd(f.cost_usd), f"{100 * f.served_locally_share:.1f}%", f"{f.reused:,}",
             f"{f.cached:,}", f"{f.superseded:,}") for f in result.autocomplete]
    return "<h2>Editor sessions, typed-ahead reuse and the cache: off and on</h2>" + \
        _table(head, rows, "autocomplete")


def _secs(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f} s"


def _table(head: Sequence[str], rows: Iterable[Sequence[str]], cls: str,
           free: Sequence[int] = ()) -> str:
    """`free`: the columns that hold names of the user's choosing (tenants, budgets), which
    may break anywhere so that a long name cannot widen the table past the page."""
    out = [f'<div class="scroll"><table class="{cls}"><thead><tr>']
    out += [f"<th>{html.escape(h)}</th>" for h in head]
    out.append("</tr></thead><tbody>")
    for r in rows:
        out.append("<tr>" + "".join(
            f'<td class="n">{html.escape(c)}</td>' if _NUMBER.fullmatch(c)
            else f'<td class="free">{html.escape(c)}</td>' if i in free
            else f"<td>{html.escape(c)}</td>" for i, c in enumerate(r)) + "</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


# A cell that is one number (a count, dollars, seconds, hours, a share) stays on one line.
_NUMBER = re.compile(r"[-$]?[\d,.]+(?: s| h|%)?")


def _listed(result: SimulationResult) -> str:
    """Per policy, the requests that were refused or trimmed (the first few hundred)."""
    parts = []
    for name, run in result.runs.items():
        tally = run.numbers()
        total = tally.listed_total
        if not total:
            continue
        rows = [(f"{o.number + 1:,}", f"{o.arrival / 3600:.2f} h", o.kind, o.tenant,
                 f"{o.prompt_tokens:,}",
                 refusal_in_words(o.refused) if o.refused
                 else f"trimmed {o.trimmed_tokens:,} tokens on {o.deployment}")
                for o in tally.listed]
        more = f" (first {MAX_LISTED} of {total:,})" if total > MAX_LISTED else ""
        parts.append(f"<details><summary>{html.escape(name)}: {total:,} request(s){more}"
                     "</summary>" + _table(("request", "arrival", "kind", "tenant",
                                            "prompt tokens", "what happened"), rows, "listed",
                                           free=(3, 5))
                     + "</details>")
    return "\n".join(parts) or "<p>No request was refused or trimmed.</p>"


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; padding: 0 1em; max-width: 1200px;
       color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; }}
th {{ background: #f3f3f3; }}
td.n {{ white-space: nowrap; }}
td.free {{ overflow-wrap: anywhere; min-width: 8em; }}
div.scroll {{ overflow-x: auto; }}
summary {{ cursor: pointer; margin: 0.5em 0; }}
</style>
<script type="text/javascript">{plotly}</script>
</head>
<body>
<h1>{title}</h1>
<p class="headline"><strong>{headline}</strong></p>
<p>{intro}</p>
<h2>Policies side by side</h2>
{summary}
{autocomplete}
{figures}
<h2>Refused and trimmed requests</h2>
{listed}
</body>
</html>
"""
