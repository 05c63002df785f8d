"""On one redis-server the store's scripts that concurrent tasks send in the same turn of the
event loop go out as one pipeline: fewer writes than calls, each call its own answer (a refusal
stays the caller's), and a server that lost its scripts (SCRIPT FLUSH) still answers."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any

import pytest
import redis

from starcoder_router import BudgetExceededError
from starcoder_router._stores.base import BudgetKey
from starcoder_router._stores.redis import RedisStore

pytestmark = pytest.mark.integration


def _key(limit_nano: int) -> BudgetKey:
    now = dt.datetime.now(dt.UTC)
    return BudgetKey("batch", f"batch|{uuid.uuid4().hex}", limit_nano,
                     now + dt.timedelta(days=1), now + dt.timedelta(days=2))


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    from redis.asyncio.connection import AbstractConnection

    count = [0]
    original = AbstractConnection._send_packed_command

    async def counted(self: Any, command: Any) -> None:
        count[0] += 1
        await original(self, command)

    monkeypatch.setattr(AbstractConnection, "_send_packed_command", counted)
    return count


def test_concurrent_calls_share_writes_and_keep_their_own_answers(
        redis_url: str, writes: list[int]) -> None:
    key = _key(10 * 1_000)

    async def scenario() -> list[Any]:
        store = RedisStore(redis_url, prefix=f"b:{uuid.uuid4().hex[:8]}:")
        try:
            await store.areserve([key], 0, 60.0)  # connected, the script loaded
            before = writes[0]
            results = await asyncio.gather(*(store.areserve([key], 1_000, 60.0)
                                             for _ in range(16)), return_exceptions=True)
            assert writes[0] - before < 16
            (status,) = await store.astatus([key])
            assert status.reserved_nano == 10 * 1_000  # exactly the ten that fit
            return results
        finally:
            await store.aclose()

    results = asyncio.run(scenario())
    assert sum(not isinstance(r, BaseException) for r in results) == 10
    assert all(isinstance(r, BudgetExceededError) for r in results
               if isinstance(r, BaseException))


def test_a_server_that_lost_its_scripts_still_answers_a_batch(redis_url: str) -> None:
    key = _key(10**12)

    async def scenario() -> None:
        store = RedisStore(redis_url, prefix=f"b:{uuid.uuid4().hex[:8]}:")
        try:
            await store.areserve([key], 1, 60.0)
            with redis.Redis.from_url(redis_url) as client:
                client.script_flush()
            held = await asyncio.gather(*(store.areserve([key], 1, 60.0) for _ in range(8)))
            await asyncio.gather(*(store.asettle(r, 1) for r in held))
            assert await store.aspent(key.key) == 8
        finally:
            await store.aclose()

    asyncio.run(scenario())
