"""Ledger roll-ups: one row per UTC hour (or day), tenant, tag set and deployment, with the sums
a spend report needs. Hourly ones answer reports by hour; daily ones, 24 times fewer, answer
reports by day, week and month. Pure: the stores keep them (SQLite in tables written in the
same transaction as the raw row, Redis in hashes written by the same script), so a roll-up
always equals the raw rows it summarises, to the nano-dollar, and raw rows can be pruned after
`retention_days` while every report still adds up.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Literal, NamedTuple

from .base import SERVED_OUTCOMES, LedgerEntry

__all__ = ["Grain", "Rollup", "order", "roll_up", "start_of"]

Grain = Literal["hour", "day"]


class Rollup(NamedTuple):
    """The ledger entries of one UTC hour or day for one tenant, tag set and deployment,
    summed."""

    time: dt.datetime  # the start of the hour or day, UTC
    tenant: str | None
    tags: tuple[str, ...]
    deployment: str
    requests: int
    failed: int
    prompt_tokens: int
    completion_tokens: int
    cost_nano: int


def start_of(when: dt.datetime, grain: Grain) -> dt.datetime:
    hour = when.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)
    return hour if grain == "hour" else hour.replace(hour=0)


def roll_up(entries: Iterable[LedgerEntry], grain: Grain = "hour") -> list[Rollup]:
    """The roll-ups of `entries`, sorted by hour (or day), tenant, tags and deployment."""
    sums: dict[tuple[dt.datetime, str | None, tuple[str, ...], str], list[int]] = {}
    for e in entries:
        row = sums.setdefault((start_of(e.time, grain), e.tenant, e.tags, e.deployment),
                              [0] * 5)
        row[0] += 1
        row[1] += e.outcome not in SERVED_OUTCOMES
        row[2] += e.prompt_tokens
        row[3] += e.completion_tokens
        row[4] += e.cost_nano
    return sorted((Rollup(*group, *row) for group, row in sums.items()), key=order)


def order(row: Rollup) -> tuple[dt.datetime, bool, str, tuple[str, ...], str]:
    """How every store sorts roll-ups: by hour, tenant (none first), tags, deployment."""
    return row.time, row.tenant is not None, row.tenant or "", row.tags, row.deployment
