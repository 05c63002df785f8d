"""Prometheus metrics of one gateway, in a registry of its own (never the process-global one,
so two gateways in one process, as in tests, do not mix their counts).

Request counts, latency and errors are observed by the HTTP layer; attempts, time to first
token and errors by type come from the router's hooks; tokens and spend by deployment and tenant
from each finished completion. Circuit state and budget remaining are read when scraped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._errors import MissingDependencyError

if TYPE_CHECKING:
    from .._running.results import Attempt

__all__ = ["GatewayMetrics"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class GatewayMetrics:
    def __init__(self) -> None:
        try:
            import prometheus_client as prom
        except ImportError as exc:
            raise MissingDependencyError("the gateway's /metrics", "prometheus-client",
                                         "server") from exc
        self._prom = prom
        self.registry = prom.CollectorRegistry()
        r = self.registry
        ns = "starcoder_router"
        self.requests = prom.Counter(f"{ns}_requests", "HTTP requests served",
                                     ["protocol", "route", "status"], registry=r)
        self.errors = prom.Counter(f"{ns}_errors", "Errors by type (gateway and attempts)",
                                   ["type"], registry=r)
        self.latency = prom.Histogram(f"{ns}_request_seconds", "Time to serve a request",
                                      ["protocol", "route"], buckets=_LATENCY_BUCKETS, registry=r)
        self.ttft = prom.Histogram(f"{ns}_time_to_first_token_seconds",
                                   "Time to the first streamed token, per attempt",
                                   ["deployment"], buckets=_LATENCY_BUCKETS, registry=r)
        self.attempts = prom.Counter(f"{ns}_attempts", "Attempts by deployment and outcome",
                                     ["deployment", "outcome"], registry=r)
        self.tokens = prom.Counter(f"{ns}_tokens", "Tokens by deployment, tenant and kind",
                                   ["deployment", "tenant", "kind"], registry=r)
        self.spend = prom.Counter(f"{ns}_spend_usd", "Spend in USD by deployment and tenant",
                                  ["deployment", "tenant"], registry=r)
        self.circuit = prom.Gauge(f"{ns}_circuit_open",
                                  "1 while a deployment is cooling down after failures",
                                  ["deployment"], registry=r)
        self.budget = prom.Gauge(f"{ns}_budget_remaining_usd", "What a budget has left",
                                 ["budget", "key"], registry=r)
        self.store_outage = prom.Counter(
            f"{ns}_store_outage_events", "While the spend store is down (on_store_error = "
            "allow): requests admitted_blind or refused_blind, bookings journaled and booked",
            ["event"], registry=r)

        # Labelled children, found once: `labels()` takes a lock and builds its key on every
        # call, several times a request. The label values are bounded by the configuration
        # (protocols, routes, statuses, deployments, tenants, error types), and the registry
        # keeps every child anyway.
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    def child(self, metric: Any, *values: str) -> Any:
        """`metric.labels(*values)`, memoised."""
        key = (id(metric), values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return found

    def on_store_event(self, event: str) -> None:
        self.store_outage.labels(event).inc()

    def on_attempt(self, attempt: Attempt, tenant: str | None) -> None:
        """Every attempt, including failed and cancelled ones (a cancelled stream has a cost)."""
        name, child = attempt.deployment, self.child
        child(self.attempts, name, attempt.outcome).inc()
        if attempt.ttft_s is not None:
            child(self.ttft, name).observe(attempt.ttft_s)
        if attempt.error is not None:
            child(self.errors, type(attempt.error).__name__).inc()
        who = tenant or "-"
        if attempt.usage is not None:
            child(self.tokens, name, who, "input").inc(attempt.usage.prompt_tokens)
            child(self.tokens, name, who, "output").inc(attempt.usage.completion_tokens)
        if attempt.cost_nano:
            child(self.spend, name, who).inc(attempt.cost_nano / 1e9)

    def render(self) -> tuple[bytes, str]:
        """The exposition body and its content type."""
        body: bytes = self._prom.generate_latest(self.registry)
        content_type: str = self._prom.CONTENT_TYPE_LATEST
        return body, content_type

    def set_circuits(self, cooling: dict[str, bool]) -> None:
        for name, is_open in cooling.items():
            self.circuit.labels(name).set(1.0 if is_open else 0.0)

    def set_budgets(self, statuses: list[Any]) -> None:
        for st in statuses:
            self.budget.labels(st.name, st.key).set(st.remaining_usd)
