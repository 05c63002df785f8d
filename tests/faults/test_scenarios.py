"""Scenarios on the fault server: every fault of the schedule (fault_server.FAULTS) against three
deployments, through `Router`, `AsyncRouter` on both transports, plain and streaming.

Every request must succeed through a fallback or raise a `StarcoderRouterError` within its
deadline plus `DEADLINE_SLACK_S`; a streamed text is exactly the costed text (nothing replayed
after output reached the caller); each cost is the usage times its deployment's prices; the
store's spend equals its ledger; and no budget hold is left open.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from fault_server import FAULTS, FaultServer
from fault_support import TrackingStore
from scenarios import router_args, run_async, run_sync

from starcoder_router import AsyncRouter, Router

REQUESTS = 48


@pytest.fixture
def server() -> Iterator[FaultServer]:
    # Half the answers are faulty; drips send a byte every 50 ms.
    with FaultServer(seed=2026, rate=0.5, drip_s=0.05, hang_s=10) as s:
        yield s


def _every_fault_was_met(server: FaultServer) -> None:
    assert sum(server.served.values()) >= REQUESTS
    assert sum(server.served[f] for f in FAULTS) >= REQUESTS // 5


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
def test_sync_router_survives_the_fault_schedule(server: FaultServer, stream: bool) -> None:
    store = TrackingStore()
    with Router(**router_args(server, store)) as router:
        outcome = run_sync(router, REQUESTS, stream=stream)
    outcome.check()
    store.assert_balanced()
    assert outcome.completions, outcome.errors
    _every_fault_was_met(server)


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
def test_async_router_survives_the_fault_schedule(server: FaultServer, transport: str,
                                                  stream: bool) -> None:
    store = TrackingStore()

    async def run() -> None:
        router = AsyncRouter(**router_args(server, store, transport=transport))
        try:
            outcome = await run_async(router, REQUESTS, stream=stream)
        finally:
            await router.aclose()
        outcome.check()
        assert outcome.completions, outcome.errors

    asyncio.run(run())
    store.assert_balanced()
    _every_fault_was_met(server)


def test_the_schedule_injects_every_fault() -> None:
    """The seeded schedule is the same on every run and covers every fault kind."""
    import random

    rng = random.Random(2026)
    picks = {rng.choice(FAULTS) for _ in range(400)}
    assert picks == set(FAULTS)
