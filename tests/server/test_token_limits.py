"""Token rate limits reserve before the call and settle after it: concurrent requests can never
use more than a tenant's `tokens_per_minute` together, and every path (success, upstream error,
client gone) gives back what a request held beyond what it used. In memory and through Redis,
across gateways sharing one redis-server or one Redis Cluster."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from upstream import Reply  # loaded by conftest.py

from starcoder_router import RedisStore
from starcoder_router._server.settings import ServerSettings, TenantSettings
from starcoder_router._server.tenants import MemoryRateLimiter, hash_key, tokens_to_hold
from support.processes import stop
from support.redis_server import start_redis

KEY = "sk-token-limits-7f3a"
AUTH = {"Authorization": f"Bearer {KEY}"}
BODY = {"model": "starcoder2", "prompt": "x", "max_tokens": 16}
HOLD = tokens_to_hold({"prompt": "x", "max_tokens": 16})
LIMIT = 300


def tenant(limit: int = LIMIT) -> ServerSettings:
    return ServerSettings(tenants=(TenantSettings(
        name="acme", key_sha256=hash_key(KEY), tokens_per_minute=limit),))


def away_from_minute_edge(room_s: float = 8.0) -> None:
    """Wait until the current one-minute window has `room_s` left, so a burst counts in one."""
    left = 60 - time.time() % 60
    if left < room_s:
        time.sleep(left + 0.05)


async def _burst(urls: list[str], n: int, timeout: float = 20.0) -> list[int]:
    async with httpx.AsyncClient(timeout=timeout, limits=httpx.Limits(max_connections=n)) as c:
        replies = await asyncio.gather(*(
            c.post(urls[i % len(urls)] + "/v1/completions", json=BODY, headers=AUTH)
            for i in range(n)))
    return [r.status_code for r in replies]


def used_tokens(*gateways: Any) -> int:
    return sum(e.prompt_tokens + e.completion_tokens for g in gateways
               for e in g.gateway.store.ledger() if e.tenant == "acme")


def test_the_hold_bounds_a_requests_tokens() -> None:
    assert tokens_to_hold({"prompt": "é" * 10, "max_tokens": 5}) >= 20 + 5
    chat = {"messages": [{"role": "user", "content": "abc"}] * 3, "max_tokens": 1}
    assert tokens_to_hold(chat) > tokens_to_hold({"prompt": "abc" * 3, "max_tokens": 1})


def test_concurrent_requests_cannot_overrun_the_limit_in_memory(serve: Any,
                                                                upstream: Any) -> None:
    gw = serve(settings=tenant())
    upstream.script(*[Reply(delay_s=0.4)] * 50)
    away_from_minute_edge()
    codes = asyncio.run(_burst([gw.url], 50))
    admitted = codes.count(200)
    assert set(codes) <= {200, 429}
    assert 1 <= admitted <= LIMIT // HOLD, codes
    assert used_tokens(gw) <= LIMIT


def _settles_every_path(gw: Any, upstream: Any) -> None:
    """With room for two holds: failed, abandoned and served requests all give theirs back."""
    away_from_minute_edge(6)
    upstream.script(Reply(status=400), Reply(status=400))  # not retried: a client error
    assert asyncio.run(_burst([gw.url], 2)) != [200, 200]
    upstream.script(*[Reply(delay_s=1.5)] * 2)
    with pytest.raises(httpx.ReadTimeout):  # the clients hang up while the upstream works
        asyncio.run(_burst([gw.url], 2, timeout=0.3))
    time.sleep(1.8)  # the cancelled handlers have settled
    for _ in range(3):  # sequential: each settles to its real (small) usage before the next
        r = httpx.post(gw.url + "/v1/completions", json=BODY, headers=AUTH, timeout=10)
        assert r.status_code == 200, r.text


def test_every_path_settles_its_hold_in_memory(serve: Any, upstream: Any) -> None:
    _settles_every_path(serve(settings=tenant(2 * HOLD + 5)), upstream)


def test_a_request_needing_more_than_the_limit_is_refused(serve: Any) -> None:
    gw = serve(settings=tenant(HOLD - 1))
    r = httpx.post(gw.url + "/v1/completions", json=BODY, headers=AUTH, timeout=10)
    assert r.status_code == 429
    assert "tokens per minute" in r.json()["error"]["message"]


async def test_memory_limiter_settles_the_difference() -> None:
    limiter = MemoryRateLimiter()
    acme = tenant(100).tenants[0]
    hold = await limiter.admit(acme, 0.0, 60)
    assert hold is not None
    with pytest.raises(Exception, match="tokens per minute"):
        await limiter.admit(acme, 1.0, 60)
    hold.used = 10
    await limiter.settle(hold)
    await limiter.settle(hold)  # once only
    assert await limiter.admit(acme, 2.0, 90) is not None  # 10 used + 90 fit in 100
    with pytest.raises(Exception, match="tokens per minute"):
        await limiter.admit(acme, 3.0, 1)


# -- Redis ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    proc, url = start_redis(tmp_path_factory.mktemp("redis"))
    yield url
    stop(proc)


def redis_gateway(serve: Any, url: str, limit: int = LIMIT) -> Any:
    return serve(settings=tenant(limit), store=RedisStore(url), redis_url=url)


@pytest.mark.integration
def test_concurrent_requests_cannot_overrun_the_limit_in_redis(
        serve: Any, upstream: Any, shared_redis: str) -> None:
    gw = redis_gateway(serve, shared_redis)
    upstream.script(*[Reply(delay_s=0.4)] * 50)
    away_from_minute_edge()
    codes = asyncio.run(_burst([gw.url], 50))
    assert 1 <= codes.count(200) <= LIMIT // HOLD, codes
    assert used_tokens(gw) <= LIMIT


@pytest.mark.integration
def test_two_gateways_share_one_token_limit_through_redis(
        serve: Any, upstream: Any, shared_redis: str) -> None:
    """Through one redis-server, and through a Redis Cluster."""
    a, b = redis_gateway(serve, shared_redis), redis_gateway(serve, shared_redis)
    upstream.script(*[Reply(delay_s=0.4)] * 50)
    away_from_minute_edge()
    codes = asyncio.run(_burst([a.url, b.url], 50))
    assert 1 <= codes.count(200) <= LIMIT // HOLD, codes
    ledger = RedisStore(shared_redis).ledger()
    assert sum(e.prompt_tokens + e.completion_tokens for e in ledger) <= LIMIT


@pytest.mark.integration
def test_every_path_settles_its_hold_in_redis(serve: Any, upstream: Any,
                                              shared_redis: str) -> None:
    _settles_every_path(redis_gateway(serve, shared_redis, 2 * HOLD + 5), upstream)


@pytest.mark.integration
@pytest.mark.parametrize("name", ["acme", "a}{b", "{x}", "}"])
async def test_the_redis_limiter_keeps_a_tenants_minutes_in_one_slot(shared_redis: str,
                                                             name: str) -> None:
    from redis.crc import key_slot

    from starcoder_router._server.tenants import RedisRateLimiter

    limiter = RedisRateLimiter(shared_redis, prefix="p:")
    acme = TenantSettings(name=name, key_sha256=hash_key(KEY), tokens_per_minute=100,
                          requests_per_minute=3)
    assert len({key_slot(limiter._key(acme, w).encode()) for w in range(50)}) == 1
    try:
        hold = await limiter.admit(acme, 0.0, 60)
        assert hold is not None
        with pytest.raises(Exception, match="tokens per minute"):
            await limiter.admit(acme, 1.0, 60)
        hold.used = 10
        await limiter.settle(hold)
        assert await limiter.admit(acme, 2.0, 90) is not None  # 10 used + 90 fit in 100
        with pytest.raises(Exception, match="requests per minute"):
            await limiter.admit(acme, 3.0, 0)
    finally:
        await limiter.aclose()


# -- the hold is a bound -----------------------------------------------------------------------

_text = st.text(st.characters(codec="utf-8"), max_size=60) | st.sampled_from(
    ["<fim_prefix>", "<|endoftext|>", "### Instruction", "def f(x):\n    return x\n", "é" * 7,
     "\U0001F600" * 3, "<file_sep>", " " * 9])
_requests = st.one_of(
    st.fixed_dictionaries({"prompt": _text}),
    st.fixed_dictionaries({"prompt": _text, "suffix": _text}),
    st.fixed_dictionaries({"messages": st.lists(st.fixed_dictionaries(
        {"role": st.just("user"), "content": _text}), min_size=1, max_size=4)}),
    st.fixed_dictionaries({"prefix": _text, "suffix": _text, "path": _text,
                           "repo_name": _text, "files": st.lists(st.fixed_dictionaries(
                               {"path": _text, "text": _text}), max_size=3)}),
)


@hyp_settings(max_examples=150, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fields=_requests, max_tokens=st.integers(1, 4096))
def test_the_hold_covers_the_rendered_prompt_and_the_output(exact_counter: Any,
                                                           fields: dict[str, Any],
                                                           max_tokens: int) -> None:
    from starcoder_router._routing.render import render
    from starcoder_router._routing.request import CompletionRequest

    fields = {**fields, "max_tokens": max_tokens}
    try:
        request = CompletionRequest(**fields)
        rendered = render(request)
    except Exception:  # not a request the router would run
        return
    assert exact_counter.count(rendered.prompt) + max_tokens <= tokens_to_hold(fields)
