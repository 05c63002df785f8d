"""A local machine paid by the hour, through `Router` and `AsyncRouter`: `cheapest` ranks it by
its effective price per token, `explain()` says where that price came from, and budgets count
it only when the policy asks."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import pytest
import respx

from starcoder_router import (
    Budget,
    Catalog,
    CostPolicy,
    Deployment,
    FakeClock,
    MemoryStore,
    NoRouteError,
    RetryPolicy,
)
from starcoder_router._stores.base import BudgetKey, LedgerEntry, Reservation
from support.hosted_replies import FW, KEYS, ok, sse, status
from support.router_driver import Driver

LOCAL_URL = "http://127.0.0.1:8000/v1/completions"
HOSTED = "fireworks/starcoder2-3b"  # $0.10 per million tokens in and out
BOX = "box/starcoder2-3b"
CATALOG = Catalog.default()
# Long enough that its byte bound covers the 95 prompt tokens the servers report.
PROMPT = "def f():\n" + "    x = 1\n" * 40


def box(**update: Any) -> Deployment:
    """A vLLM server paid $0.36 an hour ($0.0001 a second), said to move 100k tokens/s."""
    fields: dict[str, Any] = dict(name=BOX, provider="vllm", variant="starcoder2-3b",
                                  model="local-3b", context_window=16384, usd_per_hour=0.36,
                                  tokens_per_second=100_000.0,
                                  base_url="http://127.0.0.1:8000/v1")
    fields.update(update)
    return Deployment(**fields)


def catalog(*deployments: Deployment) -> Catalog:
    return Catalog(variants=CATALOG.variants, deployments=deployments)


class LocalServer:
    """The local server's answers; each takes `busy_s` on the fake clock."""

    def __init__(self, clock: FakeClock):
        self.clock = clock
        self.busy_s = 1.0
        self.answers: list[httpx.Response] = []
        self.calls = 0

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        self.clock.advance(self.busy_s)
        if self.answers:
            return self.answers.pop(0)
        body = json.loads(request.content)
        if body.get("stream"):
            return sse("return 1", usage=(95, 5))
        return ok("return 1", prompt_tokens=95, completion_tokens=5)(body)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def local(clock: FakeClock) -> Iterator[LocalServer]:
    server = LocalServer(clock)
    with respx.mock(assert_all_called=False) as mock:
        mock.post(LOCAL_URL).mock(side_effect=server.handle)
        mock.post(FW).mock(side_effect=lambda req: ok(prompt_tokens=95,
                                                      completion_tokens=5)(json.loads(req.content)))
        yield server


class HoldingStore(MemoryStore):
    """A `MemoryStore` that remembers every hold it gave and which are still open."""

    def __init__(self) -> None:
        super().__init__()
        self.amounts: list[int] = []
        self.open: set[str] = set()
        self._track = threading.Lock()

    def reserve(self, keys: Sequence[BudgetKey], amount_nano: int, ttl_s: float) -> Reservation:
        res = super().reserve(keys, amount_nano, ttl_s)
        with self._track:
            self.amounts.append(amount_nano)
            self.open.add(res.id)
        return res

    def settle(self, reservation: Reservation, actual_nano: int,
               entry: LedgerEntry | None = None) -> None:
        with self._track:
            self.open.remove(reservation.id)
        super().settle(reservation, actual_nano, entry)

    def release(self, reservation: Reservation, entry: LedgerEntry | None = None) -> None:
        with self._track:
            self.open.remove(reservation.id)
        super().release(reservation, entry)


@pytest.mark.parametrize(("busy_s", "stays_local"), [(0.01, True), (1.0, False)])
async def test_cheapest_leaves_the_machine_once_its_observed_price_passes_hosted(
        drive: Driver, local: LocalServer, clock: FakeClock, busy_s: float,
        stays_local: bool) -> None:
    router = drive.new_router(catalog=catalog(CATALOG.deployment(HOSTED), box()),
                              env=KEYS, clock=clock)
    # The prior (100k tokens/s) makes the box cheaper than hosted: it serves first.
    before = router.route(prompt=PROMPT, max_tokens=5)
    assert before.chosen.name == BOX
    local.busy_s = busy_s
    first = await drive.complete(router, prompt=PROMPT, max_tokens=5)
    assert first.deployment.name == BOX

    # 100 tokens in `busy_s`: $0.0001/s over 100/busy_s tokens/s, against hosted $0.10.
    after = router.route(prompt=PROMPT, max_tokens=5)
    price = after.candidate(BOX).self_hosted
    assert price is not None and price.observed
    assert (price.usd_per_mtok < 0.10) is stays_local
    second = await drive.complete(router, prompt=PROMPT, max_tokens=5)
    assert second.deployment.name == (BOX if stays_local else HOSTED)
    assert local.calls == (2 if stays_local else 1)
    # Local spend is not counted by default: nothing is booked for the box.
    assert first.cost_nano == 0


