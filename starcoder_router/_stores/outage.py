"""What to do while the spend store is down: refuse (`on_store_error="reject"`, the default) or
admit requests blind against a small allowance of this process's own (`"allow"`).

With "allow", a reservation the store cannot take is held instead in a `MemoryStore` whose limits
are `fraction` (10% by default) of each budget's limit, or what the store last said the budget
had left if that is less. So during one outage each process can spend at most that fraction of
each budget without the store knowing: with N processes, a budget can end the outage at most
N x fraction over its limit. Every settle, release or record the store cannot take (blind or
not) goes into an in-process journal, which is replayed, oldest first and in batches, after the
next call the store answers; once it is empty the allowance starts afresh. The journal lives in
memory: a process that dies during the outage loses what it had not booked yet.

Every blind admission is logged (budget names only) and reported to `observer` with the event
names in `EVENTS`; the gateway counts them in `/metrics`.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Literal, NamedTuple

from .._errors import StarcoderRouterError, StoreError
from .._ids import new_id
from .base import AsyncSpendStore, BudgetKey, BudgetStatus, LedgerEntry, Reservation, SpendStore
from .memory import MemoryStore
from .rollup import Grain, Rollup

__all__ = ["EVENTS", "OnStoreError", "OutageTolerantStore"]

logger = logging.getLogger("starcoder_router.store")

OnStoreError = Literal["reject", "allow"]
EVENTS = ("admitted_blind", "refused_blind", "journaled", "booked")
Observer = Callable[[str], None]


class _Booking(NamedTuple):
    """A settle the store has not taken yet: sent again as a settle of `rid` (which adds the
    spend whether or not the reservation is still held)."""

    rid: str
    keys: tuple[BudgetKey, ...]
    actual_nano: int
    entry: LedgerEntry | None


class _OutageBook:
    """The policy's state, without I/O: the blind allowance, the journal and the counts."""

    def __init__(self, fraction: float, observer: Observer | None) -> None:
        if not 0 < fraction <= 1:
            raise ValueError(f"the outage fraction must be in (0, 1], got {fraction}")
        self.fraction = fraction
        self.observer = observer
        self.counts = dict.fromkeys(EVENTS, 0)
        self._lock = threading.Lock()
        self._local = MemoryStore(max_ledger_entries=1)
        self._blind: set[str] = set()
        self._left: dict[str, int] = {}  # budget key -> what the store last said it had left
        self._journal: deque[_Booking] = deque()

    def _event(self, name: str) -> None:
        with self._lock:
            self.counts[name] += 1
        if self.observer is not None:
            self.observer(name)

    def seen(self, reservation: Reservation) -> None:
        for status in reservation.statuses:
            self._left[status.key] = status.remaining_nano

    def admit_blind(self, keys: Sequence[BudgetKey], amount_nano: int, ttl_s: float,
                    cause: BaseException) -> Reservation:
        """Hold against the allowance (raising `BudgetExceededError` when it is used up)."""
        allowance = [key._replace(limit_nano=min(int(key.limit_nano * self.fraction),
                                                 self._left.get(key.key, key.limit_nano)))
                     for key in keys]
        try:
            held = self._local.reserve(allowance, amount_nano, ttl_s)
        except StarcoderRouterError:
            self._event("refused_blind")
            raise
        with self._lock:
            self._blind.add(held.id)
        self._event("admitted_blind")
        logger.warning("spend store unavailable (%s): admitted a request blind under %s",
                       type(cause).__name__, ", ".join(k.budget for k in keys))
        return held

    def is_blind(self, reservation: Reservation) -> bool:
        return reservation.id in self._blind

    def spend_blind(self, reservation: Reservation, actual_nano: int) -> None:
        with self._lock:
            self._blind.discard(reservation.id)
        self._local.settle(reservation, actual_nano)

    def journal(self, booking: _Booking) -> None:
        with self._lock:
            self._journal.append(booking)
        self._event("journaled")

    @property
    def pending(self) -> int:
        return len(self._journal)

    def take(self, batch: int) -> list[_Booking]:
        with self._lock:
            return [self._journal.popleft() for _ in range(min(batch, len(self._journal)))]

    def booked(self, booking: _Booking) -> None:
        self._event("booked")

    def put_back(self, bookings: list[_Booking]) -> None:
        with self._lock:
            self._journal.extendleft(reversed(bookings))

    def recovered(self) -> None:
        """The journal is empty: the store knows everything, so the allowance starts afresh."""
        with self._lock:
            if not self._journal and not self._blind:
                self._local = MemoryStore(max_ledger_entries=1)


