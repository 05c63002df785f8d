"""Tenant budgets no caller can slip past: requests without a tenant count in a bucket of their
own (or are refused with `require_tenant=True`), blank names are refused, and the spend report
keeps every bucket apart."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from starcoder_router import (
    Budget,
    BudgetExceededError,
    Catalog,
    ConfigError,
    CostPolicy,
    InvalidRequestError,
    MemoryStore,
    Router,
)
from starcoder_router._stores.periods import applicable_keys
from starcoder_router._stores.report import spend_report
from starcoder_router.testing import FakeServer
from support.stores import entry

NOW = dt.datetime(2026, 11, 26, 15, 30, tzinfo=dt.UTC)


@pytest.fixture
def server() -> Iterator[FakeServer]:
    with FakeServer(text="pass") as s:
        yield s


def _router(server: FakeServer, **policy: object) -> Router:
    dep = server.deployment(input_usd_per_mtok=100, output_usd_per_mtok=100)
    return Router(catalog=Catalog.default().with_deployments(dep),
                  policy=CostPolicy(allow_providers={"openai-compatible"}, **policy),  # type: ignore[arg-type]
                  store=MemoryStore(), tokenizer=False, env={})


def _admitted(router: Router, tries: int, **fields: object) -> int:
    served = 0
    for _ in range(tries):
        try:
            router.complete(prompt="def f():", max_tokens=20, **fields)  # type: ignore[arg-type]
        except BudgetExceededError:
            continue
        served += 1
    return served


def test_requests_without_a_tenant_have_their_own_key() -> None:
    budgets = [Budget(limit_usd=1, scope="tenant")]
    keys = [k.key for k in applicable_keys(budgets, tenant=None, tags=(), now=NOW)]
    assert keys == ["tenant:*/day|2026-11-26"]
    named = Budget(limit_usd=1, scope="tenant", name="per-team")
    assert [k.key for k in applicable_keys([named], tenant=None, tags=(), now=NOW)] == [
        "per-team|2026-11-26"]
    assert [k.key for k in applicable_keys([named], tenant="a", tags=(), now=NOW)] == [
        "per-team:a|2026-11-26"]


def test_a_budget_for_one_tenant_ignores_others_and_no_tenant() -> None:
    acme = [Budget(limit_usd=1, scope="tenant", tenant="acme")]
    assert applicable_keys(acme, tenant=None, tags=(), now=NOW) == ()
    assert applicable_keys(acme, tenant="globex", tags=(), now=NOW) == ()
    assert len(applicable_keys(acme, tenant="acme", tags=(), now=NOW)) == 1


def test_leaving_out_the_tenant_does_not_slip_past_a_tenant_budget(server: FakeServer) -> None:
    limit = [Budget(limit_usd=0.03, period="day", scope="tenant")]
    with _router(server, budgets=limit) as router:
        with_tenant = _admitted(router, 50, tenant="acme")
        without = _admitted(router, 50)
    assert 0 < with_tenant < 50
    assert without == with_tenant


def test_require_tenant_refuses_requests_without_one(server: FakeServer) -> None:
    with _router(server, budgets=[Budget(limit_usd=1, scope="tenant")],
                 require_tenant=True) as router:
        with pytest.raises(InvalidRequestError, match="requires a tenant"):
            router.complete(prompt="def f():")
        with pytest.raises(InvalidRequestError, match="requires a tenant"):
            router.route(prompt="def f():")
        assert server.requests == []
        assert router.complete(prompt="def f():", tenant="acme").text == "pass"


@pytest.mark.parametrize("value", ["", " ", "*"])
def test_blank_or_reserved_tenant_and_tag_names_are_refused(value: str) -> None:
    with pytest.raises(InvalidRequestError, match="tenant"):
        Router(env={}).route(prompt="x", tenant=value)
    with pytest.raises(ConfigError, match="tenant"):
        Budget(limit_usd=1, scope="tenant", tenant=value)
    with pytest.raises(ConfigError, match="tag"):
        Budget(limit_usd=1, scope="tag", tag=value)


def test_the_report_keeps_every_tenant_bucket_apart() -> None:
    entries = [entry(1_000_000, tenant=None), entry(2_000_000, tenant=" "),
               entry(4_000_000, tenant=""), entry(8_000_000, tenant="acme"),
               entry(16_000_000, tenant="(none)")]
    table = spend_report(entries, period="total", by="tenant")
    lines = table.splitlines()[2:-1]
    assert len(lines) == 5
    costs = {line.split("$")[-1] for line in lines}
    assert costs == {"0.001000", "0.002000", "0.004000", "0.008000", "0.016000"}
    assert any("(none)" in line and "0.001000" in line for line in lines)
    assert any("' '" in line and "0.002000" in line for line in lines)
    assert any("''" in line and "0.004000" in line for line in lines)
    assert any("'(none)'" in line and "0.016000" in line for line in lines)
