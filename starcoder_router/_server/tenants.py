"""Who is calling, and whether they may call now: bearer keys → tenants, and rate limits.

Keys are kept only as SHA-256 digests. A presented key is hashed and compared with every
configured digest by `hmac.compare_digest`, without stopping at the first match, so the time
taken says nothing about which digest (or how much of one) matched.

Rate limits count requests and tokens per tenant in fixed one-minute windows. With a Redis spend
store the counters live in the same Redis, so every gateway instance shares them; otherwise they
live in the process. Refused requests count too: a client that keeps hammering stays limited.

Example::

    tenants = Tenants([TenantSettings(name="acme", key_sha256=hash_key("sk-acme"))])
    tenant = tenants.authenticate("Bearer sk-acme")      # -> the "acme" settings
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Sequence
from typing import Any, Protocol

from .problems import GatewayError, Problem
from .settings import TenantSettings

__all__ = [
    "MemoryRateLimiter",
    "RateLimiter",
    "RedisRateLimiter",
    "Tenants",
    "hash_key",
]

WINDOW_S = 60.0


def hash_key(key: str) -> str:
    """The hex SHA-256 digest the config stores instead of the key."""
    return hashlib.sha256(key.encode()).hexdigest()


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
        presented = hashlib.sha256(key.strip().encode()).digest()
        found: TenantSettings | None = None
        for tenant, digest in zip(self._tenants, self._digests, strict=True):
            if hmac.compare_digest(presented, digest):
                found = tenant
        if found is None:
            raise _unauthorized("invalid API key")
        return found


class RateLimiter(Protocol):
    """Per-tenant request and token counters for the current minute."""

    async def admit(self, tenant: TenantSettings, now: float) -> None:
        """Count a request; a `GatewayError` (429, with Retry-After) when over a limit."""

    async def add_tokens(self, tenant: TenantSettings, tokens: int, now: float) -> None:
        """Count the tokens a finished request used."""

    async def aclose(self) -> None: ...


def _limited(tenant: TenantSettings, what: str, now: float) -> GatewayError:
    wait = max(1, math.ceil(WINDOW_S - now % WINDOW_S))
    return GatewayError(Problem(
        429, "rate_limit_error", "rate_limit_exceeded",
        f"tenant {tenant.name!r} is over its {what} per minute", retry_after=float(wait)))


def _check(tenant: TenantSettings, requests: int, tokens: int, now: float) -> None:
    """The pure verdict on one tenant's counters (this request already counted)."""
    if tenant.requests_per_minute is not None and requests > tenant.requests_per_minute:
        raise _limited(tenant, "requests", now)
    if tenant.tokens_per_minute is not None and tokens >= tenant.tokens_per_minute:
        raise _limited(tenant, "tokens", now)


class MemoryRateLimiter:
    """Counters in this process (with a memory or SQLite spend store)."""

    def __init__(self) -> None:
        self._windows: dict[str, tuple[int, int, int]] = {}  # tenant -> (window, requests, tokens)

    def _current(self, name: str, now: float) -> tuple[int, int, int]:
        window = int(now // WINDOW_S)
        got = self._windows.get(name)
        return got if got is not None and got[0] == window else (window, 0, 0)

    async def admit(self, tenant: TenantSettings, now: float) -> None:
        if tenant.requests_per_minute is None and tenant.tokens_per_minute is None:
            return
        window, requests, tokens = self._current(tenant.name, now)
        self._windows[tenant.name] = (window, requests + 1, tokens)
        _check(tenant, requests + 1, tokens, now)

    async def add_tokens(self, tenant: TenantSettings, tokens: int, now: float) -> None:
        if tenant.tokens_per_minute is None:
            return
        window, requests, used = self._current(tenant.name, now)
        self._windows[tenant.name] = (window, requests, used + tokens)

    async def aclose(self) -> None:
        self._windows.clear()


class RedisRateLimiter:
    """Counters in Redis, shared by every gateway that uses the same Redis and prefix."""

    def __init__(self, url: str, *, prefix: str = "scr:"):
        import redis.asyncio

        self._redis: Any = redis.asyncio.Redis.from_url(url, decode_responses=True)
        self._prefix = prefix

    def _key(self, tenant: TenantSettings, now: float) -> str:
        return f"{self._prefix}rl:{tenant.name}:{int(now // WINDOW_S)}"

    async def admit(self, tenant: TenantSettings, now: float) -> None:
        if tenant.requests_per_minute is None and tenant.tokens_per_minute is None:
            return
        key = self._key(tenant, now)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hincrby(key, "requests", 1)
            pipe.hget(key, "tokens")
            pipe.expire(key, int(WINDOW_S * 2))
            requests, tokens, _ = await pipe.execute()
        _check(tenant, int(requests), int(tokens or 0), now)

    async def add_tokens(self, tenant: TenantSettings, tokens: int, now: float) -> None:
        if tenant.tokens_per_minute is None or tokens <= 0:
            return
        key = self._key(tenant, now)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hincrby(key, "tokens", tokens)
            pipe.expire(key, int(WINDOW_S * 2))
            await pipe.execute()

    async def aclose(self) -> None:
        await self._redis.aclose()
