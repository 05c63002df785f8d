"""A real llama-server priced by the hour: the router's busy time is the wall time its attempts
held the server (shared when they overlap), its tokens are the server's own counts, and the
price `explain()` shows comes from them."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from starcoder_router import AsyncRouter, Completion, Router
from starcoder_router._routing.throughput import ThroughputMeter
from support.llama_deployments import PROMPT, deployment
from support.router_driver import Driver, Make

HALF_LIFE_S = ThroughputMeter().half_life_s


def _observed(router: Router | AsyncRouter, name: str) -> Any:
    return router._core.throughput.observed(name)


async def _at_once(drive: Driver, router: Router | AsyncRouter, n: int) -> list[Completion]:
    """`n` completions in flight together: tasks on `AsyncRouter`, threads on `Router`."""
    if isinstance(router, AsyncRouter):
        return list(await asyncio.gather(*(
            router.complete(prompt=PROMPT, max_tokens=8) for _ in range(n))))
    sync = router

    def run() -> list[Completion]:
        with ThreadPoolExecutor(n) as pool:
            return list(pool.map(lambda _: sync.complete(prompt=PROMPT, max_tokens=8), range(n)))
    return await drive.blocking(run)


async def test_busy_time_and_tokens_are_what_the_server_did(drive: Driver, make: Make,
                                                           llama_server_constant: Any) -> None:
    box = deployment(llama_server_constant, name="box").model_copy(
        update={"usd_per_hour": 0.9, "tokens_per_second": 250.0})
    router = make(box)
    prior = router.route(prompt=PROMPT, max_tokens=8).candidate("box").self_hosted
    assert prior is not None and not prior.observed

    one_by_one = [await drive.complete(router, prompt=PROMPT, max_tokens=8) for _ in range(3)]
    seen = _observed(router, "box")
    # One at a time, busy time is the attempts' own time and the tokens are the server's
    # counts, older ones faded by what each new attempt added.
    busy = tokens = 0.0
    for c in one_by_one:
        latency = c.attempts[-1].latency_s
        fade = 0.5 ** (latency / HALF_LIFE_S)
        busy = busy * fade + latency
        tokens = tokens * fade + c.usage.prompt_tokens + c.usage.completion_tokens
    assert seen.requests == 3
    assert seen.busy_s == pytest.approx(busy, rel=1e-9)
    assert seen.tokens == pytest.approx(tokens, rel=1e-9)

    together = await _at_once(drive, router, 3)
    after = _observed(router, "box")
    latencies = [c.attempts[-1].latency_s for c in together]

    def busy_after(new: float) -> float:
        return seen.busy_s * 0.5 ** (new / HALF_LIFE_S) + new

    # Overlapping attempts share their wall time: the busy time they add is never more than
    # their sum, never less than the longest of them.
    # An attempt's latency and the meter's span are read a few microseconds apart: 5 ms of slack.
    assert busy_after(max(latencies)) - 0.005 <= after.busy_s
    assert after.busy_s <= busy_after(sum(latencies)) + 0.005

    decision = router.route(prompt=PROMPT, max_tokens=8)
    price = decision.candidate("box").self_hosted
    assert price is not None and price.observed and price.usd_per_mtok > 0
    assert "(observed over 6 requests /" in decision.explain()
