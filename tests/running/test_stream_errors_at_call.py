"""`stream()` sends the request where it is called (sync) or entered (`async with`): routing,
budget and provider errors before the first chunk raise there, not at the first iteration."""

from __future__ import annotations

from typing import Any

import pytest

from starcoder_router import (
    AsyncRouter,
    AsyncStream,
    AuthenticationError,
    Budget,
    BudgetExceededError,
    Catalog,
    CostPolicy,
    NoRouteError,
    Stream,
)
from starcoder_router.testing import FakeServer, Reply
from support.router_driver import Driver


async def _open(router: Any, **fields: Any) -> Stream | AsyncStream:
    """What a caller does before iterating: call, and with AsyncRouter enter the block."""
    stream = router.stream(**fields)
    if isinstance(router, AsyncRouter):
        await stream.__aenter__()
    return stream


@pytest.mark.parametrize("problem", ["budget", "route", "provider"])
async def test_errors_before_the_first_chunk_raise_at_the_call(drive: Driver,
                                                               problem: str) -> None:
    with FakeServer() as server:
        dep = server.deployment(input_usd_per_mtok=100.0, output_usd_per_mtok=100.0)
        policy = {
            "budget": CostPolicy(allow_providers={"openai-compatible"},
                                 budgets=[Budget(limit_usd=0.000001, period="day")]),
            "route": CostPolicy(allow_providers={"openai-compatible"},
                                min_quality=("humaneval", 99)),
            "provider": CostPolicy(allow_providers={"openai-compatible"}),
        }[problem]
        if problem == "provider":
            server.script(*[Reply(status=401, error="bad key")] * 3)
        router = drive.new_router(catalog=Catalog.default().with_deployments(dep),
                                  policy=policy, env={})
        expected = {"budget": BudgetExceededError, "route": NoRouteError,
                    "provider": AuthenticationError}[problem]
        with pytest.raises(expected):
            await _open(router, prompt="def f():", max_tokens=100)


async def test_the_first_chunk_is_not_lost(drive: Driver) -> None:
    with FakeServer() as server:
        server.script(Reply(text="a b c", chunks=3))
        router = drive.new_router(
            catalog=Catalog.default().with_deployments(server.deployment()),
            policy=CostPolicy(allow_providers={"openai-compatible"}), env={})
        chunks, completion = await drive.stream(router, prompt="x", max_tokens=16)
        assert "".join(c.text for c in chunks) == "a b c" == completion.text
        assert len(server.requests) == 1
