"""What the Redis store sends, without sending it: key names, Lua scripts, and each operation as
a generator of script calls (the sync and async stores drive the same generators).

Key layout, per budget key `K` and store prefix `P`::

    P{K}:b  hash   spent, reserved (the sum of live reservations), r:<id> -> amount
    P{K}:x  zset   <id> of live reservations, scored by expiry in server milliseconds
    P{K}:s  zset   <id>:<amount> of the settles applied in the last hour (a replay is a no-op)
    P{ledger:DAY}:rows  hash <id>:<amount> -> JSON entry, for the UTC day DAY; with
                        retention_days it expires that long after the day ends
    P{ledger:DAY}:hourly  hash <JSON [hour, tenant, tags, deployment]> -> "requests,failed,
                        prompt tokens,completion tokens,cost" of that hour
                        (expires with the raw rows)
    P{ledger:DAY}:daily   the same per day, kept
    P{ledger}:days      set of the days that have rows

The braces are Redis Cluster hash tags: every key of one budget lives in one hash slot, so each
budget's check-and-hold is one atomic script wherever the cluster puts it. On a single server
every operation is one script over all its keys. On a cluster the keys are grouped by slot and
each group gets one script: `reserve` holds budget by budget and, when a later budget refuses
(or its master is down), releases the holds already taken. A hold is taken only where the
budget had room for it, and released holds only ever made other requests wait, so no budget is
ever overspent; a settle repeated after a partial failure is absorbed by the `s` zset and the
ledger's `HSETNX`, so nothing is counted twice. A prefix that itself holds a hash tag (e.g.
`"{scr}:"`) puts every key in one slot, which a cluster also accepts.

Amounts are integer strings; the scripts compare them as Lua numbers (doubles), which are exact
up to 2**53 nano-dollars, about nine million dollars per budget.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Callable, Generator, Sequence
from typing import Any, NamedTuple

from .._errors import BudgetExceededError, StoreError
from .._ids import new_id
from .._routing.cost import nano_to_usd
from .base import SERVED_OUTCOMES, BudgetKey, BudgetStatus, LedgerEntry, Reservation
from .periods import check_amount, require_aware, status_of, to_epoch, unique_keys
from .rollup import Grain, Rollup, order, start_of

__all__ = ["SCRIPTS", "Call", "KeyNames", "Plan", "decode", "reserve_plan", "rollups_of",
           "settle_plan", "statuses"]

# How long a settle's id is remembered, so that replaying it (after an error that left its
# outcome unknown) does not count it twice.
SETTLED_WINDOW_MS = 3_600_000

_PURGE = """
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

# KEYS: b1 x1 s1 ... bn xn sn [rows hourly daily [days]]; ARGV: id actual n window_ms entry
# day hour_group failed prompt completion cost rows_expireat day_group at1 ... atn.
# Settle, release (actual '0') and record (an id that holds nothing): per budget, unless this id
# was settled there at this amount already (a replay), drop its reservation and add the spend;
# write the ledger row once and add it to its hour's and day's roll-ups (field <group>, value
# "requests,failed,prompt,completion,cost"). With a retention the raw rows and hourly roll-ups
# expire; daily ones stay.
_SETTLE = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local id, actual, n, window = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local done = id .. ':' .. actual
for i = 1, n do
  local b, x, s, at = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i], ARGV[13 + i]
  if not redis.call('ZSCORE', s, done) then
    local amount = redis.call('HGET', b, 'r:' .. id)
    if amount then
      redis.call('HDEL', b, 'r:' .. id)
      if amount ~= '0' then redis.call('HINCRBY', b, 'reserved', '-' .. amount) end
    end
    redis.call('ZREM', x, id)
    if actual ~= '0' then redis.call('HINCRBY', b, 'spent', actual) end
    redis.call('ZREMRANGEBYSCORE', s, '-inf', now - window)
    redis.call('ZADD', s, now, done)
    if at ~= '0' then
      redis.call('EXPIREAT', b, at)
      redis.call('EXPIREAT', s, at)
    end
  end
end
if ARGV[5] ~= '' then
  local rows, hourly, daily = KEYS[3 * n + 1], KEYS[3 * n + 2], KEYS[3 * n + 3]
  if redis.call('HSETNX', rows, done, ARGV[5]) == 1 then
    for _, at in ipairs({{hourly, ARGV[7]}, {daily, ARGV[13]}}) do
      local h, group = at[1], at[2]
      local sums = {1, tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10]),
                    tonumber(ARGV[11])}
      local old = redis.call('HGET', h, group)
      if old then
        local i = 1
        for v in string.gmatch(old, '[^,]+') do
          sums[i] = sums[i] + tonumber(v)
          i = i + 1
        end
      end
      redis.call('HSET', h, group, string.format('%d,%d,%d,%d,%d', unpack(sums)))
    end
    if ARGV[12] ~= '0' then
      redis.call('EXPIREAT', rows, ARGV[12])
      redis.call('EXPIREAT', hourly, ARGV[12])
    end
  end
  if KEYS[3 * n + 4] then redis.call('SADD', KEYS[3 * n + 4], ARGV[6]) end