async def test_explain_shows_the_price_and_whether_it_was_observed(
        drive: Driver, local: LocalServer, clock: FakeClock) -> None:
    router = drive.new_router(catalog=catalog(CATALOG.deployment(HOSTED), box()),
                              env=KEYS, clock=clock)
    text = router.route(prompt=PROMPT, max_tokens=5).explain()
    assert ("self-hosted price of box/starcoder2-3b: $0.36/h at 100,000.0 tokens/s = "
            "$0.0010 per million tokens (prior: tokens_per_second = 100000 as configured; "
            "no requests observed yet)") in text
    assert "budgets hold and book nothing for local deployments unless the policy sets " \
        "count_local_spend" in text
    await drive.complete(router, prompt=PROMPT, max_tokens=5)
    await drive.stream(router, prompt=PROMPT, max_tokens=5)
    text = router.route(prompt=PROMPT, max_tokens=5).explain()
    assert "(observed over 2 requests / 2.0 s busy)" in text


@pytest.mark.parametrize("counted", [True, False])
async def test_budgets_count_local_spend_only_when_asked(drive: Driver, local: LocalServer,
                                                         clock: FakeClock, counted: bool) -> None:
    store = HoldingStore()
    policy = CostPolicy(count_local_spend=counted, budgets=(Budget(limit_usd=1),))
    retry = RetryPolicy(max_retries=2, jitter_s=0, backoff_initial_s=0.5)
    router = drive.new_router(catalog=catalog(box(tokens_per_second=1000.0)), env={},
                              clock=clock, store=store, policy=policy, retry=retry)
    local.answers = [status(503, "overloaded")]  # the first attempt fails and is retried
    done = [await drive.complete(router, prompt=PROMPT, max_tokens=5)]
    _, streamed = await drive.stream(router, prompt=PROMPT, max_tokens=5)
    done.append(streamed)

    assert not store.open, "a budget hold was left open"
    ledger = [e for e in store.ledger() if e.outcome == "ok"]
    assert len(ledger) == 2 and len(store.amounts) == 3
    for c in done:
        price = c.decision.candidate(BOX).self_hosted
        assert price is not None
        tokens = c.usage.prompt_tokens + c.usage.completion_tokens
        assert c.cost_nano == (price.cost_nano(tokens) if counted else 0)
        # The ranking sees the price either way; only the holds depend on the policy.
        assert (c.decision.candidate(BOX).expected_nano or 0) > 0
    assert [e.cost_nano for e in ledger] == [c.cost_nano for c in done]
    (bucket,) = store._buckets
    assert store.spent(bucket) == sum(c.cost_nano for c in done)
    if counted:
        assert all(c.cost_nano > 0 for c in done)
        # Each hold is the worst case at the same price: never less than what was booked.
        assert all(a > 0 for a in store.amounts)
        assert store.amounts[-1] >= done[-1].cost_nano
    else:
        assert store.amounts == [0, 0, 0]


@pytest.mark.parametrize("counted", [True, False])
async def test_a_stream_closed_early_books_its_local_spend_and_frees_its_hold(
        drive: Driver, local: LocalServer, clock: FakeClock, counted: bool) -> None:
    store = HoldingStore()
    policy = CostPolicy(count_local_spend=counted, budgets=(Budget(limit_usd=1),))
    router = drive.new_router(catalog=catalog(box(tokens_per_second=1000.0)), env={},
                              clock=clock, store=store, policy=policy)
    local.answers = [sse("def", " g", "():", " pass", usage=(95, 4))]
    async with drive.open_stream(router, prompt=PROMPT, max_tokens=5) as s:
        await anext(s)
    assert not store.open, "a budget hold was left open"
    (entry,) = store.ledger()
    assert entry.outcome != "ok"
    assert (entry.cost_nano > 0) is counted
    (bucket,) = store._buckets
    assert store.spent(bucket) == entry.cost_nano
    # The attempt's time counts as busy time all the same.
    price = router.route(prompt=PROMPT, max_tokens=5).candidate(BOX).self_hosted
    assert price is not None and price.observed


async def test_a_tight_budget_refuses_the_machine_when_local_spend_counts(
        drive: Driver, local: LocalServer, clock: FakeClock) -> None:
    """The worst case at the effective price is what a budget is checked against."""
    dear = box(tokens_per_second=1.0)  # $0.36/h at 1 token/s: $100 per million tokens
    policy = CostPolicy(count_local_spend=True, max_cost_per_request_usd=0.001)
    router = drive.new_router(catalog=catalog(dear), env={}, clock=clock, policy=policy)
    with pytest.raises(NoRouteError) as refused:
        router.route(prompt=PROMPT, max_tokens=64)
    (reason,) = refused.value.decision.candidate(BOX).reasons
    assert reason.startswith("worst-case cost $") and "> per-request cap $0.001000" in reason
    free = drive.new_router(catalog=catalog(dear), env={}, clock=clock,
                            policy=policy.model_copy(update={"count_local_spend": False}))
    assert free.route(prompt=PROMPT, max_tokens=64).chosen.name == BOX
