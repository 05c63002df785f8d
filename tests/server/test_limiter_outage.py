"""With `on_store_error = "allow"`, a rate limiter whose Redis cannot be reached admits against
this process's own counters (the tenant's limits still hold, per process), logs and counts each
such admission, and settles its holds there; with Redis up nothing changes."""

from __future__ import annotations

import asyncio
import logging

import pytest

from starcoder_router import OutageTolerantStore, RedisStore
from starcoder_router._server.limiter_outage import LIMITED_LOCALLY, OutageTolerantLimiter
from starcoder_router._server.local_share import sharing_for
from starcoder_router._server.problems import GatewayError
from starcoder_router._server.settings import TenantSettings
from starcoder_router._server.tenants import RedisRateLimiter, hash_key
from support.ports import free_port

ACME = TenantSettings(name="acme", key_sha256=hash_key("sk-acme"), requests_per_minute=3,
                      tokens_per_minute=100)


def _dead_url() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there


def test_a_down_limiter_admits_against_local_counters(caplog: pytest.LogCaptureFixture) -> None:
    events: list[str] = []

    async def scenario() -> None:
        limiter = OutageTolerantLimiter(RedisRateLimiter(_dead_url(), timeout_s=0.5),
                                        events.append)
        try:
            hold = await limiter.admit(ACME, 60.0, 60)
            assert hold is not None and hold.local
            with pytest.raises(GatewayError) as over:  # 60 + 60 > 100 tokens, in this process
                await limiter.admit(ACME, 61.0, 60)
            assert over.value.problem.status == 429
            hold.used = 10
            await limiter.settle(hold)  # gives 50 back locally, without Redis
            assert await limiter.admit(ACME, 62.0, 60) is not None
            with pytest.raises(GatewayError):  # the 4th request of the minute
                await limiter.admit(ACME, 63.0, 0)
        finally:
            await limiter.aclose()

    with caplog.at_level(logging.WARNING, logger="starcoder_router.server"):
        asyncio.run(scenario())
    assert events == [LIMITED_LOCALLY] * 4
    assert "against this process's own counters" in caplog.text
    assert "sk-acme" not in caplog.text


def test_allow_wraps_the_redis_limiter_and_reject_does_not() -> None:
    url = _dead_url()

    async def scenario() -> None:
        for store, wrapped in ((OutageTolerantStore(RedisStore(url, timeout_s=0.5)), True),
                               (RedisStore(url, timeout_s=0.5), False)):
            limiter, _ = sharing_for(store, url, prefix="p:", timeout_s=0.5, poll_s=1.0)
            try:
                assert isinstance(limiter, OutageTolerantLimiter) is wrapped
            finally:
                await limiter.aclose()
                await store.aclose()

    asyncio.run(scenario())
