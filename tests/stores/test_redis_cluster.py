"""The Redis store on a real three-master Redis Cluster: budgets in different hash slots, and a
master killed and started again in the middle of a run."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from starcoder_router._config import StoreSettings
from starcoder_router._errors import BudgetExceededError, StoreError
from starcoder_router._routing.cost import usd_to_nano
from starcoder_router._stores import open_configured, open_store
from starcoder_router._stores.redis import RedisStore
from starcoder_router._stores.redis_plan import KeyNames
from support.redis_cluster import RedisCluster
from support.stores import entry, key

WORST = usd_to_nano(0.002)


def _master_index(cluster: RedisCluster, store: RedisStore, name: str) -> int:
    return cluster.master_of(int(store._sync.get_node_from_key(name).port))


def test_a_cluster_url_or_flag_selects_the_cluster_client(redis_cluster: RedisCluster) -> None:
    store = open_store("redis", url=redis_cluster.url)
    assert isinstance(store, RedisStore) and store.cluster
    store.close()
    plain = redis_cluster.url.replace("redis+cluster://", "redis://")
    flagged = open_configured(StoreSettings(kind="redis", url=plain, cluster=True))
    assert isinstance(flagged, RedisStore) and flagged.cluster
    budget = key()
    flagged.settle(flagged.reserve([budget, key("tenant:a/day")], 10, 30.0), 7)
    assert flagged.spent(budget.key) == 7
    flagged.close()


def test_cluster_url_spells_a_server_url_as_a_cluster_url() -> None:
    from starcoder_router._stores.redis import cluster_url, is_cluster_url

    assert cluster_url("redis://h:7000/0") == "redis+cluster://h:7000/0"
    assert cluster_url("rediss://u:p@h:7000") == "rediss+cluster://u:p@h:7000"
    for url in ("redis+cluster://h:7000", "rediss+cluster://h:1", "unix:///tmp/r.sock"):
        assert cluster_url(url) == url
    assert is_cluster_url(cluster_url("redis://h:1")) and not is_cluster_url("redis://h:1")


def test_one_budgets_keys_share_a_slot_and_budgets_spread() -> None:
    from redis.crc import key_slot

    names = KeyNames("scr:", lambda k: int(key_slot(k.encode())))
    slots = set()
    for budget in ("global/day|2026-11-26", "tenant:acme/day|2026-11-26", "k}{ey:x/day|t"):
        b, x, s = names.budget(budget)
        assert key_slot(b.encode()) == key_slot(x.encode()) == key_slot(s.encode())
        slots.add(key_slot(b.encode()))
    assert len(slots) == 3
    tagged = KeyNames("{scr}:", lambda k: int(key_slot(k.encode())))
    assert len(tagged.groups([key("a/day"), key("b/day"), key("c/day")])) == 1


@pytest.mark.parametrize("kind", ["redis", "cluster"])
def test_budgets_in_different_slots_never_overspend(make_store: Callable[[], Any]) -> None:
    """40 threads, two tenants of $0.5 each under a global $0.8: every request holds a tenant
    budget and the global one, on different masters. A tenant that refuses after the global
    hold was taken must give the global hold back, and no budget may end overspent."""
    store = make_store()
    whole = key("global/day", 0.8)
    tenants = [key("tenant:a/day", 0.5), key("tenant:b/day", 0.5)]
    settled: dict[str, int] = {}
    lock = threading.Lock()

    def work(rng: random.Random) -> None:
        while True:
            tenant = rng.choice(tenants)
            try:
                res = store.reserve([whole, tenant], WORST, 30.0)
            except BudgetExceededError as exc:
                if exc.status.reserved_nano == 0:
                    return
                time.sleep(0.002)
                continue
            actual = rng.randint(1, WORST)
            store.settle(res, actual, entry(actual, tenant=tenant.budget))
            with lock:
                settled[tenant.budget] = settled.get(tenant.budget, 0) + actual

    pool = [threading.Thread(target=work, args=(random.Random(i),)) for i in range(40)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    spent = [store.spent(k.key) for k in (whole, *tenants)]
    assert spent[0] == spent[1] + spent[2] == sum(settled.values())
    assert all(s <= k.limit_nano for s, k in zip(spent, (whole, *tenants), strict=True)), spent
    assert whole.limit_nano - spent[0] < 2 * WORST
    assert all(s.reserved_nano == 0 for s in store.status([whole, *tenants]))
    assert len(store.ledger()) > 300


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["cluster"])
def test_a_master_killed_mid_run_loses_and_doubles_nothing(
        make_store: Callable[[], Any], redis_cluster: RedisCluster) -> None:
    """8 threads spend one budget while the master that owns it is SIGKILLed and started again.
    While it is down every call fails with a `StoreError`; a settle that failed is sent again
    until it lands (as a caller that keeps its unrecorded spend would). Afterwards the budget's
    spend and the ledger are exactly the settles that were acknowledged."""
    store = make_store()
    budget = key(limit_usd=1.0)
    victim = _master_index(redis_cluster, store, store._names.budget(budget.key)[0])
    settled: list[tuple[str, int]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    deadline = time.monotonic() + 120

    def work(rng: random.Random) -> None:
        while time.monotonic() < deadline:
            try:
                res = store.reserve([budget], WORST, 5.0)
            except BudgetExceededError as exc:
                if exc.status.reserved_nano == 0:
                    return
                time.sleep(0.01)
                continue
            except StoreError as exc:
                errors.append(exc)
                time.sleep(0.05)
                continue
            time.sleep(rng.uniform(0.001, 0.01))  # the request is in flight
            actual, rid = rng.randint(1, WORST), uuid.uuid4().hex
            while True:
                try:
                    store.settle(res, actual, entry(actual, request_id=rid))
                    break
                except StoreError as exc:
                    errors.append(exc)
                    time.sleep(0.05)
            with lock:
                settled.append((rid, actual))

    pool = [threading.Thread(target=work, args=(random.Random(i),)) for i in range(8)]
    for thread in pool:
        thread.start()
    while len(settled) < 100:
        time.sleep(0.01)
    redis_cluster.kill_master(victim)
    killed_at = len(settled)
    time.sleep(3)
    redis_cluster.start_master(victim)
    for thread in pool:
        thread.join()

    assert errors and all(isinstance(e, StoreError) for e in errors)
    assert len(settled) > killed_at + 100, "spending did not resume after the restart"
    spent = store.spent(budget.key)
    assert spent == sum(cost for _, cost in settled), "spend lost or counted twice"
    assert spent <= budget.limit_nano
    assert sorted(e.request_id for e in store.ledger()) == sorted(rid for rid, _ in settled)
    [status] = store.status([budget])
    assert status.reserved_nano == 0
    print(f"cluster restart: {len(settled)} settled, {len(errors)} StoreErrors while master "
          f"{victim} was down, spent {spent} of {budget.limit_nano} nano-dollars")


@pytest.mark.parametrize("kind", ["redis", "cluster"])
def test_round_trips_to_admit_and_to_settle(make_store: Callable[[], Any], kind: str) -> None:
    """On one server: one script call to admit a request under three budgets, one to settle it
    with its ledger row. On a cluster: one per slot the budgets fall in, plus the ledger's."""
    store = make_store()
    budgets = [key("global/day"), key("tenant:acme/day"), key("key:k1/day")]
    store.settle(store.reserve(budgets, 10, 30.0), 1, entry(1))  # scripts loaded on each node
    sent: list[str] = []
    real = store._sync.execute_command

    def counting(*args: Any, **kwargs: Any) -> Any:
        sent.append(str(args[0]))
        return real(*args, **kwargs)

    store._sync.execute_command = counting
    res = store.reserve(budgets, 10, 30.0)
    admitted = len(sent)
    store.settle(res, 7, entry(7))
    settled = len(sent) - admitted
    slots = len(store._names.groups(budgets)) if kind == "cluster" else 1
    assert set(sent) == {"EVALSHA"}
    assert admitted == slots
    assert settled == (1 if kind == "redis" else slots + 2)  # + the day's set, + the row
