"""Router and AsyncRouter: fallbacks, retries, deadlines, context escalation, health, streams,
costs. Each test runs through both (the `drive` fixture); AsyncRouter uses the httpx transport,
which respx intercepts (the aiohttp transport is covered on a real loopback server in
tests/providers/test_transports.py and against llama-server in tests/real_servers).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from starcoder_router import (
    AuthenticationError,
    BadRequestError,
    Budget,
    Catalog,
    CostPolicy,
    FakeClock,
    HealthPolicy,
    HedgePolicy,
    Hooks,
    MemoryStore,
    ProviderServerError,
    RetryPolicy,
    StoreError,
    StreamInterruptedError,
    StructuredOutputError,
    TokenizerCounter,
)
from support.hosted_replies import NAMES, BrokenStore, Wire, ok, sse, status
from support.router_driver import Driver, Make


def big_prefix(counter: TokenizerCounter, tokens: int) -> str:
    line = "    total = accumulate(total, item, weight=3)\n"
    return line * int(tokens / (counter.count(line * 10) / 10))


async def test_first_choice_answers_and_is_costed(drive: Driver, make: Make, wire: Wire,
                                                  store: MemoryStore) -> None:
    wire.script("fw3", ok("return 1", prompt_tokens=12, completion_tokens=4))
    c = await drive.complete(make(), prompt="def f():", max_tokens=16)
    assert (c.text, c.finish_reason, c.deployment.name) == ("return 1", "stop", NAMES["fw3"])
    assert c.usage.prompt_tokens == 12 and c.usage.source == "provider"
    assert c.cost_nano == 12 * 100 + 4 * 100  # $0.10/M each way = 100 nano-dollars per token
    assert [a.outcome for a in c.attempts] == ["ok"]
    assert wire.received["fw3"][0]["context_length_exceeded_behavior"] == "error"
    [entry] = store.ledger()
    assert (entry.deployment, entry.cost_nano, entry.outcome) == (NAMES["fw3"], 1600, "ok")


async def test_costs_match_prices_to_the_cent(drive: Driver, make: Make, wire: Wire,
                                              store: MemoryStore) -> None:
    # The reported usage must be plausible for the prompt (at most twice our exact count).
    wire.script("di15", ok(prompt_tokens=1234, completion_tokens=567))
    router = make(policy=CostPolicy(allow_providers={"deepinfra"}))
    c = await drive.complete(router, prompt="def f():\n" + "    x = 1\n" * 200, max_tokens=600)
    assert c.cost_usd == pytest.approx(1234 * 0.20 / 1e6 + 567 * 0.60 / 1e6, abs=1e-12)
    assert c.cost_nano == 246_800 + 340_200
    assert store.ledger()[0].cost_nano == c.cost_nano


async def test_retries_with_exponential_backoff(drive: Driver, make: Make, wire: Wire,
                                                clock: FakeClock) -> None:
    wire.script("fw3", status(503, "Service Overloaded"), status(502), ok())
    c = await drive.complete(make(), prompt="x")
    assert clock.sleeps == [0.5, 1.0]
    assert [(a.outcome, a.retry) for a in c.attempts] == [("error", 0), ("error", 1), ("ok", 2)]
    assert isinstance(c.attempts[0].error, ProviderServerError)
    assert wire.calls("fw3") == 3 and wire.calls("fw7") == 0


async def test_jitter_stays_within_its_bound(drive: Driver, make: Make, wire: Wire,
                                             clock: FakeClock) -> None:
    wire.script("fw3", status(500), status(500), ok())
    retry = RetryPolicy(max_retries=2, backoff_initial_s=1, jitter_s=0.5)
    await drive.complete(make(retry=retry), prompt="x")
    assert 1.0 <= clock.sleeps[0] <= 1.5 and 2.0 <= clock.sleeps[1] <= 2.5


async def test_retry_after_is_honoured(drive: Driver, make: Make, wire: Wire,
                                       clock: FakeClock) -> None:
    wire.script("fw3", status(429, "slow down", {"retry-after": "3"}), ok())
    c = await drive.complete(make(), prompt="x")
    assert clock.sleeps == [3.0]
    assert c.deployment.name == NAMES["fw3"]


async def test_exhausted_retries_fall_back_in_order(drive: Driver, make: Make, wire: Wire,
                                                    store: MemoryStore) -> None:
    wire.always("fw3", status(500))
    wire.always("fw7", status(503))
    c = await drive.complete(make(), prompt="x")
    assert c.deployment.name == NAMES["di15"]
    assert [a.deployment for a in c.attempts] == [NAMES["fw3"]] * 3 + [NAMES["fw7"]] * 3 + [
        NAMES["di15"]]
    assert c.total_cost_usd == c.cost_usd  # failed attempts cost nothing
    assert len(store.ledger()) == 1


async def test_retry_after_beyond_the_deadline_moves_on(drive: Driver, make: Make, wire: Wire,
                                                        clock: FakeClock) -> None:
    wire.script("fw3", status(429, "busy", {"retry-after": "5"}))
    c = await drive.complete(make(), prompt="x", timeout=2)
    assert clock.sleeps == []
    assert c.deployment.name == NAMES["fw7"]


async def test_deadline_stops_backoff(drive: Driver, make: Make, wire: Wire,
                                      clock: FakeClock) -> None:
    for key in ("fw3", "fw7", "di15"):
        wire.always(key, status(500))
    retry = RetryPolicy(max_retries=5, jitter_s=0, backoff_initial_s=1)
    with pytest.raises(ProviderServerError) as info:
        await drive.complete(make(retry=retry), prompt="x", timeout=2.5)
    assert sum(clock.sleeps) < 2.5
    assert len(info.value.attempts) >= 3
    assert {a.deployment for a in info.value.attempts} == set(NAMES.values())


async def test_auth_error_skips_the_provider(drive: Driver, make: Make, wire: Wire) -> None:
    wire.script("fw3", status(401, "invalid key fw-secret-key-0123456789"))
    c = await drive.complete(make(), prompt="x")
    assert c.deployment.name == NAMES["di15"]
    assert wire.calls("fw7") == 0
    err = c.attempts[0].error
    assert isinstance(err, AuthenticationError)
    assert "fw-secret-key" not in str(err) and "fw-secret-key" not in repr(err)


async def test_bad_request_raises_at_once_when_no_other_provider(drive: Driver, make: Make,
                                                                 wire: Wire) -> None:
    wire.script("fw3", status(400, "unsupported parameter"))
    router = make(policy=CostPolicy(allow_providers={"fireworks"}))
    with pytest.raises(BadRequestError, match="unsupported parameter") as info:
        await drive.complete(router, prompt="x")
    assert wire.calls("fw3") == 1 and wire.calls("fw7") == 0
    assert [a.outcome for a in info.value.attempts] == ["error"]


async def test_context_overflow_refits_for_the_next_window(
        drive: Driver, make: Make, wire: Wire, exact_counter: TokenizerCounter) -> None:
    # Our catalog claims fw3 serves 16k; it really serves 4k.
    fw3 = Catalog.default().deployment(NAMES["fw3"]).model_copy(update={"context_window": 16384})
    catalog = Catalog.default().with_deployments(fw3)
    wire.script("fw3", status(400, "The prompt is too long: 10100, model maximum context "
                                   "length: 4096"))
    router = make(catalog=catalog)
    prefix = big_prefix(exact_counter, 10_000)
    c = await drive.complete(router, prefix=prefix, suffix="\n", max_tokens=100)
    assert c.deployment.name == NAMES["fw7"]
    sent_fw3 = wire.received["fw3"][0]["prompt"]
    sent_fw7 = wire.received["fw7"][0]["prompt"]
    assert sent_fw3 != sent_fw7
    assert exact_counter.count(sent_fw3) > 8192
    assert exact_counter.count(sent_fw7) + 100 <= 8192
    assert c.trimmed is not None and c.trimmed.tokens_after == exact_counter.count(sent_fw7)
    # The smaller window is remembered.
    again = router.route(prefix=prefix, suffix="\n", max_tokens=100)
    assert again.candidate(NAMES["fw3"]).deployment.context_window == 4096


async def test_not_found_disables_the_deployment(drive: Driver, make: Make, wire: Wire,
                                                 clock: FakeClock) -> None:
    wire.script("fw3", status(404, "Model not found, inaccessible, and/or not deployed"))
    router = make(health=HealthPolicy(not_found_cooldown_s=300))
    assert (await drive.complete(router, prompt="x")).deployment.name == NAMES["fw7"]
    assert (await drive.complete(router, prompt="x")).deployment.name == NAMES["fw7"]
    assert wire.calls("fw3") == 1
    clock.advance(301)
    assert (await drive.complete(router, prompt="x")).deployment.name == NAMES["fw3"]


async def test_circuit_breaker_opens_half_opens_and_closes(drive: Driver, make: Make,
                                                           wire: Wire, clock: FakeClock) -> None:
    router = make(retry=RetryPolicy(max_retries=0),
                  health=HealthPolicy(failure_threshold=2, cooldown_s=10))
    wire.script("fw3", status(500), status(500))
    for _ in range(2):
        assert (await drive.complete(router, prompt="x")).deployment.name == NAMES["fw7"]
    # Open: fw3 is not called.
    assert (await drive.complete(router, prompt="x")).deployment.name == NAMES["fw7"]
    assert wire.calls("fw3") == 2
    assert "cooling down" in router.route(prompt="x").explain()
    clock.advance(10)
    # Half-open: one probe goes through, succeeds, and closes the circuit.
    assert (await drive.complete(router, prompt="x")).deployment.name == NAMES["fw3"]
    assert (await drive.complete(router, prompt="x")).deployment.name == NAMES["fw3"]
    assert wire.calls("fw3") == 4


async def test_failed_probe_reopens_the_circuit(drive: Driver, make: Make, wire: Wire,
                                                clock: FakeClock) -> None:
    router = make(retry=RetryPolicy(max_retries=0),
                  health=HealthPolicy(failure_threshold=1, cooldown_s=10))
    wire.script("fw3", status(500), status(500))
    await drive.complete(router, prompt="x")
    clock.advance(10)
    probed = await drive.complete(router, prompt="x")
    assert probed.deployment.name == NAMES["fw7"]  # probe failed
    reopened = await drive.complete(router, prompt="x")
    assert reopened.deployment.name == NAMES["fw7"]  # open again
    assert wire.calls("fw3") == 2


async def test_all_cooling_waits_for_the_earliest(drive: Driver, make: Make, wire: Wire,
                                                  clock: FakeClock) -> None:
    router = make(retry=RetryPolicy(max_retries=0),
                  policy=CostPolicy(allow_providers={"fireworks"}),
                  health=HealthPolicy(failure_threshold=1, cooldown_s=5, max_wait_s=10))
    wire.script("fw3", status(500))
    wire.script("fw7", status(500))
    with pytest.raises(ProviderServerError):
        await drive.complete(router, prompt="x")
    c = await drive.complete(router, prompt="x", timeout=30)
    assert c.deployment.name == NAMES["fw3"]
    assert clock.sleeps and 4.9 <= sum(clock.sleeps) <= 5.1


async def test_stream_falls_back_before_the_first_chunk(drive: Driver, make: Make,
                                                        wire: Wire) -> None:
    wire.script("fw3", status(503))
    wire.script("fw7", sse("def", " f", "()"))
    router = make(retry=RetryPolicy(max_retries=0))
    chunks, completion = await drive.stream(router, prompt="x", max_tokens=8)
    assert [c.text for c in chunks] == ["def", " f", "()", ""]
    assert completion.deployment.name == NAMES["fw7"]
    assert completion.usage.completion_tokens == 3
    assert "stream_options" not in wire.received["fw7"][0]  # Fireworks has no such parameter


async def test_stream_failure_after_the_first_chunk_is_costed(
        drive: Driver, make: Make, wire: Wire, store: MemoryStore,
        exact_counter: TokenizerCounter) -> None:
    wire.script("fw3", sse("def", " fib", cut=True))
    router = make()
    got: list[str] = []
    with pytest.raises(StreamInterruptedError) as info:
        async with drive.open_stream(router, prompt="x") as s:
            async for c in s:
                got.append(c.text)
    err = info.value
    assert got == ["def", " fib"]
    assert err.delivered_text == "def fib" and err.delivered_chunks == 2
    assert err.completion is not None and err.completion.cost_nano > 0
    assert wire.calls("fw7") == 0
    [entry] = store.ledger()
    assert entry.outcome == "partial" and entry.cost_nano == err.completion.cost_nano
    assert entry.completion_tokens == exact_counter.count("def fib")


async def test_closing_a_stream_early_cancels_and_books_the_spend(
        drive: Driver, make: Make, wire: Wire, store: MemoryStore) -> None:
    wire.script("fw3", sse("a", "b", "c", "d"))
    router = make()
    async with drive.open_stream(router, prompt="x") as s:
        first = await anext(s)
    assert first.text == "a"
    [entry] = store.ledger()
    assert entry.outcome == "cancelled" and entry.completion_tokens == 1
    assert entry.prompt_tokens == 1 and entry.cost_nano == 200


async def test_stream_without_usage_is_counted(drive: Driver, make: Make, wire: Wire,
                                               exact_counter: TokenizerCounter) -> None:
    wire.script("fw3", sse("    return", " a + b", usage=None))
    chunks, c = await drive.stream(make(), prefix="def add(a, b):\n", suffix="\n")
    text = "".join(chunk.text for chunk in chunks)
    assert c.usage.source == "counted"
    assert c.usage.completion_tokens == exact_counter.count(text)
    assert c.usage.prompt_tokens == exact_counter.count(wire.received["fw3"][0]["prompt"])


async def test_structured_output_is_validated(drive: Driver, make: Make, wire: Wire,
                                              store: MemoryStore) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    router = make()
    wire.script("di15", ok('{"n": 3}'), ok('{"n": "three"}'))
    json_schema = {"type": "json_schema", "json_schema": {"schema": schema}}
    c = await drive.complete(router, prompt="x", response_format=json_schema)
    assert c.json() == {"n": 3}
    with pytest.raises(StructuredOutputError, match="does not match the schema at n") as info:
        await drive.complete(router, prompt="x", response_format=json_schema)
    assert info.value.completion is not None and info.value.completion.cost_nano > 0
    assert [e.outcome for e in store.ledger()] == ["ok", "error"]


async def test_hooks_and_logs(drive: Driver, make: Make, wire: Wire,
                              caplog: pytest.LogCaptureFixture) -> None:
    seen: dict[str, list[object]] = {"route": [], "attempt": [], "success": [], "failure": []}
    hooks = Hooks(on_route=[seen["route"].append], on_attempt=[seen["attempt"].append],
                  on_success=[seen["success"].append], on_failure=[seen["failure"].append])
    wire.script("fw3", status(500), ok())
    router = make(hooks=hooks)
    caplog.set_level(logging.DEBUG, logger="starcoder_router")
    await drive.complete(router, prompt="SECRET_PROMPT_TEXT")
    assert len(seen["route"]) == 1 and len(seen["attempt"]) == 2 and len(seen["success"]) == 1
    wire.always("fw3", status(401))
    wire.always("di15", status(401))
    with pytest.raises(AuthenticationError):
        await drive.complete(router, prompt="SECRET_PROMPT_TEXT")
    assert len(seen["failure"]) == 1
    assert "SECRET_PROMPT_TEXT" not in caplog.text
    assert "secret-key" not in caplog.text


async def test_a_failing_hook_does_not_fail_the_request(drive: Driver, make: Make, wire: Wire,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    def broken(_: object) -> None:
        raise RuntimeError("hook bug")

    router = make(hooks=Hooks(on_success=[broken]))
    assert (await drive.complete(router, prompt="x")).text == "pass"
    assert "hook bug" in caplog.text


async def test_connection_errors_are_retried(drive: Driver, make: Make, wire: Wire) -> None:
    wire.script("fw3", httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), ok())
    c = await drive.complete(make(), prompt="x")
    kinds = [type(a.error).__name__ for a in c.attempts if a.error]
    assert kinds == ["ProviderConnectionError", "ProviderTimeoutError"]
    assert c.attempts[0].error is not None
    assert c.attempts[0].error.deployment == NAMES["fw3"]


def slow(drive: Driver, delay: float, response: httpx.Response) -> Callable[..., Any]:
    """A reply sent `delay` seconds late; in async mode the wait does not block the loop."""
    if drive.is_async:
        async def answer_later(body: dict[str, object]) -> httpx.Response:
            await asyncio.sleep(delay)
            return response
        return answer_later

    def answer(body: dict[str, object]) -> httpx.Response:
        time.sleep(delay)
        return response
    return answer


async def test_hedging_keeps_the_faster_and_cancels_the_slower(
        drive: Driver, make: Make, wire: Wire, store: MemoryStore) -> None:
    # The slow leg takes 2 s; the answer comes well before (a loaded machine may take a second
    # to start the second leg and read it).
    wire.script("fw3", slow(drive, 2.0, sse("slow", usage=(1, 1))))
    wire.script("fw7", sse("fast", usage=(1, 1)))
    router = make(hedge=HedgePolicy(after_s=0.05))
    started = time.monotonic()
    c = await drive.complete(router, prompt="x", hedge=True)
    assert time.monotonic() - started < 1.5  # the winner did not wait out the slow leg
    assert (c.text, c.deployment.name) == ("fast", NAMES["fw7"])
    outcomes = {a.deployment: a.outcome for a in c.attempts}
    assert outcomes == {NAMES["fw3"]: "lost", NAMES["fw7"]: "ok"}
    deadline = time.monotonic() + 8
    while len(store.ledger()) < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    # Both legs were sent (streaming, to see their first token), and both are costed.
    assert wire.received["fw3"][0]["stream"] is True
    entries = {e.deployment: e for e in store.ledger()}
    assert entries[NAMES["fw3"]].outcome == "cancelled"
    assert entries[NAMES["fw3"]].cost_nano == 100  # its 1-token prompt at $0.10/M
    assert entries[NAMES["fw7"]].cost_nano == 2 * 200


async def test_a_lost_hedge_leg_is_reported_before_complete_returns(
        drive: Driver, make: Make, wire: Wire, store: MemoryStore) -> None:
    # The slow leg is still waiting for its server (it cannot be cut off mid-read: the reply is
    # late, not slow to stream) when the fast one wins; it is reported all the same.
    wire.script("fw3", slow(drive, 0.5, sse("slow", usage=(1, 1))))
    wire.script("fw7", sse("fast", usage=(1, 1)))
    seen: list[tuple[str, str]] = []
    router = make(hedge=HedgePolicy(after_s=0.05),
                  hooks=Hooks(on_attempt=[lambda a: seen.append((a.deployment, a.outcome))]))
    c = await drive.complete(router, prompt="x", hedge=True)
    reported = list(seen)
    assert sorted(reported) == sorted([(NAMES["fw3"], "lost"), (NAMES["fw7"], "ok")])
    assert len(c.attempts) == 2
    loser, winner = c.attempts
    assert (loser.deployment, loser.outcome) == (NAMES["fw3"], "lost")
    assert (winner.deployment, winner.outcome) == (NAMES["fw7"], "ok")
    assert loser.cost_nano == 100 and loser.usage is not None  # its 1-token prompt
    assert c.total_cost_usd == pytest.approx((100 + 400) / 1e9)
    # The loser is booked once, as cancelled, at the cost it was reported with.
    deadline = time.monotonic() + 5
    while len(store.ledger()) < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.6)  # the slow reply has come and gone: nothing more is booked
    entries = sorted((e.deployment, e.outcome, e.cost_nano) for e in store.ledger())
    assert entries == sorted([(NAMES["fw3"], "cancelled", 100), (NAMES["fw7"], "ok", 400)])
    assert seen == reported


async def test_hedging_waits_for_the_threshold(drive: Driver, make: Make, wire: Wire) -> None:
    wire.script("fw3", sse("quick"))
    router = make(hedge=HedgePolicy(after_s=2))
    chunks, completion = await drive.stream(router, prompt="x", hedge=True)
    assert [ch.text for ch in chunks] == ["quick", ""]
    assert wire.calls("fw7") == 0
    assert completion.deployment.name == NAMES["fw3"]


async def test_hedging_is_off_without_a_policy_or_a_latency_objective(drive: Driver, make: Make,
                                                                      wire: Wire) -> None:
    wire.script("fw3", ok())
    router = make(hedge=HedgePolicy(after_s=0.01))
    await drive.complete(router, prompt="x")  # objective cheapest, no hedge=True: plain request
    assert "stream" not in wire.received["fw3"][0]
    router = make()
    await drive.complete(router, prompt="x", hedge=True)  # no HedgePolicy: no hedging
    assert "stream" not in wire.received["fw3"][1]


@pytest.mark.parametrize("failing", ["reserve", "settle"])
async def test_store_failures_are_store_errors(drive: Driver, make: Make, wire: Wire,
                                               store: MemoryStore, failing: str) -> None:
    router = make(store=BrokenStore(store, failing),
                  policy=CostPolicy(budgets=[Budget(limit_usd=1)]))
    with pytest.raises(StoreError, match="spend store failed") as info:
        await drive.complete(router, prompt="x")
    if failing == "reserve":
        assert wire.calls("fw3") == 0 and info.value.unrecorded is None
    else:
        entry = info.value.unrecorded
        assert entry is not None and entry.cost_nano > 0 and entry.deployment == NAMES["fw3"]


class TickingClock(FakeClock):
    """Each reading of the clock moves it on by a second: a slow, steady stream."""

    def now(self) -> float:
        self.advance(1.0)
        return super().now()


async def test_a_stream_that_outlasts_the_deadline_is_cut(drive: Driver, make: Make, wire: Wire,
                                                          store: MemoryStore) -> None:
    # Every line carries text (no blank lines between events, as NDJSON streams look too).
    body = sse(*["tok"] * 50).content.replace(b"\n\n", b"\n")
    wire.script("fw3", httpx.Response(200, content=body,
                                      headers={"content-type": "text/event-stream"}))
    router = make(clock=TickingClock())
    got: list[str] = []
    with pytest.raises(StreamInterruptedError, match="deadline") as info:
        async with drive.open_stream(router, prompt="x", timeout=20) as s:
            async for c in s:
                got.append(c.text)
    assert 0 < len(got) < 50
    assert info.value.delivered_chunks == len(got)
    assert store.ledger()[0].outcome == "partial"
