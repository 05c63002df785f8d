"""Tenant rate limits in Redis, and how a request's rate-limit work rides with its spend-store
calls so that admitting it costs one round trip and settling it one.

A tenant's minute is one hash, `P{rl:TENANT}:WINDOW` (fields `requests`, `tokens`). `ADMIT`
counts the request and reserves its tokens when they fit; `SETTLE` books the real usage in place
of the reservation. Each is one script over that one key, so on a Redis Cluster it runs
atomically on the master that owns the tenant's slot.

Riding (one redis-server only). The gateway admits a request before routing it, and the router
reserves its budget just before the upstream call, so done separately these are two round
trips, and settling the spend and then the tokens two more. Instead the gateway leaves a `Ride`
in the request's context (`RIDE`); the Redis store, when it sends the request's first reserve,
runs `ADMIT` and the reserve in one script (`admit_reserve`: the limit first, and the budgets
only if the limit admits), and when it sends the request's booking (a settle or record with a
ledger entry), runs the token settlement in the same script (`settle_limit`). A refused limit
makes the reserve fail with `RateLimitRefused`; the gateway answers 429 from the ride's
verdict. The gateway lets a request ride only when every upstream call is preceded by a
reserve, i.e. when a budget applies to every request of the tenant; otherwise it admits alone
(still one round trip).

On a cluster the tenant's minute and each budget live in different slots (a budget's hash tag
is its own key, so no tag can bring one tenant's budgets and limits together), and no script
may span slots. There the limit's own script is sent at the same time as the first budget
slot's reserve (`Ride.beside`), to its own master, and the token settlement at the same time
as the booking: the limit adds a round trip to each, but no wait. Should the limit refuse,
the reserve fails as when a budget refuses, and the holds it took are released (the budgets'
compensation in `redis_plan`): a hold only ever made others wait, so nothing is overspent.
"""

from __future__ import annotations

import contextvars
from typing import Any, Protocol

from .._errors import StoreError

__all__ = ["ADMIT", "RIDE", "SETTLE", "RateLimitRefused", "Ride", "limit_key"]

# Count the request, then reserve the tokens only if they fit: one script, so concurrent
# gateways sharing the Redis cannot both see room for the same tokens.
# KEYS: minute; ARGV: requests_per_minute tokens_per_minute want ttl_s (0: no limit).
# Returns 0 (admitted), 1 (over its requests) or 2 (over its tokens).
ADMIT = """
local requests = redis.call('HINCRBY', KEYS[1], 'requests', 1)
redis.call('EXPIRE', KEYS[1], ARGV[4])
local rpm = tonumber(ARGV[1])
if rpm > 0 and requests > rpm then return 1 end
local tpm = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
if tpm > 0 and want > 0 then
  local used = tonumber(redis.call('HGET', KEYS[1], 'tokens') or '0')
  if used + want > tpm then return 2 end
  redis.call('HINCRBY', KEYS[1], 'tokens', want)
end
return 0
"""
# A settlement whose window has expired has nothing left to correct (and must not recreate
# the key without its expiry). KEYS: minute; ARGV: delta.
SETTLE = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  local left = redis.call('HINCRBY', KEYS[1], 'tokens', ARGV[1])
  if left < 0 then redis.call('HSET', KEYS[1], 'tokens', 0) end
end
return 0
"""

# The riding forms: the rider's key and arguments come first and are taken off KEYS and ARGV
# (ordinary Lua tables), so the store's script runs unchanged on the rest.
_ADMIT_FIRST = """
local limit_key = table.remove(KEYS, 1)
local limit_args = {table.remove(ARGV, 1), table.remove(ARGV, 1), table.remove(ARGV, 1),
                    table.remove(ARGV, 1)}
local verdict = (function(KEYS, ARGV)
""" + ADMIT + """
end)({limit_key}, limit_args)
if verdict ~= 0 then return {-1, verdict} end
"""
_SETTLE_FIRST = """
local limit_key = table.remove(KEYS, 1)
local limit_delta = table.remove(ARGV, 1)
if limit_delta ~= '0' then
  (function(KEYS, ARGV)
""" + SETTLE + """
  end)({limit_key}, {limit_delta})
