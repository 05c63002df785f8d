"""The gateway prices a local machine by the hour like the routers do: its spend is booked only
when the policy counts local spend, and what it observes moves the price."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from starcoder_router import Budget, Catalog, CostPolicy, Deployment

BOX = "box/starcoder2-3b"


def _catalog(upstream_url: str) -> Catalog:
    box = Deployment(name=BOX, provider="openai-compatible", pricing="local",
                     variant="starcoder2-3b", model="mock-starcoder2-3b", context_window=2048,
                     base_url=upstream_url + "/v1", usd_per_hour=0.9, tokens_per_second=250.0)
    return Catalog(variants=Catalog.default().variants, deployments=(box,))


@pytest.mark.parametrize("counted", [True, False])
def test_the_gateway_books_local_spend_when_counted(serve: Any, upstream: Any, upstream_url: str,
                                                     counted: bool) -> None:
    policy = CostPolicy(count_local_spend=counted, budgets=(Budget(limit_usd=1),))
    gw = serve(catalog=_catalog(upstream_url), policy=policy)
    replies = []
    with httpx.Client(timeout=10) as client:
        # Two model names, two of the gateway's routers, one machine.
        for model in ("starcoder2", "starcoder2-3b"):
            reply = client.post(gw.url + "/v1/completions", json={
                "model": model, "prompt": "def add(a, b):", "max_tokens": 8})
            assert reply.status_code == 200, reply.text
            replies.append(reply)
    for reply, entry in zip(replies, gw.gateway.store.ledger(), strict=True):
        usage = reply.json()["usage"]
        tokens = usage["prompt_tokens"] + usage["completion_tokens"]
        # $0.9/h at the prior's 250 tokens/s is $1 per million tokens: 1,000 nano-dollars a
        # token; the second request is priced from the first's observation.
        cost = float(reply.headers["x-starcoder-router-cost-usd"])
        assert entry.deployment == BOX and entry.cost_nano == round(cost * 1e9)
        assert (entry.cost_nano > 0) is counted
        if reply is replies[0]:
            assert entry.cost_nano == (tokens * 1000 if counted else 0)
    # Every router of the gateway saw both requests on the machine.
    for model in (None, "starcoder2-3b"):
        explained = gw.gateway.router(model).route(prompt="def f():", max_tokens=8).explain()
        assert f"self-hosted price of {BOX}: $0.9/h" in explained
        assert "(observed over 2 requests /" in explained
