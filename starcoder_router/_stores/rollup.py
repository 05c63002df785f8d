"""Ledger roll-ups: one row per UTC hour, tenant, tag set and deployment, with the sums a spend
report needs. Pure: the stores keep them (SQLite in a table written in the same transaction as
the raw row, Redis in a hash written by the same script), so a roll-up always equals the raw
rows it summarises, to the nano-dollar, and raw rows can be pruned after `retention_days`
while every report still adds up.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import NamedTuple

from .base import LedgerEntry

__all__ = ["Rollup", "hour_of", "order", "roll_up"]


class Rollup(NamedTuple):
    """The ledger entries of one UTC hour for one tenant, tag set and deployment, summed."""

    time: dt.datetime  # the start of the hour, UTC
    tenant: str | None
    tags: tuple[str, ...]
    deployment: str
    requests: int
    failed: int
    prompt_tokens: int
    completion_tokens: int
    cost_nano: int


def hour_of(when: dt.datetime) -> dt.datetime:
    return when.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)


def roll_up(entries: Iterable[LedgerEntry]) -> list[Rollup]:
    """The hourly roll-ups of `entries`, sorted by hour, tenant, tags and deployment."""
    sums: dict[tuple[dt.datetime, str | None, tuple[str, ...], str], list[int]] = {}
    for e in entries:
        row = sums.setdefault((hour_of(e.time), e.tenant, e.tags, e.deployment), [0] * 5)
        row[0] += 1
        row[1] += e.outcome != "ok"
        row[2] += e.prompt_tokens
        row[3] += e.completion_tokens
        row[4] += e.cost_nano
    return sorted((Rollup(*group, *row) for group, row in sums.items()), key=order)


def order(row: Rollup) -> tuple[dt.datetime, bool, str, tuple[str, ...], str]:
    """How every store sorts roll-ups: by hour, tenant (none first), tags, deployment."""
    return row.time, row.tenant is not None, row.tenant or "", row.tags, row.deployment
