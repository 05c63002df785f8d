"""Budgets through the Router: admission by reservation, the policies for an exhausted budget
(reject, downgrade, local_only), the soft limit, per-tenant budgets, and many processes sharing
one budget through SQLite and Redis."""

from __future__ import annotations

import multiprocessing
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from starcoder_router import (
    Budget,
    BudgetExceededError,
    Catalog,
    CostPolicy,
    MemoryStore,
    NoRouteError,
    Router,
)
from starcoder_router._routing.cost import usd_to_nano
from starcoder_router.testing import FakeServer, Reply
from support.budget_workers import WORST_USD, open_store, process_main
from support.redis_cluster import backend_url


@pytest.fixture
def server() -> Iterator[FakeServer]:
    with FakeServer(text="pass") as s:
        yield s


@pytest.fixture(autouse=True)
def _close_routers(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every Router a test makes is closed after it (no sockets left open)."""
    made: list[Router] = []
    original = Router.__init__

    def tracking(self: Router, *args: object, **kwargs: object) -> None:
        original(self, *args, **kwargs)  # type: ignore[arg-type]
        made.append(self)

    monkeypatch.setattr(Router, "__init__", tracking)
    yield
    for router in made:
        router.close()


def _catalog(server: FakeServer) -> Catalog:
    big = server.deployment(variant="starcoder2-15b", name="fake/big",
                            input_usd_per_mtok=50, output_usd_per_mtok=50)
    small = server.deployment(variant="starcoder2-3b", name="fake/small",
                              input_usd_per_mtok=20, output_usd_per_mtok=20)
    local = server.deployment(variant="starcoder2-3b", name="fake/local")
    return Catalog(variants=Catalog.default().variants, deployments=(big, small, local))


def _router(server: FakeServer, *, without: tuple[str, ...] = (), **policy: object) -> Router:
    return Router(catalog=_catalog(server).without(*without),
                  policy=CostPolicy(**policy),  # type: ignore[arg-type]
                  store=MemoryStore(), tokenizer=False, env={})


def test_reject_names_the_budget_and_never_overspends(server: FakeServer) -> None:
    router = _router(server, objective="quality", budgets=[Budget(limit_usd=0.01, period="day")])
    served = 0
    with pytest.raises(BudgetExceededError) as info:
        for _ in range(1000):
            router.complete(prompt="def f():", max_tokens=50)
            served += 1
    status = info.value.status
    assert status.name == "global/day"
    assert status.limit_usd == pytest.approx(0.01)
    assert status.spent_nano <= status.limit_nano
    assert status.reserved_nano == 0
    msg = str(info.value)
    assert "global/day" in msg and "limit $0.010000" in msg and "resets 20" in msg
    spent = sum(e.cost_nano for e in router.store.ledger())
    assert spent == status.spent_nano <= usd_to_nano(0.01)
    assert served == len(router.store.ledger()) > 5


def test_downgrade_goes_to_the_cheapest_that_still_fits(server: FakeServer) -> None:
    router = _router(server, objective="quality", on_budget_exhausted="downgrade",
                     budgets=[Budget(limit_usd=0.01, period="day")])
    seen = [router.complete(prompt="def f():", max_tokens=50).deployment.name
            for _ in range(40)]
    assert seen[0] == "fake/big"
    switched = seen.index("fake/local")  # the cheapest of all, and free
    assert set(seen[:switched]) == {"fake/big"}
    assert set(seen[switched:]) == {"fake/local"}
    assert sum(e.cost_nano for e in router.store.ledger()) <= usd_to_nano(0.01)


def test_downgrade_without_a_local_deployment(server: FakeServer) -> None:
    policy = CostPolicy(objective="quality", on_budget_exhausted="downgrade",
                        budgets=[Budget(limit_usd=0.01, period="day")])
    router = Router(catalog=_catalog(server).without("fake/local"), policy=policy,
                    store=MemoryStore(), tokenizer=False, env={})
    seen: list[str] = []
    with pytest.raises(BudgetExceededError):
        for _ in range(500):
            seen.append(router.complete(prompt="def f():", max_tokens=50).deployment.name)
    assert seen[0] == "fake/big"
    switched = seen.index("fake/small")
    assert set(seen[switched:]) == {"fake/small"}
    spent = sum(e.cost_nano for e in router.store.ledger())
    assert usd_to_nano(0.01) - usd_to_nano(0.00116) < spent <= usd_to_nano(0.01)


def test_local_only_after_exhaustion(server: FakeServer) -> None:
    router = _router(server, objective="quality", on_budget_exhausted="local_only",
                     budgets=[Budget(limit_usd=0.005, period="day")])
    names = [router.complete(prompt="def f():", max_tokens=50).deployment.name
             for _ in range(20)]
    assert names[0] == "fake/big" and names[-1] == "fake/local"
    assert "fake/small" not in names[names.index("fake/local"):]


def test_soft_limit_switches_to_cheapest(server: FakeServer) -> None:
    router = _router(server, without=("fake/local",), objective="quality", soft_limit=0.5,
                     budgets=[Budget(limit_usd=0.02, period="day")])
    names = [router.complete(prompt="def f():", max_tokens=50).deployment.name
             for _ in range(45)]
    switched = names.index("fake/small")
    assert set(names[:switched]) == {"fake/big"}
    assert set(names[switched:]) == {"fake/small"}
    # The switch came once half the budget ($0.01 of $0.02) was spent; each big answer costs
    # the fake server's token counts at $50 per million (5-6 tokens with its estimate).
    answer_usd = (server.counter.count("def f():") + server.counter.count("pass")) * 50 / 1e6
    expected = 0.01 / answer_usd
    assert expected <= switched <= expected + 5


def test_tenant_budgets_are_separate(server: FakeServer) -> None:
    router = _router(server, without=("fake/local",),
                     budgets=[Budget(limit_usd=0.001, period="day", scope="tenant")])
    with pytest.raises(BudgetExceededError) as info:
        for _ in range(100):
            router.complete(prompt="x", max_tokens=20, tenant="acme")
    assert info.value.status.name == "tenant:acme/day"
    assert router.complete(prompt="x", max_tokens=20, tenant="globex").text == "pass"
    # Requests without a tenant count in a bucket of their own (test_tenant_buckets.py).
    assert router.complete(prompt="x", max_tokens=20).text == "pass"


def test_failed_attempts_release_their_reservation(server: FakeServer) -> None:
    server.script(Reply(status=500), Reply(status=500), Reply(status=500))
    from starcoder_router import ProviderServerError, RetryPolicy

    router = Router(catalog=_catalog(server).without("fake/local", "fake/big"),
                    policy=CostPolicy(budgets=[Budget(limit_usd=1, period="day")]),
                    store=MemoryStore(), tokenizer=False, env={},
                    retry=RetryPolicy(max_retries=2, backoff_initial_s=0, jitter_s=0))
    with pytest.raises(ProviderServerError):
        router.complete(prompt="x", max_tokens=10)
    from starcoder_router._stores.periods import applicable_keys

    [status] = router.store.status(applicable_keys(router.policy.budgets, tenant=None, tags=(),
                                                   now=router._core.clock.wall()))
    assert status.reserved_nano == 0 and status.spent_nano == 0
    assert router.store.ledger() == []


def test_no_route_when_every_deployment_costs_more_than_the_cap(server: FakeServer) -> None:
    router = _router(server, without=("fake/local",), max_cost_per_request_usd=1e-9)
    with pytest.raises(NoRouteError, match="per-request cap"):
        router.complete(prompt="x")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "redis", "cluster"])
def test_processes_share_one_budget_without_overspending(
        kind: str, server: FakeServer, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if kind in ("redis", "cluster"):  # a cluster is a redis store with a redis+cluster:// URL
        where = backend_url(kind, request) + "|" + f"rt:{uuid.uuid4().hex[:8]}:"
        kind = "redis"
    else:
        where = str(tmp_path / "spend.db")
    limit = 1.0
    processes, threads = 6, 12
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(processes)
        with ctx.Pool(processes) as pool:
            results = [pool.apply_async(process_main, (kind, where, server.base_url, threads,
                                                       limit, barrier))
                       for _ in range(processes)]
            served = sum(r.get(timeout=240) for r in results)
    store = open_store(kind, where)
    entries = store.ledger()
    spent = sum(e.cost_nano for e in entries)
    assert spent <= usd_to_nano(limit), f"overspent by {spent - usd_to_nano(limit)} nano-dollars"
    assert usd_to_nano(limit) - spent < usd_to_nano(WORST_USD)
    assert len(entries) == served == len({e.request_id for e in entries})
    assert all(e.outcome == "ok" for e in entries)
    import datetime as dt

    from starcoder_router._stores.periods import applicable_keys

    [status] = store.status(applicable_keys([Budget(limit_usd=limit, period="total")],
                                            tenant=None, tags=(), now=dt.datetime.now(dt.UTC)))
    assert status.reserved_nano == 0
    assert served > 300
    store.close()


def test_spend_command_reads_redis(redis_url: str, capsys: pytest.CaptureFixture[str],
                                   server: FakeServer) -> None:
    from starcoder_router import RedisStore
    from starcoder_router._cli import main

    prefix = f"cli:{uuid.uuid4().hex[:8]}:"
    store = RedisStore(redis_url, prefix=prefix)
    router = Router(catalog=_catalog(server).without("fake/local"),
                    policy=CostPolicy(allow_providers={"openai-compatible"},
                                      budgets=[Budget(limit_usd=1, period="day")]),
                    store=store, tokenizer=False, env={})
    for tenant in ("acme", "acme", "globex"):
        router.complete(prompt="def f():", max_tokens=8, tenant=tenant)
    store.close()
    reader = RedisStore(redis_url, prefix=prefix)
    spent = sum(e.cost_nano for e in reader.ledger())
    reader.close()
    assert spent > 0
    assert main(["spend", "--store", "redis", "--url", redis_url, "--prefix", prefix,
                 "--by", "tenant"]) == 0
    out = capsys.readouterr().out
    assert "acme" in out and "globex" in out
    assert f"${spent / 1e9:.6f}" in out
