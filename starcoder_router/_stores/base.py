"""Value types shared by budgets, spend stores and the router. No I/O here.

Money is integer nano-dollars everywhere below the public surface (see `_cost`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Literal, NamedTuple, Protocol, runtime_checkable

from .._routing.cost import nano_to_usd

__all__ = [
    "SERVED_OUTCOMES",
    "AsyncSpendStore",
    "BudgetKey",
    "BudgetStatus",
    "LedgerEntry",
    "Outcome",
    "Reservation",
    "SpendStore",
]

# "reuse" and "cache": an autocomplete answer served from an earlier completion, at no cost.
Outcome = Literal["ok", "error", "partial", "cancelled", "reuse", "cache"]
# Outcomes that answered the request (the others count as failed in reports).
SERVED_OUTCOMES = ("ok", "reuse", "cache")


class BudgetKey(NamedTuple):
    """One budget in one period: what a reservation is checked against.

    `key` is the storage key, e.g. `"tenant:acme/day|2026-11-26"`: the budget's name, then the
    period bucket. `expires_at` is when the bucket can be forgotten (None for `total`).
    """

    budget: str
    key: str
    limit_nano: int
    resets_at: dt.datetime | None
    expires_at: dt.datetime | None


class BudgetStatus(NamedTuple):
    """A budget's state in its current period."""

    name: str
    key: str
    limit_nano: int
    spent_nano: int
    reserved_nano: int
    resets_at: dt.datetime | None

    @property
    def limit_usd(self) -> float:
        return nano_to_usd(self.limit_nano)

    @property
    def spent_usd(self) -> float:
        return nano_to_usd(self.spent_nano)

    @property
    def reserved_usd(self) -> float:
        return nano_to_usd(self.reserved_nano)

    @property
    def remaining_nano(self) -> int:
        return max(0, self.limit_nano - self.spent_nano - self.reserved_nano)

    @property
    def remaining_usd(self) -> float:
        return nano_to_usd(self.remaining_nano)

    @property
    def used_fraction(self) -> float:
        return (self.spent_nano + self.reserved_nano) / self.limit_nano if self.limit_nano else 1.0


class Reservation(NamedTuple):
    """Budget held for one request until it is settled or released (or expires)."""

    id: str
    keys: tuple[BudgetKey, ...]
    amount_nano: int
    expires_at: float
    statuses: tuple[BudgetStatus, ...] = ()


class LedgerEntry(NamedTuple):
    """One request's spend, as recorded in the store's ledger."""

    request_id: str
    time: dt.datetime
    deployment: str
    provider: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    cost_nano: int
    outcome: Outcome
    tenant: str | None = None
    tags: tuple[str, ...] = ()
    provider_request_id: str | None = None

    @property
    def cost_usd(self) -> float:
        return nano_to_usd(self.cost_nano)


@runtime_checkable
class SpendStore(Protocol):
    """Where spend and reservations live. Every method is atomic.

    `reserve` admits `amount_nano` against every key or against none (raising
    `BudgetExceededError` for the first key that cannot take it); a reservation that is neither
    settled nor released stops counting after `ttl_s`. `settle` replaces the reservation with the
    real cost (which is recorded even if it exceeds the limit: spend is never lost) and writes the
    ledger entry; `release` drops it (a failure that cost nothing) and may still write an entry.
    `record` adds spend without a reservation (e.g. no budget applies but the ledger is kept).
    """

    def reserve(self, keys: Sequence[BudgetKey], amount_nano: int, ttl_s: float) -> Reservation: ...

    def settle(self, reservation: Reservation, actual_nano: int,
               entry: LedgerEntry | None = None) -> None: ...

    def release(self, reservation: Reservation, entry: LedgerEntry | None = None) -> None: ...

    def record(self, keys: Sequence[BudgetKey], actual_nano: int,
               entry: LedgerEntry | None = None) -> None: ...

    def status(self, keys: Sequence[BudgetKey]) -> list[BudgetStatus]: ...

    def spent(self, key: str) -> int: ...

    def ledger(self, *, since: dt.datetime | None = None, until: dt.datetime | None = None,
               tenant: str | None = None) -> list[LedgerEntry]: ...

    def close(self) -> None: ...


@runtime_checkable
class AsyncSpendStore(Protocol):
    """The same operations for `AsyncRouter`, with the `a` prefix (as in httpx)."""

    async def areserve(self, keys: Sequence[BudgetKey], amount_nano: int,
                       ttl_s: float) -> Reservation: ...

    async def asettle(self, reservation: Reservation, actual_nano: int,
                      entry: LedgerEntry | None = None) -> None: ...

    async def arelease(self, reservation: Reservation,
                       entry: LedgerEntry | None = None) -> None: ...

    async def arecord(self, keys: Sequence[BudgetKey], actual_nano: int,
                      entry: LedgerEntry | None = None) -> None: ...

    async def astatus(self, keys: Sequence[BudgetKey]) -> list[BudgetStatus]: ...

    async def aspent(self, key: str) -> int: ...

    async def aledger(self, *, since: dt.datetime | None = None,
                      until: dt.datetime | None = None,
                      tenant: str | None = None) -> list[LedgerEntry]: ...

    async def aclose(self) -> None: ...
