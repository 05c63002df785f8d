"""Hooks for metrics and the `starcoder_router` logger for logs.

Hooks are plain callables held by one router: `on_route` (the decision), `on_attempt` (each
try, failed or not), `on_success` (the completion) and `on_failure` (the final error). A hook
that raises is logged and ignored. Here the first answer is a scripted 500, so the metrics show
a retry. A local server (`FakeServer`) stands in for the model, so this runs offline.

    python examples/hooks_logging.py
"""

from __future__ import annotations

import logging
from collections import Counter

from starcoder_router import (
    Attempt,
    Catalog,
    Completion,
    CostPolicy,
    Hooks,
    RetryPolicy,
    Router,
    RoutingDecision,
    StarcoderRouterError,
)
from starcoder_router.testing import FakeServer, Reply


class Metrics:
    """Counters a real app would export (Prometheus, StatsD...)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.cost_usd = 0.0
        self.latencies: list[float] = []

    def hooks(self) -> Hooks:
        return Hooks(on_route=[self.routed], on_attempt=[self.attempt],
                     on_success=[self.success], on_failure=[self.failure])

    def routed(self, decision: RoutingDecision) -> None:
        self.counts[f"routed:{decision.chosen.name}"] += 1

    def attempt(self, attempt: Attempt) -> None:
        self.counts[f"attempt:{attempt.outcome}"] += 1

    def success(self, completion: Completion) -> None:
        self.cost_usd += completion.cost_usd
        self.latencies.append(completion.latency_s)

    def failure(self, error: StarcoderRouterError) -> None:
        self.counts[f"failed:{type(error).__name__}"] += 1


def main() -> None:
    # The router logs retries, smaller windows than configured and provider warnings here.
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("starcoder_router").setLevel(logging.INFO)
    metrics = Metrics()
    with FakeServer() as server:
        server.script(Reply(status=500))
        paid = server.deployment(input_usd_per_mtok=0.2, output_usd_per_mtok=0.2)
        router = Router(catalog=Catalog.default().with_deployments(paid),
                        policy=CostPolicy(allow_providers={"openai-compatible"}), env={},
                        hooks=metrics.hooks(),
                        retry=RetryPolicy(max_retries=2, backoff_initial_s=0.05, jitter_s=0))
        with router:
            for _ in range(3):
                router.complete(prompt="def fib(n):", max_tokens=16)
    print(dict(sorted(metrics.counts.items())))
    print(f"cost ${metrics.cost_usd:.8f}, slowest {max(metrics.latencies):.3f}s")


if __name__ == "__main__":
    main()
