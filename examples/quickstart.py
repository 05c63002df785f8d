"""The main job, offline and without API keys.

A local OpenAI-compatible server stands in for a StarCoder 2 deployment (the package's own
`FakeServer`, on 127.0.0.1), next to the default hosted catalog. The router explains its
choices, completes, fills in the middle, streams, keeps a daily budget in an embedded SQLite
file, and prints the spend it recorded.

    python examples/quickstart.py
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


def main() -> None:
    # The spend database lives in a temporary folder that is removed when the demo ends.
    with tempfile.TemporaryDirectory(prefix="starcoder-router-") as tmp:
        demo(Path(tmp))


def demo(workdir: Path) -> None:
    with FakeServer() as server:
        # A "local" deployment priced like a small GPU box, beside the hosted defaults.
        local = server.deployment(variant="starcoder2-3b", name="local/starcoder2-3b",
                                  input_usd_per_mtok=0.05, output_usd_per_mtok=0.05)
        catalog = Catalog.default().with_deployments(local)
        policy = CostPolicy(budgets=[Budget(limit_usd=0.0002, period="day")])
        store = SQLiteStore(str(workdir / "spend.db"))

        # Planning view: pretend the hosted keys exist to see where requests would go.
        planner = Router(catalog=catalog, policy=policy,
                         env={"FIREWORKS_API_KEY": "x", "DEEPINFRA_API_KEY": "x"})
        print("== where a short prompt goes ==")
        print(planner.route(prompt="def fib(n):", max_tokens=64).explain())
        print("\n== with a quality floor (HumanEval >= 40) ==")
        quality = Router(catalog=catalog, policy=CostPolicy(min_quality=("humaneval", 40)),
                         env={"FIREWORKS_API_KEY": "x", "DEEPINFRA_API_KEY": "x"})
        print(quality.route(prompt="def fib(n):", max_tokens=64).explain())

        # The real thing: no keys in this process, so only the local deployment can answer.
        with Router(catalog=catalog, policy=policy, store=store) as router:
            print("\n== complete ==")
            c = router.complete(prompt="def fib(n):", max_tokens=32)
            print(repr(c.text), f"via {c.deployment.name}, {c.usage.prompt_tokens}+"
                  f"{c.usage.completion_tokens} tokens, ${c.cost_usd:.8f}")

            print("\n== fill in the middle ==")
            c = router.complete(prefix="def fib(n):\n", suffix="\n\nprint(fib(10))\n",
                                max_tokens=32)
            print("sent:", repr(server.requests[-1].body["prompt"]))
            print("got: ", repr(c.text), f"${c.cost_usd:.8f}")

            print("\n== stream ==")
            with router.stream(prompt="def fib(n):", max_tokens=32) as stream:
                for chunk in stream:
                    print(chunk.text, end="", flush=True)
            assert stream.completion is not None
            print(f"\n(streamed, ${stream.completion.cost_usd:.8f})")

            print("\n== a daily budget of $0.0002 ==")
            served = 0
            try:
                while True:
                    router.complete(prompt="def fib(n):", max_tokens=32)
                    served += 1
            except BudgetExceededError as exc:
                print(f"{served} more requests, then: {exc}")

        print("\n== spend recorded (in a SQLite file removed when the demo ends) ==")
        print(spend_report(store.ledger(), period="day", by="deployment"))
        store.close()


if __name__ == "__main__":
    main()
