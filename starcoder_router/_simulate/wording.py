"""What the report says in words: the headline comparison, readable budget names, and one
colour per deployment that stays the same from report to report. Pure functions."""

from __future__ import annotations

import zlib
from collections.abc import Sequence

from .summary import PolicySummary

__all__ = ["budget_label", "deployment_colour", "headline", "policy_colour", "refusal_in_words"]

# Plotly's default qualitative palette (plotly.colors.qualitative.Plotly).
_PALETTE = ("#636EFA", "#EF553B", "#00CC96", "#AB63FA", "#FFA15A", "#19D3F3", "#FF6692",
            "#B6E880", "#FF97FF", "#FECB52")
_PERIODS = {"hour": "hourly", "day": "daily", "week": "weekly", "month": "monthly",
            "total": "total"}


def deployment_colour(name: str) -> str:
    """The same colour for a deployment in every report, whatever else the report shows."""
    return _PALETTE[zlib.crc32(name.encode("utf-8")) % len(_PALETTE)]


def budget_label(key: str) -> str:
    """`tenant:ide/day|2030-01-07` as `ide's daily budget (2030-01-07)`; `global/day|...` as
    `daily budget (...)`; anything else as written."""
    name, _, bucket = key.partition("|")
    scope, slash, period = name.rpartition("/")
    if not slash or period not in _PERIODS:
        return key
    kind, colon, who = scope.partition(":")
    owner = f"{who}'s " if colon and who and who != "*" else (
        "untagged tenants' " if who == "*" else "")
    if not colon and kind not in ("global", ""):
        owner = f"{kind}'s "
    when = f" ({bucket})" if bucket and bucket != "total" else ""
    return f"{owner}{_PERIODS[period]} budget{when}"


def refusal_in_words(reason: str) -> str:
    """A simulated refusal's reason with its budget named in words: `budget tenant:ide/day
    exhausted` as `ide's daily budget exhausted`; other reasons as written."""
    if reason.startswith("budget ") and reason.endswith(" exhausted"):
        key = reason[len("budget "):-len(" exhausted")]
        words = budget_label(key)
        if words != key:
            return f"{words} exhausted"
    return reason


def headline(summaries: Sequence[PolicySummary]) -> str:
    """One sentence with the comparison that matters: what the configured policy costs against
    the cheapest alternative that serves as many requests, and what that one gives up."""
    if not summaries:
        return "No policy was simulated."
    base = next((s for s in summaries if s.name == "configured"), summaries[0])
    others = [s for s in summaries if s is not base and s.served >= base.served]
    text = (f"The {base.name} policy serves {base.served:,} of {base.requests:,} requests for "
            f"{_usd(base.cost_usd)}")
    if not others:
        return text + "; no other policy serves as many."
    best = min(others, key=lambda s: s.cost_usd)
    if best.cost_usd >= base.cost_usd:
        return text + "; no other policy that serves as many costs less."
    saving = 1 - best.cost_usd / base.cost_usd if base.cost_usd else 0.0
    text += (f"; {best.name} would serve as many for {_usd(best.cost_usd)} "
             f"({saving:.0%} less)")
    if base.quality is not None and best.quality is not None and best.quality < base.quality:
        text += (f", at a lower expected quality ({best.quality:.1f} against "
                 f"{base.quality:.1f} {base.quality_benchmark})")
    return text + "."


def _usd(v: float) -> str:
    return f"${v:,.4f}" if v < 10 else f"${v:,.2f}"


def policy_colour(index: int) -> str:
    """The colour of the `index`th policy, the same in every chart of one report."""
    return _PALETTE[index % len(_PALETTE)]
