"""The first-token deadline: a deployment with no output by `first_token_timeout_s` is cut off,
booked, reported to health, and the next one tried, for `complete()` and `stream()`, through
`Router` and `AsyncRouter` (both transports) against real loopback servers."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator
from typing import Any

import pytest
from faults.fault_support import BUDGET, TrackingStore
from hypothesis import given
from hypothesis import strategies as st

from starcoder_router import (
    AsyncRouter,
    Catalog,
    CompletionRequest,
    ConfigError,
    CostPolicy,
    Deployment,
    FirstTokenTimeoutError,
    HealthPolicy,
    InvalidRequestError,
    ProviderTimeoutError,
    Router,
)
from starcoder_router.testing import FakeServer, Reply
from support.router_driver import LOOPBACK_MODES, Driver, drive_fixture

drive = drive_fixture(*LOOPBACK_MODES)

DEADLINE_S = 1.0  # a loaded machine still answers a plain stream well within it
SLOW_S = 10.0  # far past the deadline: waiting it out would show in the elapsed time


@pytest.fixture
def servers() -> Iterator[tuple[FakeServer, FakeServer]]:
    with FakeServer(text="slow answer") as slow, FakeServer(text="fast answer") as fast:
        yield slow, fast


def catalog(slow: FakeServer, fast: FakeServer, **slow_options: Any) -> Catalog:
    # The slow one is cheaper, so it is tried first; its prompt is billed ($1/M tokens).
    return Catalog.default().with_deployments(
        slow.deployment(name="slow", input_usd_per_mtok=1.0).model_copy(update=slow_options),
        fast.deployment(name="fast", input_usd_per_mtok=2.0))


def router_for(drive: Driver, cat: Catalog, store: TrackingStore) -> Router | AsyncRouter:
    return drive.new_router(
        catalog=cat, store=store, env={}, tokenizer=False,
        policy=CostPolicy(allow_providers={"openai-compatible"}, budgets=(BUDGET,)),
        health=HealthPolicy(failure_threshold=1, cooldown_s=600))


async def run(drive: Driver, router: Router | AsyncRouter, kind: str, **fields: Any) -> Any:
    if kind == "complete":
        return await drive.complete(router, prompt="def f():", max_tokens=8, **fields)
    _chunks, completion = await drive.stream(router, prompt="def f():", max_tokens=8, **fields)
    return completion


async def warm(drive: Driver, router: Router | AsyncRouter) -> None:
    """One plain request first: opening a router's first connection (its TLS context) takes a
    good part of a deadline on a loaded machine, and is not what these tests are about."""
    await drive.complete(router, prompt="x", max_tokens=2)


async def settled(drive: Driver, router: Router | AsyncRouter, store: TrackingStore,
                  entries: int) -> None:
    """Wait (bounded) until nothing the request started is still running and its books are
    complete."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        running = (len(asyncio.all_tasks()) > 1 if drive.is_async
                   else bool(getattr(router, "hedge_threads", ())))
        if not running and len(store.ledger()) >= entries:
            break
        await asyncio.sleep(0.02)
    assert not (len(asyncio.all_tasks()) > 1 if drive.is_async
                else getattr(router, "hedge_threads", ())), "a read outlived its request"


@pytest.mark.parametrize("kind", ["complete", "stream"])
async def test_a_slow_first_token_is_cut_off_booked_and_the_next_deployment_answers(
        drive: Driver, servers: tuple[FakeServer, FakeServer], kind: str) -> None:
    slow, fast = servers
    store = TrackingStore()
    router = router_for(drive, catalog(slow, fast), store)
    await warm(drive, router)
    slow.script(Reply(first_chunk_delay_s=SLOW_S))
    started = time.monotonic()
    c = await run(drive, router, kind, first_token_timeout_s=DEADLINE_S)
    elapsed = time.monotonic() - started
    assert elapsed < SLOW_S / 2  # the slow reply was not waited out
    assert (c.text, c.deployment.name) == ("fast answer", "fast")
    cut_off, answered = c.attempts
    assert (cut_off.deployment, cut_off.outcome) == ("slow", "error")
    assert isinstance(cut_off.error, FirstTokenTimeoutError)
    assert isinstance(cut_off.error, ProviderTimeoutError)
    assert cut_off.error.timeout_s == DEADLINE_S and "first-token deadline" in str(cut_off.error)
    assert cut_off.cost_nano > 0 and cut_off.usage is not None  # its prompt, which it received
    assert (answered.deployment, answered.outcome) == ("fast", "ok")
    assert slow.requests[-1].body["stream"] is True  # a complete() streams, to see the token
    # Health heard of it: the slow deployment's circuit opened on the timeout.
    assert "FirstTokenTimeoutError" in (router.health.view(0.0)["slow"].reason or "")
    await settled(drive, router, store, entries=3)
    ledger = store.ledger()
    timed_out = [e for e in ledger if e.deployment == "slow" and e.outcome == "cancelled"]
    assert [e.cost_nano for e in timed_out] == [cut_off.cost_nano]  # booked once, at its cost
    assert len(ledger) == 3  # warm-up, the cut-off attempt, the answer: nothing more came later
    store.assert_balanced()  # every hold settled or released, once


