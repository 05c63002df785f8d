"""Rate limits and deployment health shared by the worker processes of one machine, through the
SQLite spend file they already share (the default store in the state directory, or any
`[store] kind = "sqlite"`), so that `serve --workers N` keeps one limit and one set of open
circuits instead of N.

Why SQLite and not shared memory: the workers already meet in that file for their budgets, so
this adds two small tables and no new resource to create, name, size or clean up after a crash;
SQLite's write lock serialises the processes, and a crashed worker cannot leave it held (the OS
drops a dead process's file locks). The cost is one short `BEGIN IMMEDIATE` transaction per
admission and per settlement of a tenant that has limits (tens of microseconds of SQLite work
plus a hop to a thread, measured in BENCHMARKS.md), and a read of the health table every
`health_sync_s` per worker.

Each operation runs in a worker thread (`asyncio.to_thread`), so a transaction that waits for
another process's write lock never holds the event loop; `busy_timeout_s` bounds that wait, and
a database that stays locked longer is a `StoreError` (503), as for the spend store.

Tables (in the spend database)::

    rate_windows(tenant PRIMARY KEY, window, requests, tokens)   the current minute per tenant
    shared_health(deployment PRIMARY KEY, until, reason, origin, version)

`version` grows with every write, so a worker reads only what changed since its last look.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from .._errors import StoreError
from .._ids import new_id
from .settings import TenantSettings
from .tenants import (
    MemoryRateLimiter,
    RateLimiter,
    RedisRateLimiter,
    TokenHold,
    _limited,
    _limits,
    _verdict,
    _window,
)

__all__ = ["SQLiteRateLimiter", "SQLiteSharedHealth", "sharing_for"]

logger = logging.getLogger("starcoder_router.server")

T = TypeVar("T")
Apply = Callable[[str, float, str], None]
SharedHealthLike = Any  # `SQLiteSharedHealth` or `health_share.SharedHealth`: start/publish/aclose

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS rate_windows (tenant TEXT PRIMARY KEY, window INTEGER NOT NULL, "
    "requests INTEGER NOT NULL, tokens INTEGER NOT NULL) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS shared_health (deployment TEXT PRIMARY KEY, until REAL NOT NULL, "
    "reason TEXT NOT NULL, origin TEXT NOT NULL, version INTEGER NOT NULL)",
)


class _Database:
    """One connection to the spend file, used by one thread at a time."""

    def __init__(self, path: str | os.PathLike[str], busy_timeout_s: float):
        self._lock = threading.Lock()
        # isolation_level=None: we begin our own (IMMEDIATE) transactions, as the store does.
        self._db = sqlite3.connect(os.fspath(path), timeout=busy_timeout_s,
                                   isolation_level=None, check_same_thread=False)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            with self.transaction() as db:
                for statement in _SCHEMA:
                    db.execute(statement)
        except BaseException:
            self._db.close()
            raise

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")  # the write lock before the read
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """`work` inside one transaction, in a thread; SQLite failures as `StoreError`."""
        def job() -> T:
            with self.transaction() as db:
                return work(db)

        try:
            return await asyncio.to_thread(job)
        except sqlite3.Error as exc:
            raise StoreError(f"could not reach the shared SQLite file: "
                             f"{type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()


class SQLiteRateLimiter:
    """Per-tenant request and token counters in the spend file, shared by every process that
    opens it. The same verdicts as `MemoryRateLimiter`, each admission one transaction."""

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout_s: float = 2.0):
        self._db = _Database(path, busy_timeout_s)

    async def admit(self, tenant: TenantSettings, now: float, tokens: int) -> TokenHold | None:
        if not _limits(tenant):
            return None
        window = _window(now)
        want = tokens if tenant.tokens_per_minute is not None else 0

        def count(db: sqlite3.Connection) -> str | None:
            row = db.execute("SELECT window, requests, tokens FROM rate_windows WHERE tenant = ?",
                             (tenant.name,)).fetchone()
            requests, used = (row[1], row[2]) if row is not None and row[0] == window else (0, 0)
            requests += 1
            over = _verdict(tenant, requests, used, want)
            db.execute("INSERT OR REPLACE INTO rate_windows VALUES (?, ?, ?, ?)",
                       (tenant.name, window, requests, used + (0 if over else want)))
            return over

        over = await self._db.run(count)
        if over:
            raise _limited(tenant, over, now)
        return TokenHold(tenant, window, want) if want else None

    async def settle(self, hold: TokenHold) -> None:
        delta = hold.take_settlement()
        if not delta:
            return
        await self._db.run(lambda db: db.execute(
            "UPDATE rate_windows SET tokens = MAX(0, tokens + ?) WHERE tenant = ? AND window = ?",
            (delta, hold.tenant.name, hold.window)))

    async def aclose(self) -> None:
        self._db.close()


class SQLiteSharedHealth:
    """Opened circuits written to the spend file and read back by every worker every `poll_s`
    (the `SharedHealth` interface: `start`, `publish`, `aclose`)."""

    def __init__(self, path: str | os.PathLike[str], *, poll_s: float = 0.25,
                 busy_timeout_s: float = 2.0):
        self._db = _Database(path, busy_timeout_s)
        self._poll_s = poll_s
        self.instance = new_id()
        self._seen = 0  # the highest version applied
        self._tasks: set[asyncio.Task[None]] = set()
        self._poller: asyncio.Task[None] | None = None

    async def start(self, apply: Apply) -> None:
        """Apply what is already known, then keep looking in the background."""
        await self._look(apply)
        self._poller = asyncio.create_task(self._poll(apply))

    async def _poll(self, apply: Apply) -> None:
        while True:
            await asyncio.sleep(self._poll_s)
            try:
                await self._look(apply)
            except StoreError:
                logger.warning("could not read the shared health", exc_info=True)

    async def _look(self, apply: Apply) -> None:
        seen = self._seen

        def read(db: sqlite3.Connection) -> list[Any]:
            rows = db.execute("SELECT deployment, until, reason, origin, version "
                              "FROM shared_health WHERE version > ?", (seen,)).fetchall()
            return list(rows)

        now = time.time()
        for deployment, until, reason, origin, version in await self._db.run(read):
            self._seen = max(self._seen, int(version))
            if origin != self.instance and until > now:
                apply(str(deployment), float(until), str(reason))

    def publish(self, deployment: str, until: float, reason: str) -> None:
        """Tell the other workers (in the background: hooks cannot wait)."""
        def write(db: sqlite3.Connection) -> None:
            # One row per deployment (REPLACE), so the table stays as small as the catalog;
            # expired rows stay too, since `version` must never go back.
            db.execute(
                "INSERT OR REPLACE INTO shared_health VALUES (?, ?, ?, ?, "
                "(SELECT COALESCE(MAX(version), 0) + 1 FROM shared_health))",
                (deployment, until, reason, self.instance))

        task = asyncio.get_running_loop().create_task(self._send(deployment, write))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, deployment: str, write: Callable[[sqlite3.Connection], None]) -> None:
        try:
            await self._db.run(write)
        except StoreError:
            logger.warning("could not share the health of %s", deployment, exc_info=True)

    async def aclose(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._db.close()


def spend_file_of(store: object) -> str | None:
    """The SQLite file a spend store keeps its budgets in (looking through an outage
    wrapper), or None for any other store."""
    from .._stores.sqlite import SQLiteStore

    inner = getattr(store, "inner", store)
    return inner.path if isinstance(inner, SQLiteStore) else None


def sharing_for(store: object, redis_url: str | None, *, prefix: str, timeout_s: float,
                poll_s: float) -> tuple[RateLimiter, SharedHealthLike | None]:
    """Where a gateway keeps its rate limits and shares its deployment health: the store's
    Redis (server or cluster; with `on_store_error = "allow"` falling back to this process's
    counters while it is down), else the store's SQLite file (the workers of one machine),
    else this process alone."""
    if redis_url:
        limiter = RedisRateLimiter(redis_url, prefix=prefix, timeout_s=timeout_s)
        if hasattr(store, "observer"):  # on_store_error = "allow": the limits go on as well
            from .limiter_outage import OutageTolerantLimiter

            return OutageTolerantLimiter(limiter, getattr(store, "observer", None)), None
        return limiter, None
    path = spend_file_of(store)
    if path is None:
        return MemoryRateLimiter(), None
    return (SQLiteRateLimiter(path, busy_timeout_s=timeout_s),
            SQLiteSharedHealth(path, poll_s=poll_s, busy_timeout_s=timeout_s))
