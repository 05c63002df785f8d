"""With a Redis spend store on one redis-server, a gateway request costs at most one Redis round
trip to admit (rate limits and budget reservation together) and one to settle (spend, ledger and
token correction together), streamed or not; the limits and budgets hold as before. Round trips
are counted where the gateway's Redis clients write to their sockets (redis-py's asyncio
connection: one write per command, or per pipeline), and cross-checked with the scripts the
server ran (`INFO commandstats`)."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from starcoder_router import Budget, CostPolicy, RedisStore
from starcoder_router._server.settings import ServerSettings, TenantSettings
from starcoder_router._server.tenants import hash_key
from starcoder_router._stores.periods import applicable_keys
from support.processes import stop
from support.redis_server import start_redis

pytestmark = pytest.mark.integration

KEY = "sk-round-trips"
AUTH = {"Authorization": f"Bearer {KEY}"}
BODY = {"model": "starcoder2", "prompt": "def add(a, b):", "max_tokens": 8}


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    proc, url = start_redis(tmp_path_factory.mktemp("redis"))
    yield url
    stop(proc)


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_url, decode_responses=True) as c:
        c.flushall()
        yield c


@pytest.fixture
def sends(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts every write of a command (or a pipeline) by an asyncio redis-py connection in
    this process: the gateway's round trips (the test's own client is a sync one)."""
    from redis.asyncio.connection import AbstractConnection

    count = [0]
    original = AbstractConnection._send_packed_command

    async def counted(self: Any, command: Any) -> None:
        count[0] += 1
        await original(self, command)

    monkeypatch.setattr(AbstractConnection, "_send_packed_command", counted)
    return count


def scripts_run(client: redis.Redis) -> int:
    stats: dict[str, Any] = client.info("commandstats")
    return sum(int(stats.get(k, {"calls": 0})["calls"]) for k in ("cmdstat_evalsha",
                                                                   "cmdstat_eval"))


def settings(**limits: int) -> ServerSettings:
    return ServerSettings(tenants=(TenantSettings(name="acme", key_sha256=hash_key(KEY),
                                                  **limits),))


def away_from_minute_edge(room_s: float = 6.0) -> None:
    left = 60 - time.time() % 60
    if left < room_s:
        time.sleep(left + 0.05)


def post(url: str, **extra: Any) -> httpx.Response:
    return httpx.post(url + "/v1/completions", json={**BODY, **extra}, headers=AUTH, timeout=10)


def per_request(gw: Any, client: redis.Redis, sends: list[int], n: int,
                **extra: Any) -> float:
    """Round trips per request, over `n` sequential requests."""
    for _ in range(2):  # warm: connections open, scripts loaded
        assert post(gw.url, **extra).status_code == 200
    sent, ran = sends[0], scripts_run(client)
    for _ in range(n):
        r = post(gw.url, **extra)
        assert r.status_code == 200, r.text
    time.sleep(0.05)  # a settle finishing after the answer was sent
    assert scripts_run(client) - ran == sends[0] - sent  # every round trip was one script
    return (sends[0] - sent) / n


@pytest.mark.parametrize("stream", [False, True])
def test_one_round_trip_to_admit_and_one_to_settle(serve: Any, redis_url: str,
                                                   client: redis.Redis, sends: list[int],
                                                   stream: bool) -> None:
    policy = CostPolicy(budgets=(Budget(limit_usd=100), Budget(limit_usd=50, scope="tenant")))
    gw = serve(settings=settings(requests_per_minute=10_000, tokens_per_minute=10_000_000),
               store=RedisStore(redis_url), redis_url=redis_url, policy=policy)
    assert gw.gateway.admission.rides
    away_from_minute_edge()
    assert per_request(gw, client, sends, 10, stream=stream) == 2.0
    # the minute's tokens are what the requests used: every hold was settled to its usage
    used = sum(e.prompt_tokens + e.completion_tokens for e in gw.gateway.store.ledger())
    (key,) = client.keys("scr:{rl:acme}:*")
    assert int(client.hget(key, "tokens") or 0) == used


def test_without_a_budget_for_every_request_the_settlement_still_rides(
        serve: Any, redis_url: str, client: redis.Redis, sends: list[int]) -> None:
    gw = serve(settings=settings(tokens_per_minute=10_000_000), store=RedisStore(redis_url),
               redis_url=redis_url)
    away_from_minute_edge()
    # the limit alone (there is no reserve to ride with), then the record and the tokens
    assert per_request(gw, client, sends, 8) == 2.0


