"""A spend store in Redis: budgets that hold across many app instances on many machines.

Each operation is one Lua script, so Redis runs it without interleaving another client's
commands: the reserve script purges expired reservations, checks every key and only then writes
all of them, and a crash between two commands cannot leave half a reservation. Expiry uses the
server's clock (`TIME`), so machines with skewed clocks still agree on when a reservation dies.

Per budget key `K` (with the store's prefix `P`)::

    P b:K  hash   spent, reserved (the sum of live reservations), r:<id> -> amount
    P x:K  zset   <id> scored by its expiry in server milliseconds
    P ledger:<YYYY-MM-DD>  list of JSON entries of that UTC day; P ledger:days  set of the days

Amounts are integer strings; the script compares them as Lua numbers (doubles), which are exact
up to 2**53 nano-dollars, about nine million dollars per budget.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Any

from .._errors import BudgetExceededError, MissingDependencyError
from .._ids import new_id
from .._routing.cost import nano_to_usd
from .base import BudgetKey, BudgetStatus, LedgerEntry, Reservation
from .periods import check_amount, require_aware, status_of, to_epoch, unique_keys

__all__ = ["RedisStore"]

_PURGE = """
if redis.replicate_commands then redis.replicate_commands() end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local function purge(b, x)
  local dead = redis.call('ZRANGEBYSCORE', x, '-inf', now)
  for _, id in ipairs(dead) do
    local amount = redis.call('HGET', b, 'r:' .. id)
    if amount then
      redis.call('HDEL', b, 'r:' .. id)
      if amount ~= '0' then redis.call('HINCRBY', b, 'reserved', '-' .. amount) end
    end
  end
  if #dead > 0 then redis.call('ZREMRANGEBYSCORE', x, '-inf', now) end
  return redis.call('HGET', b, 'spent') or '0', redis.call('HGET', b, 'reserved') or '0'