end
return 1
"""

# KEYS: days; ARGV: day. On a cluster the set of days has a slot of its own.
_ADD_DAY = """
redis.call('SADD', KEYS[1], ARGV[1])
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

SCRIPTS = {"reserve": _RESERVE, "settle": _SETTLE, "status": _STATUS, "add_day": _ADD_DAY}


class Call(NamedTuple):
    """One script to run: its name in `SCRIPTS`, its keys (all in one slot) and arguments."""

    script: str
    keys: list[str]
    args: list[str]


# A plan yields calls and receives each one's reply (or has the call's `StoreError` thrown in);
# what it returns is the operation's result.
Plan = Generator[Call, Any, Any]


class KeyNames:
    """The store's key names, and how keys are grouped into one script call each."""

    def __init__(self, prefix: str, slot_of: Callable[[str], int] | None,
                 retention_days: float | None = None) -> None:
        self.prefix = prefix
        self.slot_of = slot_of  # None: a single server, where any keys go in one script
        self.retention_days = retention_days  # raw rows of a day expire this long after it

    def budget(self, key: str) -> tuple[str, str, str]:
        base = f"{self.prefix}{{{key}}}:"
        return base + "b", base + "x", base + "s"

    def rows(self, day: str) -> str:
        return f"{self.prefix}{{ledger:{day}}}:rows"

    def hourly(self, day: str) -> str:
        return f"{self.prefix}{{ledger:{day}}}:hourly"

    def daily(self, day: str) -> str:
        return f"{self.prefix}{{ledger:{day}}}:daily"

    @property
    def days(self) -> str:
        return f"{self.prefix}{{ledger}}:days"

    def groups(self, keys: Sequence[BudgetKey]) -> list[list[int]]:
        """Indexes of `keys`, grouped so each group's keys share a slot (one group on a server)."""
        if self.slot_of is None:
            return [list(range(len(keys)))] if keys else []
        by_slot: dict[int, list[int]] = {}
        for i, key in enumerate(keys):
            by_slot.setdefault(self.slot_of(self.budget(key.key)[0]), []).append(i)
        return [by_slot[slot] for slot in sorted(by_slot)]


def reserve_plan(names: KeyNames, keys: Sequence[BudgetKey], amount_nano: int,
                 ttl_s: float) -> Plan:
    """Hold `amount_nano` on every key, group by group; undo the holds taken if one refuses."""
    check_amount(amount_nano, "amount_nano")
    unique = unique_keys(keys)
    rid = new_id()
    head = [rid, str(amount_nano), str(max(1, round(ttl_s * 1000)))]
    held: list[list[int]] = []
    seen: dict[int, tuple[int, int]] = {}
    expires_ms = 0
    for group in names.groups(unique):
        call = Call("reserve", [], list(head))
        for i in group:
            call.keys.extend(names.budget(unique[i].key)[:2])
            call.args.extend([str(unique[i].limit_nano), _expire_at(unique[i])])
        try:
            raw = yield call
        except StoreError:  # its outcome is unknown: release it too
            yield from _undo(names, unique, [*held, group], rid)
            raise
        if int(raw[0]) == 0:
            yield from _undo(names, unique, held, rid)
            key = unique[group[int(raw[1]) - 1]]
            raise BudgetExceededError(status_of(key, int(raw[2]), int(raw[3])),
                                      requested_usd=nano_to_usd(amount_nano))
        held.append(group)
        expires_ms = int(raw[1])
        for j, i in enumerate(group):
            seen[i] = (int(raw[2 + 2 * j]), int(raw[3 + 2 * j]))
    statuses = tuple(status_of(key, seen[i][0], seen[i][1] + amount_nano)
                     for i, key in enumerate(unique))
    return Reservation(id=rid, keys=unique, amount_nano=amount_nano,
                       expires_at=expires_ms / 1000, statuses=statuses)


def _undo(names: KeyNames, keys: Sequence[BudgetKey], held: list[list[int]], rid: str) -> Plan:
    """Release the holds already taken; one that cannot be released expires with its TTL."""
    for group in held:
        with contextlib.suppress(StoreError):
            yield _settle_call(names, [keys[i] for i in group], rid, 0, None)


def settle_plan(names: KeyNames, keys: Sequence[BudgetKey], rid: str, actual_nano: int,
                entry: LedgerEntry | None) -> Plan:
    """Replace reservation `rid` with `actual_nano` on every key and write `entry` once.

    Every call is idempotent for `rid`, so the whole plan can be run again after a failure."""
    check_amount(actual_nano, "actual_nano")
    unique = unique_keys(keys)
    groups = names.groups(unique)
    if names.slot_of is None:  # a single server: one script does it all
        yield _settle_call(names, unique, rid, actual_nano, entry, with_days=True)
        return None
    if entry is not None:  # the day first: a listed day with no rows reads as empty
        yield Call("add_day", [names.days], [_day(entry.time)])
    # The ledger row rides with a budget group in its slot, if there is one.
    ledger_slot = names.slot_of(names.rows(_day(entry.time))) if entry is not None else -1
    joined = next((n for n, group in enumerate(groups)
                   if names.slot_of(names.budget(unique[group[0]].key)[0]) == ledger_slot), None)
    for n, group in enumerate(groups):
        yield _settle_call(names, [unique[i] for i in group], rid, actual_nano,
                           entry if n == joined else None)
    if entry is not None and joined is None:
        yield _settle_call(names, [], rid, actual_nano, entry)
    return None