end
"""


def riding_scripts(reserve: str, settle: str) -> dict[str, str]:
    """The store's reserve and settle scripts with a rate limit riding in front, and the
    limit's own scripts to send beside them on a cluster."""
    return {"admit_reserve": _ADMIT_FIRST + reserve, "settle_limit": _SETTLE_FIRST + settle,
            "limit_admit": ADMIT, "limit_settle": SETTLE}


def limit_key(prefix: str, tenant: str, window: int) -> str:
    """One key per script call, so it is in one slot whatever the name holds; the tag keeps a
    tenant's minutes together."""
    return f"{prefix}{{rl:{tenant}}}:{window}"


class RateLimitRefused(StoreError):
    """The rate limit that rode with a reserve refused the request (the gateway answers 429
    from the ride's verdict). `took_hold`: the reserve it rode with (beside it, on a cluster)
    held its budgets all the same, and they must be released."""

    took_hold = False


class _Hold(Protocol):
    """The token hold a ride settles (`tenants.TokenHold`)."""

    def due(self) -> int: ...

    def book(self, delta: int) -> None: ...


class Ride:
    """One request's rate-limit work, waiting for its spend store's calls to carry it.

    `admit_args` are sent with the first reserve (then None); `verdict` is its answer (0
    admitted, 1 over requests, 2 over tokens), or None while not sent or when its reply was
    lost. `hold`'s due token correction goes with the booking. `done` ends the ride: a context
    that outlives the request carries nothing more.
    """

    __slots__ = ("admit_args", "done", "hold", "key", "lost", "verdict")

    def __init__(self, key: str, admit_args: list[str], hold: _Hold | None):
        self.key = key
        self.admit_args: list[str] | None = admit_args
        self.hold = hold
        self.verdict: int | None = None
        self.lost = False  # the admission was sent but its reply never came
        self.done = False

    def board(self, script: str, keys: list[str], args: list[str],
              has_entry: bool) -> tuple[str, list[str], list[str]] | None:
        """The riding form of a store call, or None when nothing rides with it."""
        if self.done:
            return None
        if script == "reserve" and self.admit_args is not None:
            args_, self.admit_args = self.admit_args, None
            return "admit_reserve", [self.key, *keys], [*args_, *args]
        if script == "settle" and has_entry and self.hold is not None and self.verdict == 0:
            delta = self.hold.due()
            if delta:
                # Booked before it is sent: should the reply be lost, the minute keeps the
                # larger hold (a stricter limit), never a correction applied twice.
                self.hold.book(delta)
                return "settle_limit", [self.key, *keys], [str(delta), *args]
        return None

    def beside(self, script: str, has_entry: bool) -> tuple[str, list[str], list[str]] | None:
        """On a cluster: the limit's own script to send at the same time as this store call
        (its key is in another slot), or None."""
        if self.done:
            return None
        if script == "reserve" and self.admit_args is not None:
            args, self.admit_args = self.admit_args, None
            return "limit_admit", [self.key], args
        if script == "settle" and has_entry and self.hold is not None and self.verdict == 0:
            delta = self.hold.due()
            if delta:
                self.hold.book(delta)  # as in `board`: a lost reply errs on the strict side
                return "limit_settle", [self.key], [str(delta)]
        return None

    def alight(self, script: str, reply: Any) -> Any:
        """The store's own reply from a riding call's; a refused admission raises."""
        if script == "admit_reserve":
            if int(reply[0]) == -1:
                self.verdict = int(reply[1])
                raise RateLimitRefused("the tenant's rate limit refused the request")
            self.verdict = 0
        return reply

    def failed(self, script: str) -> None:
        """A riding call's reply was lost: the admission's outcome is unknown."""
        if script in ("admit_reserve", "limit_admit"):
            self.lost = True

    def answered(self, script: str, reply: Any) -> StoreError | None:
        """The limit's own reply (`beside`): what to raise into the store's operation, if
        anything. A refusal undoes the holds the operation took, as any failed reserve does."""
        if script != "limit_admit":
            return None
        self.verdict = int(reply)
        if self.verdict:
            return RateLimitRefused("the tenant's rate limit refused the request")
        return None


RIDE: contextvars.ContextVar[Ride | None] = contextvars.ContextVar(
    "starcoder_router_ride", default=None)