def _is_outage(exc: BaseException) -> bool:
    """A store failure, not a refusal or a bad argument of ours."""
    if isinstance(exc, StoreError):
        return True
    return isinstance(exc, Exception) and not isinstance(
        exc, (StarcoderRouterError, ValueError, TypeError))


class OutageTolerantStore:
    """A store that keeps admitting requests, within limits, while its backend is down.

        store = OutageTolerantStore(RedisStore(url), fraction=0.1)
        # or in a config file's [store]: on_store_error = "allow"

    `counts` holds how many requests were admitted or refused blind, and how many bookings
    were journaled and later booked. `flush()` replays the journal now.
    """

    def __init__(self, inner: SpendStore, *, fraction: float = 0.1,
                 observer: Observer | None = None, replay_batch: int = 100) -> None:
        self.inner = inner
        self._ainner: AsyncSpendStore = inner  # type: ignore[assignment]  # every store has both
        self._book = _OutageBook(fraction, observer)
        self._batch = replay_batch
        self.prefix = getattr(inner, "prefix", "scr:")
        self.cluster = getattr(inner, "cluster", False)

    @property
    def counts(self) -> dict[str, int]:
        return dict(self._book.counts)

    @property
    def pending(self) -> int:
        return self._book.pending

    @property
    def observer(self) -> Observer | None:
        return self._book.observer

    @observer.setter
    def observer(self, observer: Observer | None) -> None:
        self._book.observer = observer

    def reserve(self, keys: Sequence[BudgetKey], amount_nano: int, ttl_s: float) -> Reservation:
        try:
            res = self.inner.reserve(keys, amount_nano, ttl_s)
        except Exception as exc:
            if not _is_outage(exc):
                raise
            return self._book.admit_blind(keys, amount_nano, ttl_s, exc)
        self._book.seen(res)
        self.flush()
        return res

    def settle(self, reservation: Reservation, actual_nano: int,
               entry: LedgerEntry | None = None) -> None:
        self._send(_Booking(reservation.id, reservation.keys, actual_nano, entry), reservation)

    def release(self, reservation: Reservation, entry: LedgerEntry | None = None) -> None:
        self._send(_Booking(reservation.id, reservation.keys, 0, entry), reservation)

    def record(self, keys: Sequence[BudgetKey], actual_nano: int,
               entry: LedgerEntry | None = None) -> None:
        self._send(_Booking(new_id(), tuple(keys), actual_nano, entry), None)

    def flush(self) -> None:
        """Book what the journal holds, a batch at a time, until it is empty or the store
        fails again."""
        while self._book.pending:
            batch = self._book.take(self._batch)
            for n, booking in enumerate(batch):
                try:
                    self.inner.settle(_as_reservation(booking), booking.actual_nano,
                                      booking.entry)
                except Exception as exc:
                    self._book.put_back(batch[n:])
                    if _is_outage(exc):
                        return
                    raise
                self._book.booked(booking)
        self._book.recovered()

    def _send(self, booking: _Booking, reservation: Reservation | None) -> None:
        if reservation is not None and self._book.is_blind(reservation):
            self._book.spend_blind(reservation, booking.actual_nano)
            self._book.journal(booking)
            return
        try:
            if reservation is None:
                self.inner.record(booking.keys, booking.actual_nano, booking.entry)
            else:
                self.inner.settle(reservation, booking.actual_nano, booking.entry)
        except Exception as exc:
            if not _is_outage(exc):
                raise
            self._book.journal(booking)
            return
        self.flush()

    def status(self, keys: Sequence[BudgetKey]) -> list[BudgetStatus]:
        return self.inner.status(keys)

    def spent(self, key: str) -> int:
        return self.inner.spent(key)

    def ledger(self, *, since: dt.datetime | None = None, until: dt.datetime | None = None,
               tenant: str | None = None) -> list[LedgerEntry]:
        return self.inner.ledger(since=since, until=until, tenant=tenant)

    def rollups(self, *, since: dt.datetime | None = None, until: dt.datetime | None = None,
                tenant: str | None = None, grain: Grain = "hour") -> list[Rollup]:
        rollups = self.inner.rollups  # type: ignore[attr-defined]  # every store has them
        return list(rollups(since=since, until=until, tenant=tenant, grain=grain))

    def close(self) -> None:
        self.inner.close()

    # The async twins: the same decisions, awaiting the inner store's `a` methods.

    async def areserve(self, keys: Sequence[BudgetKey], amount_nano: int,
                       ttl_s: float) -> Reservation:
        try:
            res = await self._ainner.areserve(keys, amount_nano, ttl_s)
        except Exception as exc:
            if not _is_outage(exc):
                raise
            return self._book.admit_blind(keys, amount_nano, ttl_s, exc)
        self._book.seen(res)
        await self.aflush()
        return res

    async def asettle(self, reservation: Reservation, actual_nano: int,
                      entry: LedgerEntry | None = None) -> None:
        await self._asend(_Booking(reservation.id, reservation.keys, actual_nano, entry),
                          reservation)

    async def arelease(self, reservation: Reservation, entry: LedgerEntry | None = None) -> None:
        await self._asend(_Booking(reservation.id, reservation.keys, 0, entry), reservation)

    async def arecord(self, keys: Sequence[BudgetKey], actual_nano: int,
                      entry: LedgerEntry | None = None) -> None:
        await self._asend(_Booking(new_id(), tuple(keys), actual_nano, entry), None)

    async def aflush(self) -> None:
        while self._book.pending:
            batch = self._book.take(self._batch)
            for n, booking in enumerate(batch):
                try:
                    await self._ainner.asettle(_as_reservation(booking), booking.actual_nano,
                                               booking.entry)
                except Exception as exc:
                    self._book.put_back(batch[n:])
                    if _is_outage(exc):
                        return
                    raise
                self._book.booked(booking)
        self._book.recovered()

    async def _asend(self, booking: _Booking, reservation: Reservation | None) -> None:
        if reservation is not None and self._book.is_blind(reservation):
            self._book.spend_blind(reservation, booking.actual_nano)
            self._book.journal(booking)
            return
        try:
            if reservation is None:
                await self._ainner.arecord(booking.keys, booking.actual_nano, booking.entry)
            else:
                await self._ainner.asettle(reservation, booking.actual_nano, booking.entry)
        except Exception as exc:
            if not _is_outage(exc):
                raise
            self._book.journal(booking)
            return
        await self.aflush()

    async def astatus(self, keys: Sequence[BudgetKey]) -> list[BudgetStatus]:
        return await self._ainner.astatus(keys)

    async def aspent(self, key: str) -> int:
        return await self._ainner.aspent(key)

    async def aledger(self, *, since: dt.datetime | None = None, until: dt.datetime | None = None,
                      tenant: str | None = None) -> list[LedgerEntry]:
        return await self._ainner.aledger(since=since, until=until, tenant=tenant)

    async def aclose(self) -> None:
        await self._ainner.aclose()


def _as_reservation(booking: _Booking) -> Reservation:
    return Reservation(id=booking.rid, keys=booking.keys, amount_nano=0, expires_at=0.0)
