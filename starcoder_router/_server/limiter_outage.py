"""Rate limits while their Redis is down, for a gateway whose store has `on_store_error =
"allow"`: the budgets go on against an allowance of each process's own
(`_stores/outage.py`), and so do the rate limits.

While the Redis rate limiter cannot be reached, each process admits against its own in-memory
counters with the tenant's full limits per minute, so during an outage a tenant can make at most
(processes x its limit) requests a minute. A rate limit protects the upstream rather than the
money, so it is not cut to a fraction as budgets are; what a process admits this way is not
booked to Redis afterwards (its minute is over by then). Each such admission is logged and
counted in `/metrics` (`starcoder_router_store_outage_events{event="limited_locally"}`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from .._errors import StoreError
from .settings import TenantSettings
from .tenants import MemoryRateLimiter, RedisRateLimiter, TokenHold

__all__ = ["LIMITED_LOCALLY", "OutageTolerantLimiter"]

logger = logging.getLogger("starcoder_router.server")

LIMITED_LOCALLY = "limited_locally"


class OutageTolerantLimiter:
    """A `RedisRateLimiter` that falls back to this process's counters while Redis is down."""

    def __init__(self, inner: RedisRateLimiter, observer: Callable[[str], None] | None = None):
        self.inner = inner
        self.observer = observer
        self._local = MemoryRateLimiter()

    async def admit(self, tenant: TenantSettings, now: float, tokens: int) -> TokenHold | None:
        try:
            return await self.inner.admit(tenant, now, tokens)
        except StoreError as exc:
            logger.warning("rate limits are unreachable (%s): tenant %r is admitted against "
                           "this process's own counters", type(exc.__cause__).__name__,
                           tenant.name)
            if self.observer is not None:
                self.observer(LIMITED_LOCALLY)
        hold = await self._local.admit(tenant, now, tokens)  # a 429 when over, as in Redis
        if hold is not None:
            hold.local = True
        return hold

    async def settle(self, hold: TokenHold) -> None:
        if hold.local:
            await self._local.settle(hold)
        else:
            await self.inner.settle(hold)

    async def aclose(self) -> None:
        await self.inner.aclose()
        await self._local.aclose()
