"""A spend store in this process's memory: for one process, tests and notebooks.

Every operation takes one lock for a few dictionary updates and does no I/O, so the async twins
call the sync methods directly: holding a `threading.Lock` for microseconds cannot stall an
event loop, and it keeps threads and tasks of one process consistent with each other.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import deque
from collections.abc import Sequence

from .._ids import new_id
from .base import BudgetKey, BudgetStatus, LedgerEntry, Reservation
from .inline import InlineAsync
from .periods import check_amount, refusal, require_aware, status_of, to_epoch, unique_keys
from .rollup import Grain, Rollup, roll_up

__all__ = ["MemoryStore"]

# How often finished buckets are swept: often enough to bound memory, rarely enough to cost
# nothing on the hot path.
_SWEEP_EVERY_S = 600.0


class _Bucket:
    __slots__ = ("expires_at", "held", "spent")

    def __init__(self) -> None:
        self.spent = 0
        self.expires_at: float | None = None
        self.held: dict[str, tuple[int, float]] = {}  # reservation id -> (amount, expires_at)

    def reserved(self, now: float) -> int:
        for rid in [rid for rid, (_, until) in self.held.items() if until <= now]:
            del self.held[rid]
        return sum(amount for amount, _ in self.held.values())


class MemoryStore(InlineAsync):
    """Spend, reservations and the ledger in a dict, guarded by a lock.

        store = MemoryStore()
        router = Router(policy=policy, store=store)   # budgets hold across threads and tasks

    Nothing survives the process, and two processes do not see each other: use `SQLiteStore`
    for several processes on one machine and `RedisStore` for several machines. The ledger keeps
    the newest `max_ledger_entries` entries.
    """

    def __init__(self, *, max_ledger_entries: int = 100_000) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[str, _Bucket] = {}
        self._ledger: deque[LedgerEntry] = deque(maxlen=max_ledger_entries)
        self._next_sweep = 0.0

    def reserve(self, keys: Sequence[BudgetKey], amount_nano: int, ttl_s: float) -> Reservation:
        check_amount(amount_nano, "amount_nano")
        keys = unique_keys(keys)
        rid = new_id()
        now = time.time()
        expires_at = now + ttl_s
        with self._lock:
            self._maybe_sweep(now)
            buckets = [self._bucket(key) for key in keys]
            held = [bucket.reserved(now) for bucket in buckets]
            for key, bucket, reserved in zip(keys, buckets, held, strict=True):
                error = refusal(key, bucket.spent, reserved, amount_nano)
                if error is not None:
                    raise error
            for bucket in buckets:
                bucket.held[rid] = (amount_nano, expires_at)
            statuses = tuple(status_of(key, bucket.spent, reserved + amount_nano)
                             for key, bucket, reserved in zip(keys, buckets, held, strict=True))
        return Reservation(id=rid, keys=keys, amount_nano=amount_nano, expires_at=expires_at,
                           statuses=statuses)

    def settle(self, reservation: Reservation, actual_nano: int,
               entry: LedgerEntry | None = None) -> None:
        check_amount(actual_nano, "actual_nano")
        _check_entry(entry)
        with self._lock:
            self._drop(reservation)
            self._add(reservation.keys, actual_nano, entry)

    def release(self, reservation: Reservation, entry: LedgerEntry | None = None) -> None:
        _check_entry(entry)
        with self._lock:
            self._drop(reservation)
            self._append(entry)

    def record(self, keys: Sequence[BudgetKey], actual_nano: int,
               entry: LedgerEntry | None = None) -> None:
        check_amount(actual_nano, "actual_nano")
        _check_entry(entry)
        with self._lock:
            self._add(keys, actual_nano, entry)

    def status(self, keys: Sequence[BudgetKey]) -> list[BudgetStatus]:
        now = time.time()
        with self._lock:
            out = []
            for key in unique_keys(keys):
                bucket = self._buckets.get(key.key)
                spent, reserved = (bucket.spent, bucket.reserved(now)) if bucket else (0, 0)
                out.append(status_of(key, spent, reserved))
            return out

    def spent(self, key: str) -> int:
        with self._lock:
            bucket = self._buckets.get(key)
            return bucket.spent if bucket else 0

    def rollups(self, *, since: dt.datetime | None = None, until: dt.datetime | None = None,
                tenant: str | None = None, grain: Grain = "hour") -> list[Rollup]:
        """The roll-ups of the entries in [since, until) (give hour or day boundaries)."""
        return roll_up(self.ledger(since=since, until=until, tenant=tenant), grain)

    def ledger(self, *, since: dt.datetime | None = None, until: dt.datetime | None = None,
               tenant: str | None = None) -> list[LedgerEntry]:
        lo, hi = to_epoch(since), to_epoch(until)
        with self._lock:
            entries = list(self._ledger)
        return sorted((e for e in entries
                       if (lo is None or e.time.timestamp() >= lo)
                       and (hi is None or e.time.timestamp() < hi)
                       and (tenant is None or e.tenant == tenant)),
                      key=lambda e: e.time)

    def close(self) -> None:
        """Nothing to release; present so every store can be used the same way."""


    def _bucket(self, key: BudgetKey) -> _Bucket:
        bucket = self._buckets.get(key.key)
        if bucket is None:
            bucket = self._buckets[key.key] = _Bucket()
        bucket.expires_at = to_epoch(key.expires_at)
        return bucket

    def _drop(self, reservation: Reservation) -> None:
        for key in reservation.keys:
            bucket = self._buckets.get(key.key)
            if bucket is not None:
                bucket.held.pop(reservation.id, None)

    def _add(self, keys: Sequence[BudgetKey], actual_nano: int, entry: LedgerEntry | None) -> None:
        for key in unique_keys(keys):
            self._bucket(key).spent += actual_nano
        self._append(entry)

    def _append(self, entry: LedgerEntry | None) -> None:
        if entry is not None:
            self._ledger.append(entry)

    def _maybe_sweep(self, now: float) -> None:
        if now < self._next_sweep:
            return
        self._next_sweep = now + _SWEEP_EVERY_S
        for name in [name for name, b in self._buckets.items()
                     if b.expires_at is not None and b.expires_at < now and not b.held]:
            del self._buckets[name]


def _check_entry(entry: LedgerEntry | None) -> None:
    # Checked before anything changes, as the other stores refuse it: they filter by this time.
    if entry is not None:
        require_aware(entry.time, "ledger time")
