"""Many requests at once with `AsyncRouter`, at most `LIMIT` in flight.

A local OpenAI-compatible server (`FakeServer`, on 127.0.0.1) stands in for a deployment, so
this runs offline. With real keys, drop the server and the catalog line.

    python examples/async_batch.py
"""

from __future__ import annotations

import asyncio

from starcoder_router import AsyncRouter, Catalog, Completion, CostPolicy
from starcoder_router.testing import FakeServer

LIMIT = 4  # concurrent requests; the rest wait their turn
PROMPTS = [f"def task_{i}(items):\n    " for i in range(20)]


async def complete_all(router: AsyncRouter, prompts: list[str]) -> list[Completion]:
    gate = asyncio.Semaphore(LIMIT)

    async def one(prompt: str) -> Completion:
        async with gate:
            return await router.complete(prompt=prompt, max_tokens=32)

    # gather keeps the order of `prompts`; the first error cancels the rest.
    return await asyncio.gather(*(one(p) for p in prompts))


async def main() -> None:
    with FakeServer(latency_s=0.02) as server:
        catalog = Catalog.default().with_deployments(
            server.deployment(input_usd_per_mtok=0.1, output_usd_per_mtok=0.2))
        policy = CostPolicy(allow_providers={"openai-compatible"})
        async with AsyncRouter(catalog=catalog, policy=policy, env={}) as router:
            done = await complete_all(router, PROMPTS)
    tokens = sum(c.usage.total_tokens for c in done)
    cost = sum(c.cost_usd for c in done)
    print(f"{len(done)} completions, {tokens} tokens, ${cost:.8f}, at most {LIMIT} at once")
    print("first:", repr(done[0]))


if __name__ == "__main__":
    asyncio.run(main())
