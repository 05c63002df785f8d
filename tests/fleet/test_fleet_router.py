"""Replica groups through `Router` and `AsyncRouter` on loopback servers: affinity, a free slot
before a full replica, a cooling replica's keys moving, the strategies, and in-flight counts
freed on every path. Also how groups form and how a config file declares them."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from starcoder_router import (
    AsyncRouter,
    Catalog,
    ConfigError,
    Deployment,
    FleetPolicy,
    ProviderServerError,
    ProviderTimeoutError,
    RetryPolicy,
    Router,
)
from starcoder_router._fleet import replica_groups
from starcoder_router.testing import FakeServer, Reply
from support.router_driver import LOOPBACK_MODES, Driver, Make, drive_fixture

drive = drive_fixture(*LOOPBACK_MODES)
NAMES = ("r0", "r1", "r2")


@pytest.fixture(scope="module")
def servers() -> Iterator[list[FakeServer]]:
    with FakeServer() as a, FakeServer() as b, FakeServer() as c:
        yield [a, b, c]


@pytest.fixture
def make(drive: Driver, servers: list[FakeServer]) -> Make:
    def build(**kwargs: Any) -> Router | AsyncRouter:
        parallel = kwargs.pop("parallel", None)
        deps = [s.deployment(name=n, group="g", parallel=parallel)
                for n, s in zip(NAMES, servers, strict=True)]
        kwargs.setdefault("retry", RetryPolicy(max_retries=0))
        return drive.new_router(catalog=Catalog(variants=Catalog.default().variants,
                                                deployments=deps),
                                tokenizer=False, env={}, **kwargs)

    return build


def _idle(router: Router | AsyncRouter) -> bool:
    return all(router.fleet.in_flight(n) == 0 for n in NAMES)


async def test_a_file_stays_on_its_replica(drive: Driver, make: Make) -> None:
    router = make()
    chosen = {(await drive.complete(router, prefix="def f():\n" + " " * i, suffix="",
                                    path="src/app.py", max_tokens=2)).deployment.name
              for i in range(6)}
    assert len(chosen) == 1
    note = next(n for n in router.route(prefix="x", suffix="", path="src/app.py",
                                        max_tokens=2).notes if n.startswith("replica group"))
    assert f"g: {chosen.pop()} by affinity (file key" in note
    spread = {router.route(prefix="x", path=f"f{i}.py", max_tokens=2).chosen.name
              for i in range(30)}
    assert spread == set(NAMES)  # other files go elsewhere
    assert _idle(router)


def test_the_key_is_the_session_then_the_file_then_the_prompt_head() -> None:
    from starcoder_router import CompletionRequest
    from starcoder_router._fleet import affinity_key

    head = CompletionRequest(prompt="import os\n" * 100 + "x", max_tokens=1)
    other_end = CompletionRequest(prompt="import os\n" * 100 + "y", max_tokens=1)
    assert affinity_key(head) == affinity_key(other_end)  # same head, another cursor
    assert affinity_key(head)[0] == "prompt head"
    with_path = CompletionRequest(prefix="a", path="m.py", tenant="t", max_tokens=1)
    assert affinity_key(with_path) == ("file", "f\0t\0\0m.py")
    chat = CompletionRequest(messages=[{"role": "user", "content": "hi"}], max_tokens=1)
    assert affinity_key(chat)[0] == "prompt head"

    class WithSession:  # a request type that carries a session
        session, tenant, path = "abc", None, "m.py"

    assert affinity_key(WithSession())[0] == "session"  # type: ignore[arg-type]


async def test_a_full_replica_gives_way_to_one_with_a_free_slot(drive: Driver,
                                                               make: Make) -> None:
    router = make(parallel=1)
    home = router.route(prefix="x", path="busy.py", max_tokens=2).chosen.name
    gate = router.fleet.gate(home)
    assert gate is not None
    hold = gate.acquire(urgent=False, wait_s=0)  # its only slot is taken
    try:
        decision = router.route(prefix="x", path="busy.py", max_tokens=2)
        assert decision.chosen.name != home
        assert any("by free slot" in n or "by bounded-load overflow" in n
                   for n in decision.notes)
        assert decision.ranked[-1].deployment.name == home  # full replicas last
        c = await drive.complete(router, prefix="x", path="busy.py", max_tokens=2)
        assert c.deployment.name != home
    finally:
        hold.release()
    assert router.route(prefix="x", path="busy.py", max_tokens=2).chosen.name == home
    assert _idle(router)


async def test_a_cooling_replicas_keys_move_and_only_those(drive: Driver, make: Make) -> None:
    router = make()
    files = [f"pkg/m{i}.py" for i in range(40)]
    before = {f: router.route(prefix="x", path=f, max_tokens=2).chosen.name for f in files}
    gone = before[files[0]]
    router.health.disable(gone, router._core.clock.now() + 60, "test")
    after = {f: router.route(prefix="x", path=f, max_tokens=2).chosen.name for f in files}
    for f in files:
        if before[f] == gone:
            assert after[f] != gone
        else:
            assert after[f] == before[f]
    c = await drive.complete(router, prefix="x", path=files[0], max_tokens=2)
    assert c.deployment.name != gone


@pytest.mark.parametrize("strategy", ["round_robin", "least_loaded"])
async def test_other_strategies_spread_a_single_file(drive: Driver, make: Make,
                                                     strategy: str) -> None:
    router = make(fleet=FleetPolicy(strategy=strategy))  # type: ignore[arg-type]
    chosen = [(await drive.complete(router, prefix="x", path="one.py", max_tokens=2))
              .deployment.name for _ in range(6)]
    assert sorted(set(chosen)) == list(NAMES)
    assert _idle(router)


async def test_holds_are_freed_when_a_replica_fails(drive: Driver, make: Make,
                                                   servers: list[FakeServer]) -> None:
    router = make(retry=RetryPolicy(max_retries=0, max_attempts=3))
    home = router.route(prefix="x", path="err.py", max_tokens=2).chosen.name
    servers[NAMES.index(home)].script(Reply(status=500))
    c = await drive.complete(router, prefix="x", path="err.py", max_tokens=2)
    assert c.deployment.name != home and c.attempts[0].deployment == home
    assert _idle(router)
    for s in servers:
        s.script(Reply(status=500))
    with pytest.raises(ProviderServerError):
        await drive.complete(router, prefix="x", path="err2.py", max_tokens=2)
    assert _idle(router)


async def test_holds_are_freed_on_timeouts_streams_and_early_closes(
        drive: Driver, make: Make, servers: list[FakeServer]) -> None:
    router = make()
    home = router.route(prefix="x", path="slow.py", max_tokens=2).chosen.name
    servers[NAMES.index(home)].script(Reply(delay_s=2.0))
    with pytest.raises(ProviderTimeoutError):
        await drive.complete(router, prefix="x", path="slow.py", max_tokens=2, timeout=0.2)
    assert _idle(router)
    chunks, _completion = await drive.stream(router, prefix="x", path="s.py", max_tokens=4)
    assert chunks and _idle(router)
    async with drive.open_stream(router, prefix="x", path="s.py", max_tokens=8) as s:
        await anext(s)
        assert sum(router.fleet.in_flight(n) for n in NAMES) == 1  # held while it is open
    assert _idle(router)


async def test_holds_are_freed_when_sending_raises_something_unforeseen(
        drive: Driver, make: Make, monkeypatch: pytest.MonkeyPatch) -> None:
    router = make()

    class Broken:
        def send(self, *a: Any, **k: Any) -> Any:
            raise RuntimeError("boom")

        async def asend(self, *a: Any, **k: Any) -> Any:
            raise RuntimeError("boom")

    monkeypatch.setattr(router, "_transport_for", lambda provider: Broken())
    with pytest.raises(RuntimeError, match="boom"):
        await drive.complete(router, prefix="x", path="b.py", max_tokens=2)
    assert _idle(router)


async def test_a_cancelled_async_request_frees_its_hold(servers: list[FakeServer]) -> None:
    deps = [s.deployment(name=n, group="g") for n, s in zip(NAMES, servers, strict=True)]
    async with AsyncRouter(catalog=Catalog(variants=Catalog.default().variants,
                                           deployments=deps),
                           tokenizer=False, env={}, transport="httpx") as router:
        home = router.route(prefix="x", path="c.py", max_tokens=2).chosen.name
        servers[NAMES.index(home)].script(Reply(delay_s=2.0))
        task = asyncio.create_task(router.complete(prefix="x", path="c.py", max_tokens=2))
        while router.fleet.in_flight(home) == 0:
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert router.fleet.in_flight(home) == 0


def _dep(name: str, provider: str = "llamacpp", url: str | None = None, **kw: Any) -> Deployment:
    return Deployment(name=name, provider=provider, variant="starcoder2-3b", model="m",
                      context_window=kw.pop("context_window", 4096), base_url=url, **kw)


def test_which_deployments_form_a_group() -> None:
    a, b = _dep("a", url="http://h1:8080"), _dep("b", url="http://h2:8080")
    assert replica_groups([a, b]) == {"llamacpp/starcoder2-3b": ("a", "b")}
    # One server twice (its two APIs) is not two replicas; nor are other windows.
    assert replica_groups([a, _dep("a2", url="http://h1:8080")]) == {}
    assert replica_groups([a, _dep("c", url="http://h3:8080", context_window=8192)]) == {}
    # A generic server joins only by name; a named group takes any provider.
    oa = _dep("o", provider="openai-compatible", url="http://h4/v1")
    ob = _dep("p", provider="openai-compatible", url="http://h5/v1")
    assert replica_groups([oa, ob]) == {}
    assert replica_groups([oa.model_copy(update={"group": "mine"}),
                           ob.model_copy(update={"group": "mine"})]) == {"mine": ("o", "p")}
    assert replica_groups([a]) == {}
    assert replica_groups([a, b], auto=False) == {}  # FleetPolicy(auto_groups=False)


def test_a_config_file_declares_groups_parallel_and_the_fleet(tmp_path: Path) -> None:
    cfg = tmp_path / "router.toml"
    cfg.write_text("""
