"""The deadline is a promise: no call returns later than its deadline plus `DEADLINE_SLACK_S`,
whatever the server does, on every transport, plain or streaming.

A server that drips its answer one byte every 0.2 s used to keep `complete(timeout=1.0)` for
over 20 s on the httpx transports, which took the timeout as a limit per read.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from fault_server import FaultServer

from starcoder_router import (
    AsyncRouter,
    Catalog,
    CostPolicy,
    ProviderTimeoutError,
    RetryPolicy,
    Router,
    StarcoderRouterError,
)
from starcoder_router._transports.base import DEADLINE_SLACK_S

TIMEOUT = 1.0


def _catalog(server: FaultServer, protocol: str) -> Catalog:
    return Catalog.default().with_deployments(server.deployment("slow", protocol=protocol))


def _policy() -> CostPolicy:
    return CostPolicy(allow_providers={"openai-compatible", "ollama"})


@pytest.mark.parametrize("protocol", ["openai", "ollama"])
@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("fault", ["drip", "hang"])
def test_sync_router_keeps_the_deadline(faulty: FaultServer, protocol: str, stream: bool,
                                        fault: str) -> None:
    faulty.force(fault)
    with Router(catalog=_catalog(faulty, protocol), policy=_policy(), tokenizer=False, env={},
                retry=RetryPolicy(max_retries=0)) as router:
        started = time.monotonic()
        with pytest.raises(StarcoderRouterError) as info:
            if stream:
                with router.stream(prompt="def f():", max_tokens=8, timeout=TIMEOUT) as s:
                    for _ in s:
                        pass
            else:
                router.complete(prompt="def f():", max_tokens=8, timeout=TIMEOUT)
        took = time.monotonic() - started
    assert took <= TIMEOUT + DEADLINE_SLACK_S, f"{took:.2f}s for a {TIMEOUT}s deadline"
    assert isinstance(info.value, ProviderTimeoutError)


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
@pytest.mark.parametrize("protocol", ["openai", "ollama"])
@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("fault", ["drip", "hang"])
def test_async_router_keeps_the_deadline(faulty: FaultServer, transport: str, protocol: str,
                                         stream: bool, fault: str) -> None:
    faulty.force(fault)

    async def run() -> float:
        router = AsyncRouter(catalog=_catalog(faulty, protocol), policy=_policy(),
                             tokenizer=False, env={}, retry=RetryPolicy(max_retries=0),
                             transport=transport)  # type: ignore[arg-type]
        try:
            started = time.monotonic()
            with pytest.raises(ProviderTimeoutError):
                if stream:
                    async with router.stream(prompt="def f():", max_tokens=8,
                                                   timeout=TIMEOUT) as s:
                        async for _ in s:
                            pass
                else:
                    await router.complete(prompt="def f():", max_tokens=8, timeout=TIMEOUT)
            return time.monotonic() - started
        finally:
            await router.aclose()

    took = asyncio.run(run())
    assert took <= TIMEOUT + DEADLINE_SLACK_S, f"{took:.2f}s for a {TIMEOUT}s deadline"
