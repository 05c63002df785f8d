"""Async methods for stores whose operations are short and local: they run inline.

Memory operations do no I/O at all: handing them to a thread would cost more than the work.
`MemoryStore` gets its `a`-prefixed methods from here. (`SQLiteStore` did too, until the
gateway's profile showed a transaction per request costing 150 to 250 us of loop time, and the
loop waiting on other processes' write locks: its async methods have a writer thread of their
own, `sqlite_writer.py`.)
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from .base import BudgetKey, BudgetStatus, LedgerEntry, Reservation

__all__ = ["InlineAsync"]


class InlineAsync:
    """`areserve`, `asettle`... that call the sync methods directly."""

    def reserve(self, keys: Sequence[BudgetKey], amount_nano: int, ttl_s: float) -> Reservation:
        raise NotImplementedError

    def settle(self, reservation: Reservation, actual_nano: int,
               entry: LedgerEntry | None = None) -> None:
        raise NotImplementedError

    def release(self, reservation: Reservation, entry: LedgerEntry | None = None) -> None:
        raise NotImplementedError

    def record(self, keys: Sequence[BudgetKey], actual_nano: int,
               entry: LedgerEntry | None = None) -> None:
        raise NotImplementedError

    def status(self, keys: Sequence[BudgetKey]) -> list[BudgetStatus]:
        raise NotImplementedError

    def spent(self, key: str) -> int:
        raise NotImplementedError

    def ledger(self, *, since: dt.datetime | None = None, until: dt.datetime | None = None,
               tenant: str | None = None) -> list[LedgerEntry]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    async def areserve(self, keys: Sequence[BudgetKey], amount_nano: int,
                       ttl_s: float) -> Reservation:
        return self.reserve(keys, amount_nano, ttl_s)

    async def asettle(self, reservation: Reservation, actual_nano: int,
                      entry: LedgerEntry | None = None) -> None:
        self.settle(reservation, actual_nano, entry)

    async def arelease(self, reservation: Reservation, entry: LedgerEntry | None = None) -> None:
        self.release(reservation, entry)

    async def arecord(self, keys: Sequence[BudgetKey], actual_nano: int,
                      entry: LedgerEntry | None = None) -> None:
        self.record(keys, actual_nano, entry)

    async def astatus(self, keys: Sequence[BudgetKey]) -> list[BudgetStatus]:
        return self.status(keys)

    async def aspent(self, key: str) -> int:
        return self.spent(key)

    async def aledger(self, *, since: dt.datetime | None = None, until: dt.datetime | None = None,
                      tenant: str | None = None) -> list[LedgerEntry]:
        return self.ledger(since=since, until=until, tenant=tenant)

    async def aclose(self) -> None:
        self.close()
