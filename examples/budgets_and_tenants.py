"""Budgets per tenant and overall, kept in SQLite, and the spend report.

Each tenant gets its own daily bucket; requests without a tenant share one bucket of their own
(`require_tenant=True` would refuse them instead). A local server (`FakeServer`) stands in for
a paid deployment, so this runs offline; the database lives in a temporary folder.

    python examples/budgets_and_tenants.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from starcoder_router import (
    Budget,
    BudgetExceededError,
    Catalog,
    CostPolicy,
    Router,
    SQLiteStore,
    spend_report,
)
from starcoder_router.testing import FakeServer

POLICY = CostPolicy(
    allow_providers={"openai-compatible"},
    budgets=[Budget(limit_usd=0.05, period="day"),                   # everyone together
             Budget(limit_usd=0.01, period="day", scope="tenant")],  # each tenant
)


def spend_until_refused(router: Router, tenant: str | None) -> int:
    served = 0
    while served < 100:
        try:
            router.complete(prompt="def handler(event):", max_tokens=64, tenant=tenant)
        except BudgetExceededError as exc:
            print(f"  {tenant or '(no tenant)'}: {served} served, then {exc.status.name} said no")
            return served
        served += 1
    return served


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, FakeServer() as server:
        paid = server.deployment(name="hosted/starcoder2-3b", input_usd_per_mtok=50,
                                 output_usd_per_mtok=50)
        store = SQLiteStore(str(Path(tmp) / "spend.db"))
        with Router(catalog=Catalog.default().with_deployments(paid), policy=POLICY,
                    store=store, tokenizer=False, env={}) as router:
            for tenant in ("acme", "globex", None):
                spend_until_refused(router, tenant)
        print()
        print(spend_report(store.ledger(), period="day", by="tenant"))
        store.close()


if __name__ == "__main__":
    main()