def _held_and_spent(gw: Any, policy: CostPolicy) -> list[tuple[int, int]]:
    keys = applicable_keys(policy.budgets, tenant="acme", tags=(), now=dt.datetime.now(dt.UTC))
    return [(s.reserved_nano, s.spent_nano) for s in gw.gateway.store.status(list(keys))]


def test_a_riding_admission_still_refuses_over_the_limit(serve: Any, shared_redis: str,
                                                          sends: list[int]) -> None:
    """On one server (in the reserve's script) and on a cluster (beside it)."""
    policy = CostPolicy(budgets=(Budget(limit_usd=100), Budget(limit_usd=50, scope="tenant")))
    gw = serve(settings=settings(requests_per_minute=3), store=RedisStore(shared_redis),
               redis_url=shared_redis, policy=policy)
    assert gw.gateway.admission.rides
    away_from_minute_edge()
    codes = [post(gw.url).status_code for _ in range(3)] + [
        post(gw.url, stream=True).status_code, post(gw.url).status_code]
    assert codes == [200, 200, 200, 429, 429]
    sent = sends[0]
    r = post(gw.url)
    assert "requests per minute" in r.json()["error"]["message"]
    assert int(r.headers["Retry-After"]) >= 1
    time.sleep(0.05)
    # one round trip on a server; on a cluster the limit, the reserve beside it and the
    # release of the hold that reserve took
    assert sends[0] - sent == (1 if "+cluster" not in shared_redis else 3)
    # a refused request holds nothing (on a cluster its holds were released): 3 answers spent
    (spent,) = {s for _, s in _held_and_spent(gw, policy)}
    assert _held_and_spent(gw, policy) == [(0, spent)] * 2
    assert len(gw.gateway.store.ledger()) == 3
    assert spent == sum(e.cost_nano for e in gw.gateway.store.ledger())


def test_a_riding_token_limit_settles_to_the_usage(serve: Any, shared_redis: str) -> None:
    import redis.cluster

    policy = CostPolicy(budgets=(Budget(limit_usd=100),))
    gw = serve(settings=settings(tokens_per_minute=10_000_000), store=RedisStore(shared_redis),
               redis_url=shared_redis, policy=policy)
    away_from_minute_edge()
    for stream in (False, True, False):
        assert post(gw.url, stream=stream).status_code == 200
    time.sleep(0.05)
    used = sum(e.prompt_tokens + e.completion_tokens for e in gw.gateway.store.ledger())
    url = shared_redis.replace("+cluster", "", 1)
    window = int(time.time() // 60)
    client: Any = (redis.cluster.RedisCluster.from_url(url, decode_responses=True)
                   if url != shared_redis else redis.Redis.from_url(url, decode_responses=True))
    with client:
        assert int(client.hget(f"scr:{{rl:acme}}:{window}", "tokens") or 0) == used
    assert _held_and_spent(gw, policy)[0][0] == 0


def test_tokens_held_by_a_riding_admission_bound_concurrent_requests(
        serve: Any, redis_url: str, client: redis.Redis) -> None:
    from starcoder_router._server.tenants import tokens_to_hold

    hold = tokens_to_hold(BODY)
    policy = CostPolicy(budgets=(Budget(limit_usd=100),))
    gw = serve(settings=settings(tokens_per_minute=2 * hold + 1), store=RedisStore(redis_url),
               redis_url=redis_url, policy=policy)
    away_from_minute_edge()
    # sequential requests fit: each gives back what it did not use before the next
    assert [post(gw.url).status_code for _ in range(4)] == [200] * 4
    # one that needs more than the limit is refused, and holds nothing
    assert post(gw.url, max_tokens=3 * hold).status_code == 429
    assert post(gw.url).status_code == 200


def test_a_request_that_ends_before_any_reserve_is_still_counted(
        serve: Any, redis_url: str, client: redis.Redis, upstream: Any) -> None:
    policy = CostPolicy(budgets=(Budget(limit_usd=100),))
    gw = serve(settings=settings(requests_per_minute=2), store=RedisStore(redis_url),
               redis_url=redis_url, policy=policy)
    away_from_minute_edge()
    # a prompt over every window: refused by the router before it reserves anything
    huge = post(gw.url, prompt="x " * 10_000, max_tokens=1)
    assert huge.status_code == 400
    assert post(gw.url).status_code == 200
    assert post(gw.url).status_code == 429  # the refused one counted
    assert upstream.bodies and len(upstream.bodies) == 1
