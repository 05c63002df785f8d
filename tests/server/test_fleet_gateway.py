"""Replica groups through the gateway: one fleet for all its routers, affinity on the prompt's
head (the OpenAI API has no file name), and no request left counted in flight."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

from starcoder_router import Catalog, FleetPolicy, RetryPolicy
from starcoder_router.testing import FakeServer

NAMES = ("box-a", "box-b", "box-c")


@pytest.fixture
def replicas() -> Iterator[list[FakeServer]]:
    with FakeServer() as a, FakeServer() as b, FakeServer() as c:
        yield [a, b, c]


def test_the_gateway_keeps_a_prompt_on_its_replica(serve: Any,
                                                   replicas: list[FakeServer]) -> None:
    deps = [s.deployment(name=n, group="team", parallel=2)
            for n, s in zip(NAMES, replicas, strict=True)]
    running = serve(catalog=Catalog(variants=Catalog.default().variants, deployments=deps),
                    retry=RetryPolicy(max_retries=0), tokenizer=False,
                    fleet=FleetPolicy(epsilon=0.25))
    fleet = running.gateway.fleet
    assert fleet.groups == {"team": NAMES}
    head = "import os\nimport sys\n\n\ndef main():\n" * 20
    with openai.OpenAI(base_url=running.url + "/v1", api_key="x", max_retries=0,
                       timeout=30) as client:
        used = set()
        for model in ("starcoder2", "starcoder2-3b", "starcoder2"):  # two routers, one fleet
            for i in range(3):
                raw = client.completions.with_raw_response.create(
                    model=model, prompt=head + "    x = " + "1" * i, max_tokens=2)
                used.add(raw.headers["x-starcoder-router-deployment"])
        assert len(used) == 1
        others = {client.completions.with_raw_response.create(
            model="starcoder2", prompt=f"# file {i}\n" + head, max_tokens=2)
            .headers["x-starcoder-router-deployment"] for i in range(24)}
    assert others == set(NAMES)
    assert all(fleet.in_flight(n) == 0 for n in NAMES)
    assert all(r._core.fleet is fleet for r in running.gateway._routers.values())
