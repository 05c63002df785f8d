"""Spend reports: a store's ledger as text tables by period, tenant and deployment.

`spend_report` is pure (entries in, text out); the package's `open_store` opens the store it reads.
This is what `starcoder-router spend` prints::

    store = open_store("sqlite", path="spend.db", must_exist=True)
    print(spend_report(store.ledger(), period="day"))
"""

from __future__ import annotations

import csv
import json
import os
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Literal, cast

from .._errors import ConfigError
from .._routing.cost import nano_to_usd
from .._routing.policy import Period
from .._text import text_table
from .base import SERVED_OUTCOMES, LedgerEntry
from .periods import bucket_label
from .rollup import Rollup

__all__ = ["By", "export_ledger", "spend_report"]

By = Literal["period", "tenant", "deployment"]

_PERIODS = ("hour", "day", "week", "month", "total")


class _Sum:
    __slots__ = ("completion_tokens", "cost_nano", "failed", "prompt_tokens", "requests")

    def __init__(self) -> None:
        self.requests = self.failed = self.prompt_tokens = self.completion_tokens = 0
        self.cost_nano = 0

    def add(self, entry: LedgerEntry | Rollup) -> None:
        if isinstance(entry, Rollup):
            self.requests += entry.requests
            self.failed += entry.failed
        else:
            self.requests += 1
            self.failed += entry.outcome not in SERVED_OUTCOMES
        self.prompt_tokens += entry.prompt_tokens
        self.completion_tokens += entry.completion_tokens
        self.cost_nano += entry.cost_nano

    def cells(self) -> tuple[str, ...]:
        return (str(self.requests), str(self.failed), str(self.prompt_tokens),
                str(self.completion_tokens), f"${nano_to_usd(self.cost_nano):.6f}")


_NUMBERS = ("requests", "failed", "prompt tok", "completion tok", "cost")
NO_TENANT = "(none)"


def _tenant_label(tenant: str | None) -> str:
    # Every bucket stays apart: no tenant, "" and " " are three rows, not one.
    if tenant is None:
        return NO_TENANT
    return tenant if tenant.strip() and tenant != NO_TENANT else repr(tenant)


_GROUPS: dict[By, tuple[str, Callable[[LedgerEntry | Rollup], str]]] = {
    "period": ("", lambda e: ""),
    "tenant": ("tenant", lambda e: _tenant_label(e.tenant)),
    "deployment": ("deployment", lambda e: e.deployment),
}


def spend_report(entries: Iterable[LedgerEntry | Rollup], *, period: str = "day",
                 by: By | None = None) -> str:
    """Tables of requests, tokens and cost per `period` (UTC calendar buckets: hour, day, week,
    month or total), overall (`by="period"`), per tenant or per deployment; all three when `by`
    is None. `failed` counts entries whose outcome is not `ok`. Hourly roll-ups (a store's
    `rollups()`) give the same tables as the raw entries they sum."""
    if period not in _PERIODS:
        raise ConfigError(f"unknown period {period!r}; choose one of {', '.join(_PERIODS)}",
                          field="period")
    span = cast(Period, period)
    entries = list(entries)
    if not entries:
        return "no spend recorded"
    sections: tuple[By, ...] = (by,) if by else ("period", "tenant", "deployment")
    out = []
    for section in sections:
        table = _group_table(entries, span, section)
        out.append(table if len(sections) == 1 else f"by {section}\n\n{table}")
    return "\n\n".join(out)


def _group_table(entries: list[LedgerEntry | Rollup], period: Period, by: By) -> str:
    title, group_of = _GROUPS[by]
    sums: dict[tuple[str, str], _Sum] = defaultdict(_Sum)
    total = _Sum()
    labels: dict[object, str] = {}  # roll-ups share a few start times: label each once
    for entry in entries:
        if entry.time not in labels:
            labels[entry.time] = bucket_label(period, entry.time)
        sums[labels[entry.time], group_of(entry)].add(entry)
        total.add(entry)
    head = (period, title) if title else (period,)
    rows = [(*((bucket, group) if title else (bucket,)), *s.cells())
            for (bucket, group), s in sorted(sums.items())]
    rows.append((*("total", "")[: len(head)], *total.cells()))
    return text_table(_right_align([(*head, *_NUMBERS), *rows], first=len(head)))


def _right_align(rows: list[tuple[str, ...]], *, first: int) -> list[tuple[str, ...]]:
    # The shared table helper left-aligns; numbers read better aligned on the right.
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [tuple(cell.rjust(widths[i]) if i >= first else cell for i, cell in enumerate(row))
            for row in rows]


_EXPORT_FIELDS = ("request_id", "time", "deployment", "provider", "model", "prompt_tokens",
                  "completion_tokens", "cost_nano", "outcome", "tenant", "tags",
                  "provider_request_id")


def export_ledger(entries: Iterable[LedgerEntry], path: str) -> int:
    """Write `entries` to `path` as JSON lines (`.jsonl`) or CSV (`.csv`, tags joined by
    `;`); returns how many. Costs stay integer nano-dollars, so totals reconcile exactly."""
    kind = os.path.splitext(path)[1].lower()
    if kind not in (".jsonl", ".csv"):
        raise ConfigError(f"cannot export to {path!r}: name a .jsonl or .csv file",
                          field="export")
    count = 0
    with open(path, "w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out) if kind == ".csv" else None
        if writer is not None:
            writer.writerow(_EXPORT_FIELDS)
        for entry in entries:
            row = {**entry._asdict(), "time": entry.time.isoformat()}
            if writer is None:
                row["tags"] = list(entry.tags)
                out.write(json.dumps(row, separators=(",", ":")) + "\n")
            else:
                row["tags"] = ";".join(entry.tags)
                writer.writerow(["" if row[f] is None else row[f] for f in _EXPORT_FIELDS])
            count += 1
    return count