def _settle_call(names: KeyNames, keys: Sequence[BudgetKey], rid: str, actual_nano: int,
                 entry: LedgerEntry | None, *, with_days: bool = False) -> Call:
    call = Call("settle", [], [rid, str(actual_nano), str(len(keys)), str(SETTLED_WINDOW_MS)])
    for key in keys:
        call.keys.extend(names.budget(key.key))
    if entry is None:
        call.args.extend(["", "", "", "0", "0", "0", "0", "0", ""])
    else:
        day = _day(entry.time)
        call.keys.extend([names.rows(day), names.hourly(day), names.daily(day)])
        if with_days:
            call.keys.append(names.days)
        call.args.extend([_encode(entry), day, _group(entry, "hour"),
                          str(int(entry.outcome not in SERVED_OUTCOMES)), str(entry.prompt_tokens),
                          str(entry.completion_tokens), str(entry.cost_nano),
                          _rows_expire_at(names, entry), _group(entry, "day")])
    call.args.extend(_expire_at(key) for key in keys)
    return call


def statuses(keys: Sequence[BudgetKey], groups: list[list[int]],
             replies: list[list[Any]]) -> list[BudgetStatus]:
    """Each key's status, in the order of `keys`, from one status reply per group."""
    held: dict[int, tuple[int, int]] = {}
    for group, raw in zip(groups, replies, strict=True):
        for j, i in enumerate(group):
            held[i] = (int(raw[2 * j]), int(raw[2 * j + 1]))
    return [status_of(key, *held[i]) for i, key in enumerate(keys)]


def _group(entry: LedgerEntry, grain: Grain) -> str:
    # JSON, so no tenant, tag or deployment name can run into the next field.
    return json.dumps([start_of(entry.time, grain).isoformat(), entry.tenant, list(entry.tags),
                       entry.deployment], separators=(",", ":"))


def _rows_expire_at(names: KeyNames, entry: LedgerEntry) -> str:
    if names.retention_days is None:
        return "0"
    day_end = dt.datetime.combine(entry.time.astimezone(dt.UTC).date() + dt.timedelta(days=1),
                                  dt.time(), dt.UTC)
    return str(int((day_end + dt.timedelta(days=names.retention_days)).timestamp()))


def rollups_of(hashes: list[dict[str, str]], since: dt.datetime | None,
               until: dt.datetime | None, tenant: str | None) -> list[Rollup]:
    """The roll-ups in `hashes` (one `hourly` or `daily` hash per day) of the hours (days)
    starting in [since, until), for `tenant` (None: all)."""
    out = []
    for fields in hashes:
        for group, value in fields.items():
            hour, who, tags, deployment = json.loads(group)
            start = dt.datetime.fromisoformat(hour)
            if ((since is None or start >= since) and (until is None or start < until)
                    and (tenant is None or who == tenant)):
                out.append(Rollup(start, who, tuple(tags), deployment,
                                  *map(int, value.split(","))))
    return sorted(out, key=order)


def _expire_at(key: BudgetKey) -> str:
    at = to_epoch(key.expires_at)
    return "0" if at is None else str(int(at) + 1)


def _day(when: dt.datetime) -> str:
    return require_aware(when, "ledger time").astimezone(dt.UTC).date().isoformat()


def days_between(members: Any, since: dt.datetime | None, until: dt.datetime | None) -> list[str]:
    first = _day(since) if since is not None else ""
    last = _day(until) if until is not None else "~"
    return sorted(d for d in members if first <= d <= last)


def _encode(entry: LedgerEntry) -> str:
    return json.dumps({
        "request_id": entry.request_id, "time": entry.time.isoformat(),
        "deployment": entry.deployment, "provider": entry.provider, "model": entry.model,
        "prompt_tokens": entry.prompt_tokens, "completion_tokens": entry.completion_tokens,
        "cost_nano": entry.cost_nano, "outcome": entry.outcome, "tenant": entry.tenant,
        "tags": list(entry.tags), "provider_request_id": entry.provider_request_id,
    }, separators=(",", ":"))


def decode(rows: list[list[str]], since: dt.datetime | None, until: dt.datetime | None,
           tenant: str | None) -> list[LedgerEntry]:
    """The entries in `rows` (one list per day) within [since, until) for `tenant`, by time."""
    entries = []
    for texts in rows:
        for text in texts:
            data = json.loads(text)
            data["time"] = dt.datetime.fromisoformat(data["time"])
            data["tags"] = tuple(data["tags"])
            entries.append(LedgerEntry(**data))
    return sorted((e for e in entries
                   if (since is None or e.time >= since) and (until is None or e.time < until)
                   and (tenant is None or e.tenant == tenant)),
                  key=lambda e: e.time)
