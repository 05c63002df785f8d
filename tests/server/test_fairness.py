"""Fair admission across tenants (`_server/fairness.py`): each tenant has a cap on its requests
in flight and the gateway one in all; requests over a cap wait, unread, and slots go to the
tenants with requests waiting in turn; a bounded queue and a bounded wait answer 429 naming the
cap. Steps that parse and route run one per tenant per pass of the event loop."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path
from typing import Any

import httpx
import pytest
from upstream import Reply  # loaded by conftest.py

from starcoder_router._server.fairness import Fairness, Turns
from starcoder_router._server.problems import GatewayError
from starcoder_router._server.settings import (
    ServerSettings,
    TenantSettings,
    load_server_settings,
)
from starcoder_router._server.tenants import hash_key

KEYS = {"acme": "sk-fair-acme-1", "globex": "sk-fair-globex-2", "initech": "sk-fair-init-3"}


def _tenant(name: str, **kw: Any) -> TenantSettings:
    return TenantSettings(name=name, key_sha256=hash_key(KEYS[name]), **kw)


def _fairness(**kw: Any) -> Fairness:
    return Fairness(ServerSettings(**kw))


async def _hold(fairness: Fairness, tenant: TenantSettings | None, log: list[str],
                release: asyncio.Event) -> None:
    async with fairness.turn(tenant):
        log.append(tenant.name if tenant else "-")
        await release.wait()


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_tenant_over_its_cap_waits_while_another_goes_on() -> None:
    fairness = _fairness(max_requests_in_flight_per_tenant=2)
    acme, globex = _tenant("acme"), _tenant("globex")
    log: list[str] = []
    release = asyncio.Event()
    tasks = [asyncio.create_task(_hold(fairness, acme, log, release)) for _ in range(4)]
    tasks.append(asyncio.create_task(_hold(fairness, globex, log, release)))
    await _settle()
    assert sorted(log) == ["acme", "acme", "globex"]
    assert fairness.in_flight == 3 and fairness.waiting() == 2
    release.set()
    await asyncio.gather(*tasks)
    assert log.count("acme") == 4
    assert fairness.in_flight == 0 and fairness.waiting() == 0


async def test_a_tenants_own_cap_overrides_the_default() -> None:
    fairness = _fairness(max_requests_in_flight_per_tenant=1)
    acme = _tenant("acme", max_requests_in_flight=3)
    log: list[str] = []
    release = asyncio.Event()
    tasks = [asyncio.create_task(_hold(fairness, acme, log, release)) for _ in range(4)]
    await _settle()
    assert len(log) == 3
    release.set()
    await asyncio.gather(*tasks)


async def test_free_slots_go_to_the_waiting_tenants_in_turn() -> None:
    # One slot in all: acme queues three requests before globex and initech queue one each;
    # the slot still alternates between the tenants instead of serving acme's queue first.
    fairness = _fairness(max_requests_in_flight=1)
    order: list[str] = []
    gates: list[asyncio.Event] = []

    async def one(tenant: TenantSettings) -> None:
        async with fairness.turn(tenant):
            order.append(tenant.name)
            gate = asyncio.Event()
            gates.append(gate)
            await gate.wait()

    first = asyncio.create_task(one(_tenant("acme")))
    await _settle()
    tasks = [asyncio.create_task(one(_tenant(n)))
             for n in ("acme", "acme", "acme", "globex", "initech")]
    await _settle()
    while len(order) < 6:
        gates[-1].set()
        await _settle()
    gates[-1].set()
    await asyncio.gather(first, *tasks)
    assert order == ["acme", "acme", "globex", "initech", "acme", "acme"]


async def test_a_full_queue_and_a_long_wait_are_a_429_naming_the_cap() -> None:
    fairness = _fairness(max_requests_in_flight_per_tenant=1, max_queued_per_tenant=1,
                         max_queue_wait_s=0.05)
    acme = _tenant("acme")
    release = asyncio.Event()
    holder = asyncio.create_task(_hold(fairness, acme, [], release))
    waiter = asyncio.create_task(_hold(fairness, acme, [], release))
    await _settle()
    with pytest.raises(GatewayError) as full:
        async with fairness.turn(acme):
            pass
    assert full.value.problem.status == 429
    assert "max_queued_per_tenant" in full.value.problem.message
    assert full.value.problem.retry_after is not None
    with pytest.raises(GatewayError) as late:
        await waiter
    assert late.value.problem.status == 429
    assert "max_queue_wait_s" in late.value.problem.message
    release.set()
    await holder
    assert fairness.in_flight == 0 and fairness.waiting() == 0


async def test_a_request_given_up_while_waiting_leaks_no_slot() -> None:
    fairness = _fairness(max_requests_in_flight_per_tenant=1)
    acme = _tenant("acme")
    release = asyncio.Event()
    holder = asyncio.create_task(_hold(fairness, acme, [], release))
    waiters = [asyncio.create_task(_hold(fairness, acme, [], release)) for _ in range(3)]
    await _settle()
    waiters[0].cancel()
    release.set()
    await holder
    waiters[1].cancel()  # granted, perhaps, just as it is given up
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert isinstance(results[0], asyncio.CancelledError)
    assert fairness.in_flight == 0 and fairness.waiting() == 0


async def test_requests_without_a_tenant_share_only_the_gateways_cap() -> None:
    fairness = _fairness(max_requests_in_flight_per_tenant=1, max_requests_in_flight=3)
    log: list[str] = []
    release = asyncio.Event()
    tasks = [asyncio.create_task(_hold(fairness, None, log, release)) for _ in range(5)]
    await _settle()
    assert len(log) == 3
    release.set()
    await asyncio.gather(*tasks)


async def test_one_step_per_tenant_per_pass_of_the_loop() -> None:
    turns = Turns()
    steps: list[str] = []

    async def step(name: str, key: str) -> None:
        await turns.take(key)
        steps.append(name)

    tasks = [asyncio.create_task(step(f"a{i}", "acme")) for i in range(5)]
    tasks.append(asyncio.create_task(step("g", "globex")))
    await asyncio.gather(*tasks)
    # globex's one step does not wait behind acme's five: it runs in the first pass.
    assert steps.index("g") <= 1
    assert [s for s in steps if s != "g"] == [f"a{i}" for i in range(5)]


async def test_a_task_keeps_its_turn_within_a_pass() -> None:
    turns = Turns()
    await turns.take("acme")
    await asyncio.wait_for(turns.take("acme"), 0.01)  # no second wait for the same step


def test_the_caps_load_from_the_config(tmp_path: Path) -> None:
    path = tmp_path / "router.toml"
    path.write_text(textwrap.dedent(f"""
        [server]
        max_requests_in_flight_per_tenant = 3
        max_requests_in_flight = 40
        max_queued_per_tenant = 5
        max_queue_wait_s = 2.5

        [[server.tenants]]
        name = "acme"
        key_sha256 = "{hash_key(KEYS['acme'])}"
        max_requests_in_flight = 12
    """))
    settings = load_server_settings(path)
    assert (settings.max_requests_in_flight_per_tenant, settings.max_requests_in_flight,
            settings.max_queued_per_tenant, settings.max_queue_wait_s) == (3, 40, 5, 2.5)
    assert settings.tenants[0].max_requests_in_flight == 12
    defaults = ServerSettings()
    assert defaults.max_requests_in_flight_per_tenant == 8
    assert defaults.max_requests_in_flight == 256


async def _burst(url: str, key: str, n: int) -> list[int]:
    async with httpx.AsyncClient(timeout=20, limits=httpx.Limits(max_connections=n)) as c:
        replies = await asyncio.gather(*(
            c.post(url + "/v1/completions", json={"prompt": f"def f{i}():", "max_tokens": 4},
                   headers={"Authorization": f"Bearer {key}"})
            for i in range(n)))
    return [r.status_code for r in replies]


def test_over_the_queue_a_tenant_gets_429_and_another_is_served(serve: Any,
                                                                 upstream: Any) -> None:
    gw = serve(settings=ServerSettings(
        tenants=(_tenant("acme"), _tenant("globex")), max_requests_in_flight_per_tenant=2,
        max_queued_per_tenant=2))
    upstream.script(*[Reply(delay_s=1.0)] * 2)  # the two acme admits first; the rest at once

    async def both() -> list[int]:
        flood = asyncio.create_task(_burst(gw.url, KEYS["acme"], 8))
        await asyncio.sleep(0.2)
        async with httpx.AsyncClient(timeout=20) as c:
            r = await c.post(gw.url + "/v1/completions",
                             json={"prompt": "import os\nclass Q:", "max_tokens": 4},
                             headers={"Authorization": f"Bearer {KEYS['globex']}"})
        assert r.status_code == 200, r.text
        return await flood

    statuses = asyncio.run(both())
    assert sorted(statuses) == [200] * 4 + [429] * 4
    # globex reached the upstream while acme's first two held its slots, before acme's queue.
    prompts = [b["prompt"] for b in upstream.bodies]
    assert prompts.index("import os\nclass Q:") == 2, prompts
    with httpx.Client(timeout=10) as c:
        r = c.post(gw.url + "/v1/completions", json={"prompt": "x"},
                   headers={"Authorization": f"Bearer {KEYS['acme']}"})
    assert r.status_code == 200
    assert gw.gateway.fairness.in_flight == 0


async def test_with_no_queue_the_next_request_is_a_429_and_the_slot_still_frees() -> None:
    fairness = _fairness(max_requests_in_flight_per_tenant=1, max_queued_per_tenant=0)
    acme = _tenant("acme")
    release = asyncio.Event()
    holder = asyncio.create_task(_hold(fairness, acme, [], release))
    await _settle()
    with pytest.raises(GatewayError):
        async with fairness.turn(acme):
            pass
    release.set()
    await holder  # giving the slot back finds no empty queue to serve
    async with fairness.turn(acme):
        assert fairness.in_flight == 1
