"""Who is calling, and whether they may call now: bearer keys → tenants, and rate limits.

Keys are kept only as SHA-256 digests. A presented key is hashed and compared with every
configured digest by `hmac.compare_digest`, without stopping at the first match, so the time
taken says nothing about which digest (or how much of one) matched.

Rate limits count requests and tokens per tenant in fixed one-minute windows. With a Redis spend
store the counters live in the same Redis (server or cluster), so every gateway instance shares
them; with a SQLite store, in its file (`local_share.py`), so the workers of one machine share
them; with a memory store, in the process. Refused requests count too: a client that keeps
hammering stays limited.

In Redis one tenant's minute is one hash, `P{rl:TENANT}:WINDOW` (P the store's prefix, WINDOW
the minute since the epoch) with fields `requests` and `tokens`. Admit and settle are each one
Lua script over that one key (`_stores/redis_limits.py`), so on a Redis Cluster they run
atomically on the master that owns the tenant's slot; the hash tag keeps every minute of one
tenant on that master. On one redis-server that also holds the spend store they ride in the
store's own scripts (`admission.py`): one round trip admits a request, one settles it.

Tokens are reserved before the call, as budgets are: a request holds the most it can use (its
prompt's bound plus its output cap) and is refused when that does not fit in what the minute has
left, so concurrent requests can never overrun the limit together. When it ends, however it
ends, its `TokenHold` is settled with the real usage, which gives the rest back.

Example::

    tenants = Tenants([TenantSettings(name="acme", key_sha256=hash_key("sk-acme"))])
    tenant = tenants.authenticate("Bearer sk-acme")      # -> the "acme" settings
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from .._errors import StoreError
from .._stores import DEFAULT_REDIS_TIMEOUT_S
from .._stores.redis_limits import ADMIT, SETTLE, Ride, limit_key
from .problems import GatewayError, Problem
from .settings import TenantSettings

__all__ = [
    "MemoryRateLimiter",
    "RateLimiter",
    "RedisRateLimiter",
    "Tenants",
    "TokenHold",
    "hash_key",
    "tokens_to_hold",
]

WINDOW_S = 60.0


def hash_key(key: str) -> str:
    """The hex SHA-256 digest the config stores instead of the key."""
    return hashlib.sha256(key.encode()).hexdigest()


# What a prompt template may add around the caller's text (FIM tokens, chat roles), per request
# and per message, on top of the text's UTF-8 length.
_TEMPLATE_TOKENS = 32
_MESSAGE_TOKENS = 16


def tokens_to_hold(fields: Mapping[str, Any]) -> int:
    """The most tokens a request can use: a bound on its prompt (a byte-level BPE token covers
    at least one byte, so every text's UTF-8 length, plus the template's share) and its output
    cap. A bound, not an estimate: a limit reserved this way is never overrun."""
    output = fields.get("max_tokens")
    total = _TEMPLATE_TOKENS + (output if isinstance(output, int) and output > 0 else 0)
    stack: list[Any] = [v for k, v in fields.items() if k != "max_tokens"]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            total += len(value.encode("utf-8", "surrogatepass"))
        elif isinstance(value, Mapping):
            total += _MESSAGE_TOKENS
            stack.extend(value.values())
        elif isinstance(value, list | tuple):
            stack.extend(value)
        elif hasattr(value, "model_dump"):
            stack.append(value.model_dump())
    return total


def _unauthorized(message: str) -> GatewayError:
    return GatewayError(Problem(401, "invalid_request_error", "invalid_api_key", message))


class Tenants:
    """The configured tenants. With none, every caller is anonymous (tenant None)."""

    def __init__(self, tenants: Sequence[TenantSettings]):
        self._tenants = tuple(tenants)
        self._digests = tuple(bytes.fromhex(t.key_sha256) for t in self._tenants)

    @property
    def required(self) -> bool:
        return bool(self._tenants)

    @property
    def names(self) -> list[str]:
        return [t.name for t in self._tenants]

    def authenticate(self, authorization: str | None) -> TenantSettings | None:
        """The tenant an `Authorization: Bearer KEY` header names; 401 when keys are configured
        and the key is missing or unknown."""
        if not self._tenants:
            return None
        scheme, _, key = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise _unauthorized("missing API key: send 'Authorization: Bearer <key>'")
        # aiohttp decodes header bytes that are not UTF-8 as surrogates: hash the bytes as sent.
        try:
            raw = key.strip().encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:  # a surrogate no bytes decode to: no key can match it
            raise _unauthorized("invalid API key") from None
        presented = hashlib.sha256(raw).digest()
        found: TenantSettings | None = None
        for tenant, digest in zip(self._tenants, self._digests, strict=True):
            if hmac.compare_digest(presented, digest):
                found = tenant
        if found is None:
            raise _unauthorized("invalid API key")
        return found


class TokenHold:
    """Tokens one request holds in its tenant's minute. The HTTP handler that was admitted owns
    it and settles it once, on every path; the router's attempts add their usage to `used`.
    `applied` is the part of the correction already booked (by a settle that rode with the
    spend store's booking, `redis_limits.Ride`); `ride` is that ride, when there is one."""

    __slots__ = ("applied", "local", "reserved", "ride", "settled", "tenant", "used", "window")

    def __init__(self, tenant: TenantSettings, window: int, reserved: int,
                 ride: Ride | None = None):
        self.tenant = tenant
        self.window = window
        self.reserved = reserved
        self.used = 0
        self.applied = 0
        self.settled = False
        self.ride = ride
        self.local = False  # held in this process's counters while Redis was down

    def due(self) -> int:
        """The correction (used - reserved) not booked yet; 0 without a token limit."""
        if self.settled or self.tenant.tokens_per_minute is None:
            return 0
        return self.used - self.reserved - self.applied

    def book(self, delta: int) -> None:
        self.applied += delta

    def take_settlement(self) -> int | None:
        """The correction left to book, once; None when already settled."""
        if self.settled:
            return None
        delta = self.due()
        self.settled = True
        return delta


class RateLimiter(Protocol):
    """Per-tenant request and token counters for the current minute."""

    async def admit(self, tenant: TenantSettings, now: float, tokens: int) -> TokenHold | None:
        """Count a request and reserve `tokens` (when the tenant has a token limit); a
        `GatewayError` (429, with Retry-After) when over a limit."""

    async def settle(self, hold: TokenHold) -> None:
        """Book a finished request's real usage in place of what it reserved."""

    async def aclose(self) -> None: ...


def _window(now: float) -> int:
    return int(now // WINDOW_S)


def _limited(tenant: TenantSettings, what: str, now: float) -> GatewayError:
    wait = max(1, math.ceil(WINDOW_S - now % WINDOW_S))
    return GatewayError(Problem(
        429, "rate_limit_error", "rate_limit_exceeded",
        f"tenant {tenant.name!r} is over its {what} per minute", retry_after=float(wait)))


def _verdict(tenant: TenantSettings, requests: int, used: int, want: int) -> str | None:
    """The pure verdict on one tenant's counters (this request already counted): what it is
    over, or None when `want` more tokens fit."""
    if tenant.requests_per_minute is not None and requests > tenant.requests_per_minute:
        return "requests"
    if tenant.tokens_per_minute is not None and used + want > tenant.tokens_per_minute:
        return "tokens"
    return None


def _limits(tenant: TenantSettings) -> bool:
    return tenant.requests_per_minute is not None or tenant.tokens_per_minute is not None


class MemoryRateLimiter:
    """Counters in this process (with a memory or SQLite spend store). Check and reserve happen
    without an await between them, so they are atomic on the event loop."""

    def __init__(self) -> None:
        self._windows: dict[str, tuple[int, int, int]] = {}  # tenant -> (window, requests, tokens)

    def _current(self, name: str, window: int) -> tuple[int, int]:
        got = self._windows.get(name)
        return (got[1], got[2]) if got is not None and got[0] == window else (0, 0)

    async def admit(self, tenant: TenantSettings, now: float, tokens: int) -> TokenHold | None:
        if not _limits(tenant):
            return None
        window = _window(now)
        requests, used = self._current(tenant.name, window)
        requests += 1
        want = tokens if tenant.tokens_per_minute is not None else 0
        over = _verdict(tenant, requests, used, want)
        self._windows[tenant.name] = (window, requests, used + (0 if over else want))
        if over:
            raise _limited(tenant, over, now)
        return TokenHold(tenant, window, want) if want else None

    async def settle(self, hold: TokenHold) -> None:
        delta = hold.take_settlement()
        got = self._windows.get(hold.tenant.name)
        if delta and got is not None and got[0] == hold.window:
            self._windows[hold.tenant.name] = (got[0], got[1], max(0, got[2] + delta))

    async def aclose(self) -> None:
        self._windows.clear()


class RedisRateLimiter:
    """Counters in Redis, shared by every gateway that uses the same Redis (a server, or a
    cluster for a `redis+cluster://` URL) and prefix."""

    def __init__(self, url: str, *, prefix: str = "scr:",
                 timeout_s: float = DEFAULT_REDIS_TIMEOUT_S):
        import redis
        import redis.exceptions

        from .._stores.redis import async_client, origin_of, plain_url

        # A RedisCluster for a `redis+cluster://` URL.
        self._redis: Any = async_client(url, timeout_s=timeout_s)
        self._errors: tuple[type[BaseException], ...] = (
            redis.RedisError, redis.exceptions.RedisClusterException)
        self._prefix = prefix
        self._admit = self._redis.register_script(ADMIT)
        self._settle = self._redis.register_script(SETTLE)
        # Which server this is (`RedisStore.origin`): rate limits ride with the store's calls
        # only when both are on one server.
        self.origin = origin_of(plain_url(url))

    def _key(self, tenant: TenantSettings, window: int) -> str:
        return limit_key(self._prefix, tenant.name, window)

    def admit_args(self, tenant: TenantSettings, want: int) -> list[str]:
        """`ADMIT`'s arguments for `want` tokens."""
        return [str(tenant.requests_per_minute or 0), str(tenant.tokens_per_minute or 0),
                str(want), str(int(WINDOW_S * 2))]

    def ride(self, tenant: TenantSettings, now: float, want: int, *,
             admit: bool) -> TokenHold:
        """A hold whose admission (when `admit`) and settlement ride with the Redis store's
        calls (`redis_limits.Ride`). Without `admit`, the caller has admitted it already."""
        window = _window(now)
        hold = TokenHold(tenant, window, want)
        ride = Ride(self._key(tenant, window), self.admit_args(tenant, want) if admit else [],
                    hold)
        if not admit:
            ride.admit_args, ride.verdict = None, 0
        hold.ride = ride
        return hold

    async def count(self, hold: TokenHold) -> None:
        """Count a request whose admission never rode (it ended before any reserve), with no
        tokens: refused requests count too."""
        await self._call(self._admit, hold, self.admit_args(hold.tenant, 0))

    async def admit(self, tenant: TenantSettings, now: float, tokens: int) -> TokenHold | None:
        if not _limits(tenant):
            return None
        window = _window(now)
        want = tokens if tenant.tokens_per_minute is not None else 0
        hold = TokenHold(tenant, window, want)
        verdict = await self._call(self._admit, hold, self.admit_args(tenant, want))
        if verdict:
            raise _limited(tenant, "requests" if verdict == 1 else "tokens", now)
        return hold if want else None

    async def settle(self, hold: TokenHold) -> None:
        delta = hold.take_settlement()
        if delta:
            await self._call(self._settle, hold, [str(delta)])

    async def _call(self, script: Any, hold: TokenHold, args: list[str]) -> int:
        try:
            return int(await script(keys=[self._key(hold.tenant, hold.window)], args=args))
        except self._errors as exc:  # down or hung: a 503 like the spend store's, not a 500
            raise StoreError(f"could not reach the Redis rate limiter: "
                             f"{type(exc).__name__}: {exc}") from exc

    async def aclose(self) -> None:
        await self._redis.aclose()