[fleet]
strategy = "least_loaded"
epsilon = 0.5

[[deployments]]
name = "box-a"
provider = "ollama"
variant = "starcoder2-3b"
model = "starcoder2:3b"
context_window = 16384
base_url = "http://10.0.0.1:11434"
parallel = 4
group = "team"

[[deployments]]
name = "box-b"
provider = "ollama"
variant = "starcoder2-3b"
model = "starcoder2:3b"
context_window = 16384
base_url = "http://10.0.0.2:11434"
parallel = 2
group = "team"
""")
    with Router.from_config(cfg, env={}, tokenizer=False) as router:
        assert router.fleet.groups == {"team": ("box-a", "box-b")}
        assert router.fleet.policy == FleetPolicy(strategy="least_loaded", epsilon=0.5)
        assert (router.fleet.slots("box-a"), router.fleet.slots("box-b")) == (4, 2)
    for bad, field in (('[fleet]\nstrategy = "random"\n', r"\[fleet\] strategy"),
                       ("[fleet]\nepsilon = 0\n", r"\[fleet\] epsilon"),
                       ('[[deployments]]\nname = "x"\nprovider = "ollama"\nvariant = '
                        '"starcoder2-3b"\nmodel = "m"\ncontext_window = 8\nparallel = 0\n',
                        "parallel")):
        cfg.write_text(bad)
        with pytest.raises(ConfigError, match=field):
            Router.from_config(cfg, env={}, tokenizer=False)