@pytest.mark.parametrize("drive", ["sync", "async-aiohttp"], indirect=True)
@pytest.mark.parametrize("kind", ["complete", "stream"])
async def test_when_every_deployment_is_slow_the_error_names_the_deadline(
        drive: Driver, servers: tuple[FakeServer, FakeServer], kind: str) -> None:
    slow, fast = servers
    store = TrackingStore()
    router = router_for(drive, catalog(slow, fast), store)
    await warm(drive, router)
    slow.script(Reply(first_chunk_delay_s=SLOW_S))
    fast.script(Reply(first_chunk_delay_s=SLOW_S))
    with pytest.raises(FirstTokenTimeoutError, match=r"first-token deadline of 1 s") as info:
        await run(drive, router, kind, first_token_timeout_s=DEADLINE_S)
    assert [(a.deployment, a.outcome) for a in info.value.attempts] == [
        ("slow", "error"), ("fast", "error")]
    await settled(drive, router, store, entries=3)
    assert sorted(e.outcome for e in store.ledger()) == ["cancelled", "cancelled", "ok"]
    store.assert_balanced()


@pytest.mark.parametrize("drive", ["sync", "async-aiohttp"], indirect=True)
async def test_the_deployment_default_applies_and_a_request_overrides_it(
        drive: Driver, servers: tuple[FakeServer, FakeServer]) -> None:
    slow, fast = servers
    store = TrackingStore()
    router = router_for(drive, catalog(slow, fast, first_token_timeout_s=DEADLINE_S), store)
    await warm(drive, router)
    slow.script(Reply(first_chunk_delay_s=SLOW_S))
    c = await run(drive, router, "complete")  # the slow deployment's own deadline
    assert c.deployment.name == "fast"
    router.health.record_success("slow", 1e12, 0.1)  # its circuit closes again
    slow.script(Reply(first_chunk_delay_s=1.0))
    c = await run(drive, router, "stream", first_token_timeout_s=30)  # the request's wins
    assert (c.deployment.name, [a.outcome for a in c.attempts]) == ("slow", ["ok"])
    await settled(drive, router, store, entries=3)
    store.assert_balanced()


@pytest.mark.parametrize("drive", ["sync"], indirect=True)
async def test_a_first_token_in_time_is_not_disturbed(
        drive: Driver, servers: tuple[FakeServer, FakeServer]) -> None:
    slow, fast = servers
    store = TrackingStore()
    router = router_for(drive, catalog(slow, fast), store)
    slow.script(Reply(first_chunk_delay_s=0.05, chunk_delay_s=0.3, chunks=2))
    c = await run(drive, router, "complete", first_token_timeout_s=5)
    # Only the first token races the deadline: a slow rest of the stream is read to its end.
    assert (c.text, c.deployment.name, len(c.attempts)) == ("slow answer", "slow", 1)
    store.assert_balanced()


@pytest.mark.parametrize("drive", ["sync", "async-aiohttp"], indirect=True)
async def test_output_that_fails_its_format_under_a_deadline_falls_back_as_without_one(
        drive: Driver, servers: tuple[FakeServer, FakeServer]) -> None:
    slow, fast = servers
    store = TrackingStore()
    router = router_for(drive, catalog(slow, fast), store)
    slow.script(Reply(text="not json"))
    fast.script(Reply(text='{"a": 1}'))
    c = await run(drive, router, "complete", first_token_timeout_s=5, response_format="json")
    assert (c.text, c.deployment.name) == ('{"a": 1}', "fast")
    assert [a.outcome for a in c.attempts] == ["error", "ok"]
    store.assert_balanced()


# -- the inputs --------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [0, -1, 0.0, math.nan, math.inf, 600.5, "soon"])
def test_a_bad_request_deadline_is_refused(bad: object) -> None:
    with pytest.raises(InvalidRequestError, match="first_token_timeout_s"):
        CompletionRequest(prompt="x", first_token_timeout_s=bad)  # type: ignore[arg-type]


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_a_request_deadline_is_accepted_exactly_in_range(value: float) -> None:
    ok = 0 < value <= 600
    try:
        req = CompletionRequest(prompt="x", first_token_timeout_s=value)
    except InvalidRequestError:
        assert not ok
    else:
        assert ok and req.first_token_timeout_s == value


@pytest.mark.parametrize("bad", [0, -2, math.inf, 1000])
def test_a_bad_deployment_default_is_a_config_error(bad: float) -> None:
    with pytest.raises(ConfigError, match="first_token_timeout_s"):
        Deployment(provider="ollama", variant="starcoder2-3b", model="starcoder2:3b",
                   context_window=4096, first_token_timeout_s=bad)


def test_the_config_file_sets_a_deployment_default(tmp_path: Any) -> None:
    path = tmp_path / "router.toml"
    path.write_text(
        '[[deployments]]\nprovider = "ollama"\nvariant = "starcoder2-3b"\n'
        'model = "starcoder2:3b"\ncontext_window = 4096\nfirst_token_timeout_s = 0.75\n')
    with Router.from_config(path, env={}, tokenizer=False) as router:
        [dep] = [d for d in router.catalog.deployments if d.name == "ollama/starcoder2-3b"]
        assert dep.first_token_timeout_s == 0.75
    path.write_text(path.read_text().replace("0.75", "-1"))
    with pytest.raises(ConfigError, match=r"\[\[deployments\]\] #1 first_token_timeout_s"):
        Router.from_config(path, env={}, tokenizer=False)




def test_explain_shows_each_candidates_deadline(servers: tuple[FakeServer, FakeServer]) -> None:
    slow, fast = servers
    with Router(catalog=catalog(slow, fast, first_token_timeout_s=2.5), env={}, tokenizer=False,
                policy=CostPolicy(allow_providers={"openai-compatible"})) as router:
        text = router.route(prompt="x").explain()
        assert "slow" in text and "(first token within 2.5 s)" in text
        assert text.count("first token within") == 1  # the fast one has no deadline
        text = router.route(prompt="x", first_token_timeout_s=0.25).explain()
        assert text.count("(first token within 0.25 s)") == 2
