"""A spend store in Redis or Redis Cluster: budgets that hold across many app instances on many
machines.

Each operation is a Lua script, so Redis runs it without interleaving another client's commands:
the reserve script purges expired reservations, checks every key and only then writes them, and
a crash between two commands cannot leave half a reservation. Expiry uses the server's clock
(`TIME`), so machines with skewed clocks still agree on when a reservation dies.

On a cluster (`redis+cluster://host:port`, or `cluster=True`) every budget's keys share one hash
tag, so each budget's check-and-hold is one atomic script on the master that owns it; a request
under several budgets holds them one slot at a time and releases what it took if a later one
refuses. `redis_plan` has the key layout and why no budget can be overspent that way.

On one server the async scripts that concurrent callers send in the same turn of the event loop
go out as one pipeline (`redis_batch`), and a gateway request's rate limit rides in its
reserve's and booking's scripts (`redis_limits`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from typing import Any

from .._errors import MissingDependencyError, StoreError
from .._ids import new_id
from .base import BudgetKey, BudgetStatus, LedgerEntry, Reservation
from .periods import unique_keys
from .redis_batch import ScriptBatcher
from .redis_limits import RIDE, RateLimitRefused, Ride, riding_scripts
from .redis_plan import (
    SCRIPTS,
    Call,
    KeyNames,
    Plan,
    days_between,
    decode,
    reserve_plan,
    rollups_of,
    settle_plan,
    statuses,
)
from .rollup import Grain, Rollup

__all__ = ["RedisStore", "async_client", "bounded", "cluster_url", "is_cluster_url", "origin_of",
           "plain_url"]

_CLUSTER_SCHEMES = {"redis+cluster://": "redis://", "rediss+cluster://": "rediss://"}


def is_cluster_url(url: str) -> bool:
    return url.startswith(tuple(_CLUSTER_SCHEMES))


def plain_url(url: str) -> str:
    """`url` without its cluster scheme (`redis+cluster://h:p` -> `redis://h:p`)."""
    for scheme, plain in _CLUSTER_SCHEMES.items():
        if url.startswith(scheme):
            return plain + url[len(scheme):]
    return url


def cluster_url(url: str) -> str:
    """`url` spelt as a cluster URL (`redis://h:p` -> `redis+cluster://h:p`)."""
    for scheme, plain in _CLUSTER_SCHEMES.items():
        if url.startswith(plain):
            return scheme + url[len(plain):]
    return url


def origin_of(url: str) -> str:
    """The server (and database) a URL points at, without its credentials: what two clients
    compare to know they talk to the same Redis."""
    from urllib.parse import urlsplit

    parts = urlsplit(plain_url(url.strip()))
    try:
        port = parts.port
    except ValueError:  # not a port: the URL is refused when a client is made from it
        port = None
    return f"{parts.scheme}://{parts.hostname}:{port}{parts.path or '/0'}?{parts.query}"


def async_client(url: str, *, timeout_s: float) -> Any:
    """A `redis.asyncio` client for a server URL, or a `RedisCluster` for a cluster URL (the
    gateway's rate limits and shared health use these; they speak the store's URL), waiting at
    most `timeout_s` to connect and for each reply."""
    import redis.asyncio
    import redis.asyncio.cluster

    for scheme, plain in _CLUSTER_SCHEMES.items():
        if url.startswith(scheme):
            return redis.asyncio.cluster.RedisCluster.from_url(
                plain + url[len(scheme):], decode_responses=True, socket_timeout=timeout_s,
                socket_connect_timeout=timeout_s)
    return redis.asyncio.Redis.from_url(url, decode_responses=True,
                                        **bounded(timeout_s, asynchronous=True))


def bounded(timeout_s: float, *, asynchronous: bool) -> dict[str, Any]:
    """Keyword arguments for a `redis.Redis` (or `redis.asyncio.Redis`) client that waits at
    most `timeout_s` to connect and for each reply. redis-py waits for ever by default, and
    since 6.0 retries a timed-out command three times with backoff, which would multiply the
    bound; a dropped connection is still retried once, at once (a restarted server)."""
    import redis.exceptions

    once = (redis.exceptions.ConnectionError,)
    if asynchronous:
        from redis.asyncio.retry import Retry as AsyncRetry
        from redis.backoff import NoBackoff

        retry: Any = AsyncRetry(NoBackoff(), 1, supported_errors=once)
    else:
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        retry = Retry(NoBackoff(), 1, supported_errors=once)
    return {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s, "retry": retry}


class RedisStore:
    """Spend, reservations and the ledger in Redis, atomic across every client of one server
    or one cluster.

        store = RedisStore("redis://localhost:6379/0", prefix="myapp:")
        store = RedisStore("redis+cluster://10.0.0.5:7000")  # any node of a Redis Cluster
        router = Router(policy=policy, store=store)

    Ledger rows are also summed per hour (`rollups()`); with `retention_days` a day's raw rows
    expire that long after the day ends, and the roll-ups stay. Sync methods use `redis.Redis`
    (`redis.cluster.RedisCluster`), the `a`-prefixed twins their
    `redis.asyncio` counterparts (use those from one event loop). `Reservation.expires_at` is in
    the server's clock. Every Redis failure is raised as a `StoreError`, a server that does not
    answer within `timeout_s` (connect, then each reply) included. Needs the `redis`
    extra: `pip install 'starcoder-router[redis]'`.
    """

    def __init__(self, url: str, *, prefix: str = "scr:", cluster: bool = False,
                 retention_days: float | None = None, timeout_s: float = 2.0) -> None:
        # Imported here so the package imports without the optional `redis` extra.
        try:
            import redis
            import redis.asyncio
            import redis.asyncio.cluster
            import redis.cluster
            from redis.crc import key_slot
        except ImportError as exc:
            raise MissingDependencyError("RedisStore", "redis", "redis") from exc
        self.prefix = prefix
        self.cluster = cluster or is_cluster_url(url)
        self.timeout_s = timeout_s
        # Without these redis-py waits for ever on a server that accepts and never answers.
        bounds = {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s}
        self._errors: tuple[type[BaseException], ...] = (
            redis.RedisError, redis.exceptions.RedisClusterException)
        for scheme, plain in _CLUSTER_SCHEMES.items():
            url = url.replace(scheme, plain, 1) if url.startswith(scheme) else url
        self._sync: Any
        self._async: Any
        try:
            if self.cluster:
                self._sync = redis.cluster.RedisCluster.from_url(
                    url, decode_responses=True, **bounds)
                self._async = redis.asyncio.cluster.RedisCluster.from_url(
                    url, decode_responses=True, **bounds)
            else:
                self._sync = redis.Redis.from_url(url, decode_responses=True,
                                                  **bounded(timeout_s, asynchronous=False))
                self._async = redis.asyncio.Redis.from_url(url, decode_responses=True,
                                                           **bounded(timeout_s, asynchronous=True))
        except self._errors as exc:
            raise _store_error(exc, "connect to") from exc
        self._names = KeyNames(prefix, (lambda k: int(key_slot(k.encode())))
                               if self.cluster else None, retention_days)
        # Which server this is, without keeping its URL (it may hold a password): the gateway
        # lets rate limits ride with this store's calls only when they share the server.
        self.origin = origin_of(url)
        # register_script sends EVALSHA and loads the script only when the server lacks it.
        self._scripts = {name: self._sync.register_script(text)
                         for name, text in SCRIPTS.items()}
        texts = {**SCRIPTS, **riding_scripts(SCRIPTS["reserve"], SCRIPTS["settle"])}
        self._ascripts = {name: self._async.register_script(text)
                          for name, text in texts.items()}
        # On one server, concurrent requests' scripts share pipelined writes.
        self._batch = None if self.cluster else ScriptBatcher(self._async, self._ascripts)

    def reserve(self, keys: Sequence[BudgetKey], amount_nano: int, ttl_s: float) -> Reservation:
        reservation: Reservation = self._drive(reserve_plan(self._names, keys, amount_nano,
                                                            ttl_s))
        return reservation

    def settle(self, reservation: Reservation, actual_nano: int,
               entry: LedgerEntry | None = None) -> None:
        self._drive(settle_plan(self._names, reservation.keys, reservation.id, actual_nano, entry))

    def release(self, reservation: Reservation, entry: LedgerEntry | None = None) -> None:
        self._drive(settle_plan(self._names, reservation.keys, reservation.id, 0, entry))

    def record(self, keys: Sequence[BudgetKey], actual_nano: int,
               entry: LedgerEntry | None = None) -> None:
        self._drive(settle_plan(self._names, keys, new_id(), actual_nano, entry))

    def status(self, keys: Sequence[BudgetKey]) -> list[BudgetStatus]:
        keys = unique_keys(keys)
        groups = self._names.groups(keys)
        return statuses(keys, groups, [self._call("status", self._status_keys(keys, group))
                                       for group in groups])

    def spent(self, key: str) -> int:
        try:
            return int(self._sync.hget(self._names.budget(key)[0], "spent") or 0)
        except self._errors as exc:
            raise _store_error(exc) from exc

    def ledger(self, *, since: dt.datetime | None = None, until: dt.datetime | None = None,
               tenant: str | None = None) -> list[LedgerEntry]:
        try:
            days = days_between(self._sync.smembers(self._names.days), since, until)
            with self._sync.pipeline(transaction=False) as pipe:
                for day in days:
                    pipe.hvals(self._names.rows(day))
                rows = pipe.execute()
        except self._errors as exc:
            raise _store_error(exc) from exc
        return decode(rows, since, until, tenant)

    def rollups(self, *, since: dt.datetime | None = None, until: dt.datetime | None = None,
                tenant: str | None = None, grain: Grain = "hour") -> list[Rollup]:
        """The hourly (or daily) roll-ups of the hours (days) that start in [since, until);
        daily ones outlive the raw rows and hourly ones, which expire after `retention_days`."""
        hash_of = self._names.hourly if grain == "hour" else self._names.daily
        try:
            days = days_between(self._sync.smembers(self._names.days), since, until)
            with self._sync.pipeline(transaction=False) as pipe:
                for day in days:
                    pipe.hgetall(hash_of(day))
                hashes = pipe.execute()
        except self._errors as exc:
            raise _store_error(exc) from exc
        return rollups_of(hashes, since, until, tenant)

    def close(self) -> None:
        """Close the sync client's connections (`aclose` closes both clients)."""
        self._sync.close()

    async def areserve(self, keys: Sequence[BudgetKey], amount_nano: int,
                       ttl_s: float) -> Reservation:
        reservation: Reservation = await self._adrive(
            reserve_plan(self._names, keys, amount_nano, ttl_s))
        return reservation

    async def asettle(self, reservation: Reservation, actual_nano: int,
                      entry: LedgerEntry | None = None) -> None:
        await self._adrive(settle_plan(self._names, reservation.keys, reservation.id,
                                       actual_nano, entry))

    async def arelease(self, reservation: Reservation, entry: LedgerEntry | None = None) -> None:
        await self._adrive(settle_plan(self._names, reservation.keys, reservation.id, 0, entry))

    async def arecord(self, keys: Sequence[BudgetKey], actual_nano: int,
                      entry: LedgerEntry | None = None) -> None:
        await self._adrive(settle_plan(self._names, keys, new_id(), actual_nano, entry))

    async def astatus(self, keys: Sequence[BudgetKey]) -> list[BudgetStatus]:
        keys = unique_keys(keys)
        groups = self._names.groups(keys)
        return statuses(keys, groups, [await self._acall("status", self._status_keys(keys, group))
                                       for group in groups])

    async def aspent(self, key: str) -> int:
        try:
            return int(await self._async.hget(self._names.budget(key)[0], "spent") or 0)
        except self._errors as exc:
            raise _store_error(exc) from exc

    async def aledger(self, *, since: dt.datetime | None = None, until: dt.datetime | None = None,
                      tenant: str | None = None) -> list[LedgerEntry]:
        try:
            days = days_between(await self._async.smembers(self._names.days), since, until)
            async with self._async.pipeline(transaction=False) as pipe:
                for day in days:
                    pipe.hvals(self._names.rows(day))
                rows = await pipe.execute()
        except self._errors as exc:
            raise _store_error(exc) from exc
        return decode(rows, since, until, tenant)

    async def aclose(self) -> None:
        if self._batch is not None:
            await self._batch.aclose()
        await self._async.aclose()
        self._sync.close()

    # One driver per twin: run a plan's calls, hand each reply (or failure) back to it.

    def _drive(self, plan: Plan) -> Any:
        reply: Any = None
        error: StoreError | None = None
        while True:
            try:
                call = plan.send(reply) if error is None else plan.throw(error)
            except StopIteration as done:
                return done.value
            try:
                reply, error = self._scripts[call.script](keys=call.keys, args=call.args), None
            except self._errors as exc:
                reply, error = None, _store_error(exc)

    async def _adrive(self, plan: Plan) -> Any:
        # A gateway request's rate limit rides with the call (`redis_limits`): in the same
        # script on one server, beside it on a cluster.
        ride = RIDE.get()
        reply: Any = None
        error: StoreError | None = None
        while True:
            try:
                call = plan.send(reply) if error is None else plan.throw(error)
            except StopIteration as done:
                return done.value
            has_entry = len(call.args) > 4 and call.args[4] != ""
            if ride is not None and self.cluster:
                beside = ride.beside(call.script, has_entry)
                if beside is not None:
                    reply, error = await self._beside(call, beside, ride)
                    continue
            riding = None if ride is None or self.cluster else ride.board(
                call.script, call.keys, call.args, has_entry=has_entry)
            script, keys, args = riding or call
            try:
                reply, error = await (
                    self._batch.run(script, keys, args) if self._batch is not None
                    else self._ascripts[script](keys=keys, args=args)), None
            except self._errors as exc:
                reply, error = None, _store_error(exc)
                if riding is not None and ride is not None:
                    ride.failed(script)
                continue
            if riding is not None and ride is not None:
                try:
                    reply = ride.alight(script, reply)
                except StoreError as refused:
                    reply, error = None, refused

    async def _beside(self, call: Call, beside: tuple[str, list[str], list[str]],
                      ride: Ride) -> tuple[Any, StoreError | None]:
        """Send `call` and the limit's script `beside` it at once (two masters); the reply for
        the store's operation, or the error to raise into it."""
        script, keys, args = beside
        replies: tuple[Any, Any] = await asyncio.gather(
            self._ascripts[call.script](keys=call.keys, args=call.args),
            self._ascripts[script](keys=keys, args=args), return_exceptions=True)
        mine, limit = replies
        error: StoreError | None = None
        if isinstance(limit, BaseException):
            if not isinstance(limit, self._errors):
                raise limit
            ride.failed(script)
            if script == "limit_admit":  # the limit is unknown: refuse, releasing the holds
                error = _store_error(limit)
        else:
            error = ride.answered(script, limit)
        if isinstance(mine, BaseException):
            if not isinstance(mine, self._errors):
                raise mine
            return None, _store_error(mine)
        if isinstance(error, RateLimitRefused):  # did the reserve beside it hold its budgets?
            error.took_hold = call.script == "reserve" and int(mine[0]) == 1
        return (None, error) if error is not None else (mine, None)

    def _status_keys(self, keys: Sequence[BudgetKey], group: list[int]) -> list[str]:
        return [name for i in group for name in self._names.budget(keys[i].key)[:2]]

    def _call(self, script: str, keys: list[str]) -> list[Any]:
        try:
            return list(self._scripts[script](keys=keys, args=[]))
        except self._errors as exc:
            raise _store_error(exc) from exc

    async def _acall(self, script: str, keys: list[str]) -> list[Any]:
        try:
            return list(await self._ascripts[script](keys=keys, args=[]))
        except self._errors as exc:
            raise _store_error(exc) from exc


def _store_error(exc: BaseException, action: str = "reach") -> StoreError:
    # The message names the failure, never a key, prompt or credential in the URL.
    error = StoreError(f"could not {action} the Redis spend store: {type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error
