"""The behaviour every spend store promises, checked on memory, SQLite and Redis, sync and async."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable

import pytest

from starcoder_router._errors import BudgetExceededError
from starcoder_router._routing.cost import usd_to_nano
from starcoder_router._stores.base import AsyncSpendStore, Reservation, SpendStore
from support.stores import T0, entry, key

USD = usd_to_nano(1.0)
CENT = usd_to_nano(0.01)


def test_every_store_implements_both_protocols(make_store: Callable[[], object]) -> None:
    store = make_store()
    assert isinstance(store, SpendStore)
    assert isinstance(store, AsyncSpendStore)


async def test_reserve_holds_budget_and_reports_statuses(api) -> None:
    day = key(limit_usd=1.0)
    res = await api.reserve([day], 40 * CENT, 30.0)
    assert res.amount_nano == 40 * CENT
    assert res.keys == (day,)
    assert [(s.spent_nano, s.reserved_nano) for s in res.statuses] == [(0, 40 * CENT)]
    [status] = await api.status([day])
    assert (status.name, status.key, status.limit_nano) == ("global/day", day.key, USD)
    assert (status.spent_nano, status.reserved_nano) == (0, 40 * CENT)
    assert status.resets_at == day.resets_at


async def test_exact_limit_is_admitted_and_one_more_nano_is_not(api) -> None:
    day = key(limit_usd=1.0)
    await api.reserve([day], USD, 30.0)
    with pytest.raises(BudgetExceededError):
        await api.reserve([day], 1, 30.0)


async def test_admission_is_all_or_nothing_across_keys(api) -> None:
    wide, narrow = key("global/day", 1.0), key("tenant:acme/day", 0.5)
    await api.record([narrow], 30 * CENT)
    with pytest.raises(BudgetExceededError) as info:
        await api.reserve([wide, narrow], 30 * CENT, 30.0)
    err = info.value
    assert err.status.name == "tenant:acme/day"
    assert err.status.key == narrow.key
    assert (err.status.limit_nano, err.status.spent_nano, err.status.reserved_nano) == (
        50 * CENT, 30 * CENT, 0)
    assert err.status.resets_at == narrow.resets_at
    assert err.requested_usd == pytest.approx(0.30)
    assert "tenant:acme/day" in str(err)
    statuses = await api.status([wide, narrow])
    assert [(s.spent_nano, s.reserved_nano) for s in statuses] == [(0, 0), (30 * CENT, 0)]


async def test_first_refusing_key_is_the_one_reported(api) -> None:
    a, b = key("a/day", 0.1), key("b/day", 0.1)
    with pytest.raises(BudgetExceededError) as info:
        await api.reserve([a, b], 20 * CENT, 30.0)
    assert info.value.status.name == "a/day"


async def test_reservations_count_against_later_requests(api) -> None:
    day = key(limit_usd=1.0)
    await api.reserve([day], 60 * CENT, 30.0)
    with pytest.raises(BudgetExceededError) as info:
        await api.reserve([day], 50 * CENT, 30.0)
    assert info.value.status.reserved_nano == 60 * CENT


async def test_settle_replaces_the_reservation_with_the_actual_cost(api) -> None:
    day = key(limit_usd=1.0)
    res = await api.reserve([day], 50 * CENT, 30.0)
    line = entry(20 * CENT)
    await api.settle(res, 20 * CENT, line)
    [status] = await api.status([day])
    assert (status.spent_nano, status.reserved_nano) == (20 * CENT, 0)
    assert await api.spent(day.key) == 20 * CENT
    assert await api.ledger() == [line]


async def test_settle_above_the_limit_is_recorded_and_blocks_the_budget(api) -> None:
    day = key(limit_usd=1.0)
    res = await api.reserve([day], 50 * CENT, 30.0)
    await api.settle(res, 3 * USD, entry(3 * USD))
    assert await api.spent(day.key) == 3 * USD
    with pytest.raises(BudgetExceededError) as info:
        await api.reserve([day], 1, 30.0)
    assert info.value.status.spent_nano == 3 * USD
    assert info.value.status.remaining_nano == 0


async def test_settle_charges_every_key_of_the_reservation(api) -> None:
    a, b = key("a/day", 1.0), key("b/week", 2.0, bucket="2026-W48")
    res = await api.reserve([a, b], 10 * CENT, 30.0)
    await api.settle(res, 7 * CENT)
    assert [await api.spent(k.key) for k in (a, b)] == [7 * CENT, 7 * CENT]
    assert await api.ledger() == []


async def test_release_frees_the_reservation_and_is_idempotent(api) -> None:
    day = key(limit_usd=1.0)
    res = await api.reserve([day], 80 * CENT, 30.0)
    await api.release(res)
    await api.release(res)
    [status] = await api.status([day])
    assert (status.spent_nano, status.reserved_nano) == (0, 0)
    await api.reserve([day], USD, 30.0)
    assert await api.ledger() == []


async def test_release_may_write_a_ledger_entry(api) -> None:
    day = key()
    res = await api.reserve([day], CENT, 30.0)
    line = entry(0)
    await api.release(res, line)
    assert await api.ledger() == [line]
    assert await api.spent(day.key) == 0


async def test_record_adds_spend_without_a_reservation(api) -> None:
    a, b = key("a/day"), key("b/day")
    line = entry(5 * CENT)
    await api.record([a, b], 5 * CENT, line)
    await api.record([a], 2 * CENT)
    assert [await api.spent(k.key) for k in (a, b)] == [7 * CENT, 5 * CENT]
    assert await api.ledger() == [line]


async def test_record_with_no_keys_keeps_the_ledger(api) -> None:
    line = entry(5 * CENT)
    await api.record([], 5 * CENT, line)
    assert await api.ledger() == [line]


async def test_a_key_listed_twice_is_charged_once(api) -> None:
    day = key(limit_usd=1.0)
    res = await api.reserve([day, day], 60 * CENT, 30.0)
    assert len(res.keys) == 1
    await api.settle(res, 60 * CENT)
    assert await api.spent(day.key) == 60 * CENT


async def test_expired_reservations_stop_counting(api) -> None:
    day = key(limit_usd=1.0)
    await api.reserve([day], 90 * CENT, 0.2)
    with pytest.raises(BudgetExceededError):
        await api.reserve([day], 50 * CENT, 30.0)
    await asyncio.sleep(0.35)
    [status] = await api.status([day])
    assert status.reserved_nano == 0
    await api.reserve([day], 50 * CENT, 30.0)


async def test_settling_an_expired_reservation_still_records_the_spend(api) -> None:
    day = key(limit_usd=1.0)
    res = await api.reserve([day], 50 * CENT, 0.2)
    await asyncio.sleep(0.35)
    await api.reserve([day], 70 * CENT, 30.0)  # the expired one no longer holds its 50 cents
    await api.settle(res, 40 * CENT, entry(40 * CENT))
    [status] = await api.status([day])
    assert (status.spent_nano, status.reserved_nano) == (40 * CENT, 70 * CENT)
    assert len(await api.ledger()) == 1


async def test_unknown_reservations_settle_spend_and_release_quietly(api) -> None:
    day = key()
    ghost = Reservation(id="never-reserved", keys=(day,), amount_nano=CENT, expires_at=0.0)
    await api.release(ghost)
    await api.settle(ghost, 3 * CENT)
    assert await api.spent(day.key) == 3 * CENT


async def test_buckets_are_independent(api) -> None:
    today, tomorrow = key(bucket="2026-11-26"), key(bucket="2026-11-27")
    await api.record([today], USD)
    await api.reserve([tomorrow], USD, 30.0)
    assert await api.spent(tomorrow.key) == 0


async def test_a_total_budget_never_expires(api) -> None:
    forever = key("global/total", 1.0, bucket="total", expires_in=None)
    res = await api.reserve([forever], 40 * CENT, 30.0)
    await api.settle(res, 40 * CENT)
    [status] = await api.status([forever])
    assert (status.spent_nano, status.resets_at) == (40 * CENT, None)


async def test_a_finished_bucket_is_forgotten_after_it_expires(api) -> None:
    old = key("global/hour", bucket="2020-01-01T00:00+00:00", expires_in=-dt.timedelta(hours=1))
    await api.record([old], CENT)
    await api.reserve([key()], CENT, 30.0)  # stores sweep finished buckets as they go
    assert await api.spent(old.key) == 0


async def test_ledger_filters_by_time_and_tenant(api) -> None:
    day = key()
    lines = [
        entry(1, time=T0 - dt.timedelta(days=1), tenant="acme"),
        entry(2, time=T0, tenant="acme"),
        entry(3, time=T0 + dt.timedelta(hours=1), tenant="globex"),
        entry(4, time=T0 + dt.timedelta(days=1, hours=23)),
    ]
    for line in reversed(lines):
        await api.record([day], line.cost_nano, line)
    assert await api.ledger() == lines
    assert await api.ledger(since=T0) == lines[1:]
    assert await api.ledger(until=T0) == lines[:1]
    assert await api.ledger(since=T0, until=T0 + dt.timedelta(hours=1)) == lines[1:2]
    assert await api.ledger(tenant="acme") == lines[:2]
    assert await api.ledger(since=T0, tenant="acme") == lines[1:2]
    assert await api.ledger(tenant="nobody") == []


async def test_ledger_keeps_every_field(api) -> None:
    line = entry(123, tenant="acme", time=dt.datetime(2026, 11, 26, 9, 30, 15, 123456,
                                                      tzinfo=dt.UTC))
    await api.record([key()], 123, line)
    [back] = await api.ledger()
    assert back == line
    assert back.tags == ("ci",)
    assert back.time.utcoffset() == dt.timedelta(0)


async def test_naive_ledger_times_are_refused(api) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        await api.ledger(since=dt.datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        await api.record([key()], 1, entry(1, time=dt.datetime(2026, 1, 1)))


async def test_negative_amounts_are_refused(api) -> None:
    day = key()
    with pytest.raises(ValueError, match="negative"):
        await api.reserve([day], -1, 30.0)
    res = await api.reserve([day], CENT, 30.0)
    with pytest.raises(ValueError, match="negative"):
        await api.settle(res, -5)


async def test_status_of_an_unused_key_is_empty(api) -> None:
    [status] = await api.status([key(limit_usd=2.0)])
    assert (status.spent_nano, status.reserved_nano, status.remaining_nano) == (0, 0, 2 * USD)
    assert await api.spent("never|used") == 0


@pytest.mark.parametrize("kind", ["sqlite", "redis", "cluster"])
def test_two_store_instances_share_budgets(make_store) -> None:
    one, two = make_store(), make_store()
    day = key(limit_usd=1.0)
    res = one.reserve([day], 70 * CENT, 30.0)
    with pytest.raises(BudgetExceededError):
        two.reserve([day], 50 * CENT, 30.0)
    two.settle(res, 10 * CENT, entry(10 * CENT))
    assert one.spent(day.key) == 10 * CENT
    assert len(one.ledger()) == 1
    two.reserve([day], 90 * CENT, 30.0)
