"""Which budget keys a request counts against: pure, no store."""

from __future__ import annotations

import datetime as dt

import pytest

from starcoder_router._routing.policy import Budget
from starcoder_router._stores.periods import BUCKET_GRACE, applicable_keys, refusal, unique_keys

NOW = dt.datetime(2026, 11, 26, 15, 30, tzinfo=dt.UTC)


def keys(budgets: list[Budget], *, tenant: str | None = None,
         tags: tuple[str, ...] = ()) -> list[str]:
    return [k.key for k in applicable_keys(budgets, tenant=tenant, tags=tags, now=NOW)]


def test_a_global_budget_always_applies() -> None:
    budgets = [Budget(limit_usd=5)]
    assert keys(budgets) == ["global/day|2026-11-26"]
    assert keys(budgets, tenant="acme", tags=("x",)) == ["global/day|2026-11-26"]


def test_a_tenant_budget_counts_each_tenant_on_its_own_key() -> None:
    budgets = [Budget(limit_usd=1, scope="tenant", period="month")]
    assert keys(budgets, tenant="acme") == ["tenant:acme/month|2026-11"]
    assert keys(budgets, tenant="globex") == ["tenant:globex/month|2026-11"]
    assert keys(budgets) == ["tenant:*/month|2026-11"]  # no tenant: a bucket of its own


def test_a_tenant_budget_with_a_tenant_applies_to_that_tenant_only() -> None:
    budgets = [Budget(limit_usd=1, scope="tenant", tenant="acme")]
    assert keys(budgets, tenant="acme") == ["tenant:acme/day|2026-11-26"]
    assert keys(budgets, tenant="globex") == []
    assert keys(budgets) == []


def test_a_named_per_tenant_budget_puts_the_tenant_in_its_name() -> None:
    templated = Budget(limit_usd=1, scope="tenant", name="team-*-daily")
    plain = Budget(limit_usd=1, scope="tenant", name="per-team")
    assert keys([templated, plain], tenant="acme") == ["team-acme-daily|2026-11-26",
                                                       "per-team:acme|2026-11-26"]


def test_a_tag_budget_applies_when_the_request_carries_its_tag() -> None:
    budgets = [Budget(limit_usd=1, scope="tag", tag="batch", period="week")]
    assert keys(budgets, tags=("batch", "nightly")) == ["tag:batch/week|2026-W48"]
    assert keys(budgets, tags=("interactive",)) == []


def test_keys_follow_the_budget_order_and_carry_limits_and_expiry() -> None:
    budgets = [
        Budget(limit_usd=10, period="month"),
        Budget(limit_usd=0.5, scope="tenant", period="hour", timezone="Asia/Tokyo"),
        Budget(limit_usd=100, period="total", name="lifetime"),
    ]
    month, hour, total = applicable_keys(budgets, tenant="acme", tags=(), now=NOW)
    assert month.budget == "global/month"
    assert month.limit_nano == 10_000_000_000
    assert month.resets_at == dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    assert month.expires_at == month.resets_at + BUCKET_GRACE
    assert hour.key == "tenant:acme/hour|2026-11-27T00:00+09:00"
    assert hour.budget == "tenant:acme/hour"
    assert hour.limit_nano == 500_000_000
    assert hour.resets_at == dt.datetime(2026, 11, 26, 16, tzinfo=dt.UTC)
    assert (total.key, total.resets_at, total.expires_at) == ("lifetime|total", None, None)


def test_the_budget_zone_decides_the_bucket() -> None:
    budgets = [Budget(limit_usd=1, timezone="America/Los_Angeles")]
    late = dt.datetime(2026, 11, 27, 7, 59, tzinfo=dt.UTC)
    assert [k.key for k in applicable_keys(budgets, tenant=None, tags=(), now=late)] == [
        "global/day|2026-11-26"]


def test_unique_keys_keeps_the_first_of_each() -> None:
    a, b = applicable_keys([Budget(limit_usd=1), Budget(limit_usd=2, name="b")],
                           tenant=None, tags=(), now=NOW)
    assert unique_keys([a, b, a]) == (a, b)


@pytest.mark.parametrize(("spent", "reserved", "amount", "admitted"), [
    (0, 0, 1_000_000_000, True),
    (400_000_000, 600_000_000, 0, True),
    (400_000_000, 600_000_000, 1, False),
    (2_000_000_000, 0, 0, False),
])
def test_refusal_counts_reservations_as_spent(spent, reserved, amount, admitted) -> None:
    [key] = applicable_keys([Budget(limit_usd=1)], tenant=None, tags=(), now=NOW)
    error = refusal(key, spent, reserved, amount)
    assert (error is None) == admitted
    if error is not None:
        assert (error.status.spent_nano, error.status.reserved_nano) == (spent, reserved)
        assert error.requested_usd == amount / 1e9