end
"""

# KEYS: b1 x1 b2 x2 ...; ARGV: id amount ttl_ms limit1 expireat1 limit2 expireat2 ...
# Returns {0, i, spent, reserved} if key i refuses, else {1, expires_ms, spent1, reserved1, ...}.
_RESERVE = _PURGE + """
local id, amount = ARGV[1], ARGV[2]
local n = #KEYS / 2
local seen = {}
for i = 1, n do
  local spent, reserved = purge(KEYS[2 * i - 1], KEYS[2 * i])
  if tonumber(spent) + tonumber(reserved) + tonumber(amount) > tonumber(ARGV[2 + 2 * i]) then
    return {0, i, spent, reserved}
  end
  seen[#seen + 1] = spent
  seen[#seen + 1] = reserved
end
local expires = now + tonumber(ARGV[3])
for i = 1, n do
  local b, x, at = KEYS[2 * i - 1], KEYS[2 * i], ARGV[3 + 2 * i]
  redis.call('HSET', b, 'r:' .. id, amount)
  redis.call('HINCRBY', b, 'reserved', amount)
  redis.call('ZADD', x, expires, id)
  if at ~= '0' then
    redis.call('EXPIREAT', b, at)
    redis.call('EXPIREAT', x, at)
  end
end
return {1, expires, unpack(seen)}
"""

# KEYS: b1 x1 ... bn xn ledger days; ARGV: id ('' = none) actual entry ('' = none) day at1 ...
# Settle, release (actual '0') and record (id '') in one script: drop the reservation if it is
# still there, add the spend whether or not it was, append the ledger entry.
_SETTLE = """
local id, actual, entry = ARGV[1], ARGV[2], ARGV[3]
local n = (#KEYS - 2) / 2
for i = 1, n do
  local b, x = KEYS[2 * i - 1], KEYS[2 * i]
  if id ~= '' then
    local amount = redis.call('HGET', b, 'r:' .. id)
    if amount then
      redis.call('HDEL', b, 'r:' .. id)
      if amount ~= '0' then redis.call('HINCRBY', b, 'reserved', '-' .. amount) end
    end
    redis.call('ZREM', x, id)
  end
  if actual ~= '0' then
    redis.call('HINCRBY', b, 'spent', actual)
    if ARGV[4 + i] ~= '0' then redis.call('EXPIREAT', b, ARGV[4 + i]) end
  end
end
if entry ~= '' then
  redis.call('RPUSH', KEYS[#KEYS - 1], entry)
  redis.call('SADD', KEYS[#KEYS], ARGV[4])
end
return 1
"""

# KEYS: b1 x1 ...; returns {spent1, reserved1, ...} after dropping expired reservations.
_STATUS = _PURGE + """
local out = {}
for i = 1, #KEYS / 2 do
  local spent, reserved = purge(KEYS[2 * i - 1], KEYS[2 * i])
  out[#out + 1] = spent
  out[#out + 1] = reserved
end
return out
"""


class RedisStore:
    """Spend, reservations and the ledger in Redis, atomic across every client of one server.

        store = RedisStore("redis://localhost:6379/0", prefix="myapp:")
        router = Router(policy=policy, store=store)

    Sync methods use `redis.Redis`, the `a`-prefixed twins `redis.asyncio.Redis` (use those from
    one event loop). `Reservation.expires_at` is in the server's clock. For Redis Cluster, give a
    prefix with a hash tag, e.g. `"{scr}:"`, so a request's keys share one slot. Needs the
    `redis` extra: `pip install 'starcoder-router[redis]'`.
    """

    def __init__(self, url: str, *, prefix: str = "scr:") -> None:
        # Imported here so the package imports without the optional `redis` extra.
        try:
            import redis
            import redis.asyncio
        except ImportError as exc:
            raise MissingDependencyError("RedisStore", "redis", "redis") from exc
        self.prefix = prefix
        self._sync = redis.Redis.from_url(url, decode_responses=True)
        self._async = redis.asyncio.Redis.from_url(url, decode_responses=True)
        # register_script sends EVALSHA and loads the script only when the server lacks it.
        self._reserve, self._areserve = (self._sync.register_script(_RESERVE),
                                         self._async.register_script(_RESERVE))
        self._settle, self._asettle = (self._sync.register_script(_SETTLE),
                                       self._async.register_script(_SETTLE))
        self._status, self._astatus = (self._sync.register_script(_STATUS),
                                       self._async.register_script(_STATUS))

    def reserve(self, keys: Sequence[BudgetKey], amount_nano: int, ttl_s: float) -> Reservation:
        keys, names, args = self._reserve_call(keys, amount_nano, ttl_s)
        return _reservation(keys, amount_nano, args[0], self._reserve(keys=names, args=args))

    def settle(self, reservation: Reservation, actual_nano: int,
               entry: LedgerEntry | None = None) -> None:
        self._settle(*self._settle_call(reservation.keys, reservation.id, actual_nano, entry))

    def release(self, reservation: Reservation, entry: LedgerEntry | None = None) -> None:
        self._settle(*self._settle_call(reservation.keys, reservation.id, 0, entry))

    def record(self, keys: Sequence[BudgetKey], actual_nano: int,
               entry: LedgerEntry | None = None) -> None:
        self._settle(*self._settle_call(keys, "", actual_nano, entry))

    def status(self, keys: Sequence[BudgetKey]) -> list[BudgetStatus]:
        keys = unique_keys(keys)
        return _statuses(keys, self._status(keys=self._names(keys)) if keys else [])

    def spent(self, key: str) -> int:
        return int(self._sync.hget(self.prefix + "b:" + key, "spent") or 0)

    def ledger(self, *, since: dt.datetime | None = None, until: dt.datetime | None = None,
               tenant: str | None = None) -> list[LedgerEntry]:
        days = self._days(self._sync.smembers(self.prefix + "ledger:days"), since, until)
        with self._sync.pipeline(transaction=False) as pipe:
            for day in days:
                pipe.lrange(self.prefix + "ledger:" + day, 0, -1)
            lists = pipe.execute()
        return _select(lists, since, until, tenant)

    def close(self) -> None:
        """Close the sync client's connections (`aclose` closes both clients)."""
        self._sync.close()

    async def areserve(self, keys: Sequence[BudgetKey], amount_nano: int,
                       ttl_s: float) -> Reservation:
        keys, names, args = self._reserve_call(keys, amount_nano, ttl_s)
        return _reservation(keys, amount_nano, args[0],
                            await self._areserve(keys=names, args=args))

    async def asettle(self, reservation: Reservation, actual_nano: int,
                      entry: LedgerEntry | None = None) -> None:
        await self._asettle(*self._settle_call(reservation.keys, reservation.id, actual_nano,
                                               entry))

    async def arelease(self, reservation: Reservation, entry: LedgerEntry | None = None) -> None:
        await self._asettle(*self._settle_call(reservation.keys, reservation.id, 0, entry))

    async def arecord(self, keys: Sequence[BudgetKey], actual_nano: int,
                      entry: LedgerEntry | None = None) -> None:
        await self._asettle(*self._settle_call(keys, "", actual_nano, entry))

    async def astatus(self, keys: Sequence[BudgetKey]) -> list[BudgetStatus]:
        keys = unique_keys(keys)
        return _statuses(keys, await self._astatus(keys=self._names(keys)) if keys else [])

    async def aspent(self, key: str) -> int:
        return int(await self._async.hget(self.prefix + "b:" + key, "spent") or 0)

    async def aledger(self, *, since: dt.datetime | None = None, until: dt.datetime | None = None,
                      tenant: str | None = None) -> list[LedgerEntry]:
        days = self._days(await self._async.smembers(self.prefix + "ledger:days"), since, until)
        async with self._async.pipeline(transaction=False) as pipe:
            for day in days:
                pipe.lrange(self.prefix + "ledger:" + day, 0, -1)
            lists = await pipe.execute()
        return _select(lists, since, until, tenant)

    async def aclose(self) -> None:
        await self._async.aclose()
        self._sync.close()

    def _names(self, keys: Sequence[BudgetKey]) -> list[str]:
        names = []
        for key in keys:
            names += [self.prefix + "b:" + key.key, self.prefix + "x:" + key.key]
        return names

    def _reserve_call(self, keys: Sequence[BudgetKey], amount_nano: int,
                      ttl_s: float) -> tuple[tuple[BudgetKey, ...], list[str], list[str]]:
        check_amount(amount_nano, "amount_nano")
        unique = unique_keys(keys)
        args = [new_id(), str(amount_nano), str(max(1, round(ttl_s * 1000)))]
        for key in unique:
            args += [str(key.limit_nano), _expire_at(key)]
        return unique, self._names(unique), args

    def _settle_call(self, keys: Sequence[BudgetKey], rid: str, actual_nano: int,
                     entry: LedgerEntry | None) -> tuple[list[str], list[str]]:
        check_amount(actual_nano, "actual_nano")
        keys = unique_keys(keys)
        day = _day(entry.time) if entry is not None else ""
        names = [*self._names(keys), self.prefix + "ledger:" + day, self.prefix + "ledger:days"]
        args = [rid, str(actual_nano), _encode(entry) if entry is not None else "", day]
        return names, args + [_expire_at(key) for key in keys]

    @staticmethod
    def _days(members: Any, since: dt.datetime | None, until: dt.datetime | None) -> list[str]:
        first = _day(since) if since is not None else ""
        last = _day(until) if until is not None else "~"
        return sorted(d for d in members if first <= d <= last)


def _reservation(keys: tuple[BudgetKey, ...], amount_nano: int, rid: str,
                 raw: list[Any]) -> Reservation:
    if int(raw[0]) == 0:
        key = keys[int(raw[1]) - 1]
        raise BudgetExceededError(status_of(key, int(raw[2]), int(raw[3])),
                                  requested_usd=nano_to_usd(amount_nano))
    held = [int(v) for v in raw[2:]]
    statuses = tuple(status_of(key, held[2 * i], held[2 * i + 1] + amount_nano)
                     for i, key in enumerate(keys))
    return Reservation(id=rid, keys=keys, amount_nano=amount_nano,
                       expires_at=int(raw[1]) / 1000, statuses=statuses)


def _statuses(keys: Sequence[BudgetKey], raw: list[Any]) -> list[BudgetStatus]:
    return [status_of(key, int(raw[2 * i]), int(raw[2 * i + 1])) for i, key in enumerate(keys)]


def _expire_at(key: BudgetKey) -> str:
    at = to_epoch(key.expires_at)
    return "0" if at is None else str(int(at) + 1)


def _day(when: dt.datetime) -> str:
    return require_aware(when, "ledger time").astimezone(dt.UTC).date().isoformat()


def _encode(entry: LedgerEntry) -> str:
    return json.dumps({
        "request_id": entry.request_id, "time": entry.time.isoformat(),
        "deployment": entry.deployment, "provider": entry.provider, "model": entry.model,
        "prompt_tokens": entry.prompt_tokens, "completion_tokens": entry.completion_tokens,
        "cost_nano": entry.cost_nano, "outcome": entry.outcome, "tenant": entry.tenant,
        "tags": list(entry.tags), "provider_request_id": entry.provider_request_id,
    }, separators=(",", ":"))


def _decode(text: str) -> LedgerEntry:
    data = json.loads(text)
    data["time"] = dt.datetime.fromisoformat(data["time"])
    data["tags"] = tuple(data["tags"])
    return LedgerEntry(**data)


def _select(lists: list[list[str]], since: dt.datetime | None, until: dt.datetime | None,
            tenant: str | None) -> list[LedgerEntry]:
    entries = [_decode(text) for texts in lists for text in texts]
    return sorted((e for e in entries
                   if (since is None or e.time >= since) and (until is None or e.time < until)
                   and (tenant is None or e.tenant == tenant)),
                  key=lambda e: e.time)
