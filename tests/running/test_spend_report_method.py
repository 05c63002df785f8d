"""`router.spend_report()`: the spend its store recorded, the same tables as `spend_report`."""

from __future__ import annotations

import pytest

from starcoder_router import (
    AsyncRouter,
    Catalog,
    ConfigError,
    CostPolicy,
    MemoryStore,
    spend_report,
)
from starcoder_router.testing import FakeServer
from support.router_driver import Driver


async def test_the_router_reports_what_it_recorded(drive: Driver) -> None:
    store = MemoryStore()
    with FakeServer() as server:
        dep = server.deployment(input_usd_per_mtok=1.0, output_usd_per_mtok=2.0)
        router = drive.new_router(catalog=Catalog.default().with_deployments(dep),
                                  policy=CostPolicy(allow_providers={"openai-compatible"}),
                                  store=store, env={})
        for tenant in ("acme", "acme", "globex"):
            await drive.complete(router, prompt="def f():", max_tokens=8, tenant=tenant)

        async def report(**kwargs: object) -> str:
            if isinstance(router, AsyncRouter):
                return await router.spend_report(**kwargs)  # type: ignore[arg-type]
            return router.spend_report(**kwargs)  # type: ignore[arg-type]

        assert await report() == spend_report(store.ledger(), period="day")
        by_tenant = await report(by="tenant", period="total")
        assert "acme" in by_tenant and "globex" in by_tenant
        only = await report(by="tenant", period="total", tenant="globex")
        assert "globex" in only and "acme" not in only
        with pytest.raises(ConfigError, match="unknown period"):
            await report(period="fortnight")
