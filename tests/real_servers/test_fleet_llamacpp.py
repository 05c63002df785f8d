"""Two real llama-servers of one model form a replica group with no configuration: a file's
requests stay on one replica, whose slot then reuses its prompt (the server's own
`timings.prompt_n` says how much it evaluated), and when a replica is killed mid-run its files
move to the other, nothing hangs, and no slot or budget hold is left behind."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from starcoder_router import (
    Budget,
    Catalog,
    CostPolicy,
    Deployment,
    HealthPolicy,
    MemoryStore,
    RetryPolicy,
)
from starcoder_router._stores.base import BudgetKey, LedgerEntry, Reservation
from support import llama_server as _process
from support.router_driver import Driver, drive_fixture

drive = drive_fixture("sync", "async-aiohttp")

# A real file's worth of code: about 600 tokens of prompt.
SOURCE = (Path(json.__file__).parent / "decoder.py").read_text()[:2400]


class TrackingStore(MemoryStore):
    """A MemoryStore that knows which reservations are still held."""

    def __init__(self) -> None:
        super().__init__()
        self.held: set[str] = set()
        self.lock = threading.Lock()

    def reserve(self, keys: Sequence[BudgetKey], amount_nano: int, ttl_s: float) -> Reservation:
        res = super().reserve(keys, amount_nano, ttl_s)
        with self.lock:
            self.held.add(res.id)
        return res

    def settle(self, reservation: Reservation, actual_nano: int,
               entry: LedgerEntry | None = None) -> None:
        super().settle(reservation, actual_nano, entry)
        with self.lock:
            self.held.discard(reservation.id)

    def release(self, reservation: Reservation, entry: LedgerEntry | None = None) -> None:
        super().release(reservation, entry)
        with self.lock:
            self.held.discard(reservation.id)


@pytest.fixture(scope="module")
def two_servers(llama_server_bin: Path, tiny_gguf_constant: Path,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Any]]:
    """Two servers of four slots each, for this module only: its last test kills one."""
    logs = tmp_path_factory.mktemp("replicas")
    with ExitStack() as stack:
        yield [stack.enter_context(_process.running_llama_server(
            llama_server_bin, tiny_gguf_constant, log_path=logs / f"replica-{i}.log",
            extra_args=("-np", "4"))) for i in range(2)]


async def _probed(router: Any) -> None:
    """Wait for the background probe to read both servers' slots from /slots."""
    router.route(prefix="x", path="probe.py", max_tokens=1)
    for _ in range(500):
        if router.fleet.slots("replica-0") == 4 and router.fleet.slots("replica-1") == 4:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the slots were never probed")


def _deps(servers: list[Any]) -> list[Deployment]:
    return [Deployment(name=f"replica-{i}", provider="llamacpp", variant="starcoder2-3b",
                       model=s.model_id, context_window=s.n_ctx, base_url=s.base_url,
                       capabilities=frozenset({"completion", "fim", "streaming"}))
            for i, s in enumerate(servers)]


def _prompt_n(server: Any, prefix: str) -> int:
    """What the server evaluated for this request: its own `timings.prompt_n`."""
    reply = httpx.post(server.base_url + "/v1/completions", timeout=30, json={
        "prompt": prefix, "max_tokens": 1, "temperature": 0}).json()
    return int(reply["timings"]["prompt_n"])


async def test_a_file_stays_on_its_replica_and_its_slot_stays_warm(
        drive: Driver, two_servers: list[Any], exact_counter: Any) -> None:
    router = drive.new_router(catalog=Catalog(variants=Catalog.default().variants,
                                              deployments=_deps(two_servers)),
                              tokenizer=exact_counter, env={},
                              retry=RetryPolicy(max_retries=0))
    assert router.fleet.groups == {"llamacpp/starcoder2-3b": ("replica-0", "replica-1")}
    await _probed(router)  # each server's four slots, read from /slots in the background
    used = set()
    for cut in range(1200, 1236, 6):  # typing: the prefix grows a few characters a time
        c = await drive.complete(router, prefix=SOURCE[:cut], suffix=SOURCE[cut:cut + 200],
                                 path="json/decoder.py", max_tokens=2, temperature=0)
        used.add(c.deployment.name)
    assert len(used) == 1
    assert all(router.fleet.in_flight(d) == 0 for d in ("replica-0", "replica-1"))
    # Same head, one replica: its slot holds the prompt, so a repeat costs the server little.
    home = two_servers[int(used.pop()[-1])]
    warm = _prompt_n(home, SOURCE[:1300])
    again = _prompt_n(home, SOURCE[:1306])
    assert again < warm / 4 or warm < 8


# Last in the module: it kills a server. One mode (the flow is the same in both routers).
@pytest.mark.parametrize("drive", ["async-aiohttp"], indirect=True)
async def test_a_replica_killed_mid_run(drive: Driver, two_servers: list[Any],
                                        exact_counter: Any) -> None:
    store = TrackingStore()
    router = drive.new_router(
        catalog=Catalog(variants=Catalog.default().variants, deployments=_deps(two_servers)),
        tokenizer=exact_counter, env={}, store=store,
        policy=CostPolicy(budgets=[Budget(limit_usd=1.0)]),
        retry=RetryPolicy(max_retries=0, timeout_s=20.0),
        health=HealthPolicy(failure_threshold=1, cooldown_s=60.0, max_wait_s=0.0))
    await _probed(router)
    # Four files, four slots a server: the bound (ceil(1.25 x 5 keys / 2) = 4) never fills a
    # replica, so no request is moved for a free slot.
    files = [f"pkg/mod{i}.py" for i in range(6, 10)]
    home = {f: router.route(prefix=SOURCE[:800], path=f, max_tokens=1).chosen.name
            for f in files}
    assert set(home.values()) == {"replica-0", "replica-1"}  # both replicas have files
    victim = two_servers[0]

    async def session(f: str, n: int) -> list[str]:
        names = []
        for k in range(n):
            c = await drive.complete(router, prefix=SOURCE[:400 + 4 * k], suffix="\n",
                                     path=f, max_tokens=8, temperature=0)
            names.append(c.deployment.name)
        return names

    async def run_all(n: int) -> list[list[str]]:
        return list(await asyncio.gather(*(session(f, n) for f in files)))

    before = await run_all(2)
    assert all(set(names) == {home[f]} for f, names in zip(files, before, strict=True))
    # Kill replica-0 while every session has requests going.
    killer = asyncio.get_running_loop().call_later(0.1, os.kill, victim.pid, signal.SIGKILL)
    try:
        during = await asyncio.wait_for(run_all(3), timeout=60)
    finally:
        killer.cancel()
    for f, names in zip(files, during, strict=True):
        if home[f] == "replica-1":
            assert set(names) == {"replica-1"}  # untouched files stay
        else:
            assert names[-1] == "replica-1"  # the dead replica's files moved
    decision = router.route(prefix=SOURCE[:800], path=files[0], max_tokens=1)
    assert decision.chosen.name == "replica-1"
    assert all(router.fleet.in_flight(d) == 0 for d in ("replica-0", "replica-1"))
    assert store.held == set()
