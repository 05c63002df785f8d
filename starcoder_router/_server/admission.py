"""Admitting a gateway request against its tenant's rate limits, and settling it, in as few
store round trips as the store allows.

With a Redis spend store on one server and the rate limits in that same server, the admission
rides with the router's first budget reservation and the token settlement with its booking
(`_stores/redis_limits.py`): one round trip to admit a request, one to settle it. That needs a
reserve before every upstream call, which the router makes whenever a budget applies to the
request; the gateway lets an admission ride only when a budget applies to every request of the
tenant (a global budget, or a tenant budget that covers it). Otherwise, and with any other
store, the limiter admits on its own first, and only the settlement rides.

A request that ends before any reserve (no route, a cooling deployment) never carried its
admission: it is counted when it settles, with no tokens, so refused requests still count.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .._stores.redis_limits import RIDE
from .problems import GatewayError
from .settings import TenantSettings
from .tenants import RateLimiter, RedisRateLimiter, TokenHold, _limited, _limits, tokens_to_hold

if TYPE_CHECKING:
    from .._routing.policy import Budget

__all__ = ["Admission"]


def _always_reserves(budgets: Sequence[Budget], tenant: str) -> bool:
    """Does some budget apply to every request of `tenant` (so the router reserves before each
    upstream call)? Tag budgets depend on the request: they do not count."""
    return any(b.scope == "global" or (b.scope == "tenant" and b.tenant in (None, tenant))
               for b in budgets)


class Admission:
    """The gateway's rate-limit admissions and settlements (see the module's docstring)."""

    def __init__(self, limiter: RateLimiter, store: Any, budgets: Sequence[Budget]):
        self.limiter = limiter
        self._budgets = tuple(budgets)
        origin = getattr(store, "origin", None)  # `RedisStore.origin`: None on a cluster
        self._redis: RedisRateLimiter | None = (
            limiter if isinstance(limiter, RedisRateLimiter) and origin is not None
            and origin == limiter.origin else None)

    @property
    def rides(self) -> bool:
        """Do rate limits ride with the spend store's calls?"""
        return self._redis is not None

    async def admit(self, tenant: TenantSettings | None,
                    fields: Mapping[str, Any]) -> TokenHold | None:
        """Count the request and reserve the most tokens it can use (429 when over), now or
        with its first reserve. The caller owns the hold: `settle` it on every path."""
        RIDE.set(None)  # nothing from an earlier request on this task rides with this one
        if tenant is None or not _limits(tenant):
            return None
        want = tokens_to_hold(fields) if tenant.tokens_per_minute is not None else 0
        now = time.time()
        redis = self._redis
        if redis is None:
            return await self.limiter.admit(tenant, now, want)
        if _always_reserves(self._budgets, tenant.name):
            hold = redis.ride(tenant, now, want, admit=True)
        else:
            admitted = await redis.admit(tenant, now, want)
            if admitted is None:  # no token limit: nothing to settle either
                return None
            hold = redis.ride(tenant, now, want, admit=False)
        RIDE.set(hold.ride)
        return hold

    def refused(self) -> GatewayError:
        """The 429 for a request whose riding admission was refused (`RateLimitRefused`)."""
        ride = RIDE.get()
        hold = ride.hold if ride is not None else None
        if not isinstance(hold, TokenHold):  # cannot happen: only a ride raises it
            raise RuntimeError("a rate limit refused a request that had no ride")
        what = "requests" if ride is not None and ride.verdict == 1 else "tokens"
        return _limited(hold.tenant, what, time.time())

    async def settle(self, hold: TokenHold | None) -> None:
        """Give back what a finished request held beyond what it used."""
        if hold is None or hold.settled:
            return
        ride = hold.ride
        if ride is not None:
            ride.done = True
            if ride.admit_args is not None:  # it ended before any reserve: count it now
                ride.admit_args = None
                hold.settled = True
                if self._redis is not None:
                    await self._redis.count(hold)
                return
            if ride.verdict != 0:  # refused (nothing held), or its reply was lost (unknown)
                hold.settled = True
                return
        await self.limiter.settle(hold)
