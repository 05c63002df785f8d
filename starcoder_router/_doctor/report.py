"""How `doctor` shows its plan and its findings (a table or JSON), and the overrides it learns.

Pure: text and data in, text and data out.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from .._routing.catalog import Deployment
from .._routing.cost import nano_to_usd
from .._text import text_table
from .overrides import DeploymentOverride
from .probes import PROBES, Probe, worst_case_cost_nano
from .session import REQUEST_TIMEOUT_S, DeploymentReport

__all__ = ["learned_overrides", "plan_text", "report_json", "report_table"]


def plan_text(deployments: Sequence[Deployment], probes: Sequence[Probe] = PROBES) -> str:
    """The probes, and what running them against `deployments` can cost at most."""
    lines = [f"Probes (each request at most {REQUEST_TIMEOUT_S:g} s; a 429 is waited out once):"]
    lines += [f"  {p.name:<13} {p.what}" for p in probes]
    rows: list[tuple[str, ...]] = [("deployment", "kind", "window", "worst case")]
    total = 0
    for dep in deployments:
        cost = worst_case_cost_nano(dep, probes)
        total += cost
        rows.append((dep.name, "local" if dep.is_local else "hosted", str(dep.context_window),
                     f"${nano_to_usd(cost):.6f}"))
    lines += ["", text_table(rows), f"worst case for the whole run: ${nano_to_usd(total):.6f} "
              "(catalog prices, every request billed in full)"]
    return "\n".join(lines)


def report_table(reports: Sequence[DeploymentReport]) -> str:
    rows: list[tuple[str, ...]] = [("deployment", "probe", "result", "detail")]
    for rep in reports:
        for f in rep.findings:
            rows.append((rep.deployment.name, f.probe, f.status, _one_line(f.detail)))
    return text_table(rows) + "\n\n" + _spent_line(reports)


def _one_line(text: str, limit: int = 110) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _spent_line(reports: Sequence[DeploymentReport]) -> str:
    total = sum(r.spent_nano for r in reports)
    requests = sum(r.requests for r in reports)
    bounded = sum(r.usage_missing for r in reports)
    note = f" ({bounded} replies without usage costed at their upper bound)" if bounded else ""
    return f"spent: ${nano_to_usd(total):.6f} over {requests} requests{note}"


def report_json(reports: Sequence[DeploymentReport]) -> dict[str, Any]:
    return {
        "deployments": [{
            "name": r.deployment.name, "provider": r.deployment.provider,
            "model": r.deployment.model, "requests": r.requests,
            "spent_usd": nano_to_usd(r.spent_nano),
            "findings": [{"probe": f.probe, "status": f.status, "detail": f.detail,
                          "value": f.value} for f in r.findings],
        } for r in reports],
        "spent_usd": nano_to_usd(sum(r.spent_nano for r in reports)),
        "requests": sum(r.requests for r in reports),
    }


def learned_overrides(reports: Sequence[DeploymentReport], now: dt.datetime
                      ) -> dict[str, DeploymentOverride]:
    """What each report measured, as overrides; decided findings only."""
    out = {}
    for rep in reports:
        fields: dict[str, Any] = {}
        window = rep.finding("window")
        if window and window.status in ("ok", "differs") and isinstance(window.value, int):
            fields["context_window"] = window.value
        stops = rep.finding("stops")
        if stops and stops.status in ("ok", "differs") and isinstance(stops.value, int):
            fields["max_stop"] = stops.value
        special = rep.finding("special-stop")
        if special and special.value in ("fire", "ignored"):
            fields["special_stops"] = special.value
        latency = rep.finding("latency")
        if latency and latency.status == "ok" and isinstance(latency.value, Mapping):
            fields.update({k: float(f"{v:.4g}") for k, v in latency.value.items()
                           if v is not None})
        if fields:
            out[rep.deployment.name] = DeploymentOverride(measured_at=now, **fields)
    return out
