"""What `Router` and `AsyncRouter` share: provider endpoints and adapters, the effective
deployments, and routing. No I/O here. Each request then runs as a `RequestRun` (`_run.py`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .._config import ProviderSettings
from .._errors import ConfigError, InvalidRequestError, NoRouteError
from .._fleet import Fleet, FleetPolicy
from .._providers.base import Provider
from .._providers.call import Endpoint
from .._providers.registry import provider_class
from .._routing.catalog import Catalog, Deployment
from .._routing.decision import BudgetRouting, RoutingDecision, StaticCache, decide, servable
from .._routing.fit import PromptCounts
from .._routing.health import HealthPolicy, HealthTracker
from .._routing.policy import CostPolicy, check_benchmarks
from .._routing.render import render
from .._routing.request import CompletionRequest
from .._routing.selfhosted import SelfHostedPrice, self_hosted_price
from .._routing.structured import require_schema_support
from .._routing.throughput import ThroughputMeter
from .._routing.tokens import TokenCounter
from .._routing.trim_plan import TrimPlans
from .._secrets import Secret
from .._stores.base import BudgetKey, Reservation
from .._validation import validation_error_of
from .hooks import Hooks, run_hooks
from .retry import RetryPolicy
from .run import RequestRun

if TYPE_CHECKING:
    from .._clock import Clock

__all__ = ["RouterCore"]

logger = logging.getLogger("starcoder_router")

class RouterCore:
    """Configuration and routing shared by the sync and async routers."""

    def __init__(
        self,
        *,
        catalog: Catalog | None,
        policy: CostPolicy | None,
        providers: Mapping[str, ProviderSettings | Mapping[str, Any]] | None,
        counter: TokenCounter,
        retry: RetryPolicy | None,
        health: HealthPolicy | None,
        hooks: Hooks | None,
        clock: Clock,
        env: Mapping[str, str] | None,
        fleet: FleetPolicy | Fleet | None = None,
    ):
        self.catalog = catalog or Catalog.default()
        self.policy = policy or CostPolicy()
        check_benchmarks(self.policy, self.catalog)
        self.counter = counter
        self.retry = retry or RetryPolicy()
        self.health = HealthTracker(health)
        # Busy time and tokens of local deployments priced by the hour (`selfhosted.py`).
        self.throughput = ThroughputMeter()
        self._prices: tuple[int, tuple[Deployment, ...], dict[str, SelfHostedPrice]] | None = None
        self.hooks = hooks or Hooks()
        self.clock = clock
        self._env = dict(os.environ if env is None else env)
        self._settings = {name: _provider_settings(name, s)
                          for name, s in (providers or {}).items()}
        self._adapters: dict[str, Provider] = {}
        self._endpoints: dict[tuple[str, str | None], Endpoint] = {}
        self.provider_status: dict[str, str | None] = {}
        for name in sorted({d.provider for d in self.catalog.deployments} | set(self._settings)):
            cls = provider_class(name)
            self._adapters[name] = cls()
            reason = cls.not_ready_reason(self.endpoint(name, None))
            key_env = (self._settings.get(name) or ProviderSettings()).api_key_env
            if reason and key_env:  # name the variable the caller configured, not the default
                reason = f"provider {name!r} not configured: set {key_env}"
            self.provider_status[name] = reason
        self._deployments = self.catalog.deployments
        self._windows_version = 0
        self._static: StaticCache = {}
        # The last trim of each editor's FIM requests, reused on its next keystroke.
        self.trim_plans = TrimPlans()
        # The last used share of each budget seen, for the soft limit.
        self._budget_use: dict[str, float] = {}
        # Replica groups, slots and requests in flight (`_fleet`). A `Fleet` passed in is
        # shared (the gateway's routers count one server's requests together) and its owner
        # closes it; one made here, the router closes.
        self.owns_fleet = not isinstance(fleet, Fleet)
        self.fleet = fleet if isinstance(fleet, Fleet) else Fleet(
            fleet, self.catalog.deployments, now=clock.now)

    # -- configuration ------------------------------------------------------------------------

    def endpoint(self, provider: str, base_url: str | None) -> Endpoint:
        """Resolved URL, key and timeouts for `provider` (cached)."""
        key = (provider, base_url)
        found = self._endpoints.get(key)
        if found is not None:
            return found
        cls = provider_class(provider)
        s = self._settings.get(provider) or ProviderSettings()
        env_url = self._env.get(f"STARCODER_ROUTER_{provider.upper().replace('-', '_')}_BASE_URL")
        url = base_url or s.base_url or env_url or cls.default_base_url
        api_key: Secret | None = None
        if s.api_key is not None:
            api_key = Secret(s.api_key.get_secret_value())
        elif s.api_key_env:
            value = self._env.get(s.api_key_env)
            api_key = Secret(value) if value else None
        else:
            api_key = cls.key_from_env(self._env)
        ep = Endpoint(provider, url, api_key, s.timeout, s.connect_timeout,
                      tuple(sorted(s.headers.items())))
        self._endpoints[key] = ep
        return ep

    def adapter(self, provider: str) -> Provider:
        return self._adapters[provider]

    def deployments(self) -> tuple[Deployment, ...]:
        """The catalog's deployments with any smaller windows learned from providers."""
        if self.health.version != self._windows_version:
            learned = self.health.windows()
            self._deployments = tuple(
                d.model_copy(update={"context_window": learned[d.name]})
                if d.name in learned else d
                for d in self.catalog.deployments
            )
            self._windows_version = self.health.version
            self._static = {}
        return self._deployments

    # -- routing ------------------------------------------------------------------------------

    def decide(self, request: CompletionRequest, *, counts: PromptCounts | None = None,
               budget: BudgetRouting | None = None,
               only: set[str] | None = None) -> RoutingDecision:
        now = self.clock.now()
        deployments = self.deployments()
        static: StaticCache | None = self._static
        if only is not None:
            deployments = tuple(d for d in deployments if d.name in only)
            static = None
        decision = decide(
            request,
            render(request),
            deployments=deployments,
            variants=self.catalog.variants,
            policy=self.policy,
            provider_status=self.provider_status,
            counts=counts or PromptCounts(self.counter, self.trim_plans),
            health=self.health.view(now),
            budget=budget,
            now=now,
            static=static,
            self_hosted=self.self_hosted_prices(deployments),
        )
        return self.fleet.arrange(decision) if self.fleet.active else decision

    def self_hosted_prices(self, deployments: tuple[Deployment, ...]
                           ) -> dict[str, SelfHostedPrice]:
        """The effective price of each local deployment that states `usd_per_hour`, from its
        throughput as observed so far (or the prior). Worked out again only after the meter
        saw a new attempt end (or for other deployments)."""
        version = self.throughput.version
        cached = self._prices
        if cached is not None and cached[0] == version and cached[1] is deployments:
            return cached[2]
        prices = {}
        for d in deployments:
            if d.is_local and d.usd_per_hour is not None:
                price = self_hosted_price(d, self.catalog.variants.get(d.variant),
                                          self.throughput.observed(d.name))
                if price is not None:
                    prices[d.name] = price
        self._prices = (version, deployments, prices)
        return prices

    def servable(self) -> tuple[Deployment, ...]:
        """The deployments that could serve some request (see `decision.servable`)."""
        return servable(self.catalog.deployments, variants=self.catalog.variants,
                        policy=self.policy, provider_status=self.provider_status)

    def require_tenant(self, request: CompletionRequest) -> None:
        if self.policy.require_tenant and request.tenant is None:
            raise InvalidRequestError("this router's policy requires a tenant (require_tenant="
                                      "True): pass tenant=...")

    def route(self, request: CompletionRequest) -> RoutingDecision:
        self.require_tenant(request)
        decision = self.decide(request)
        if self.hooks.on_route:
            run_hooks(self.hooks.on_route, decision)
        if not decision.ranked:
            raise NoRouteError(decision)
        return decision

    # -- budgets ------------------------------------------------------------------------------

    def budget_keys(self, request: CompletionRequest) -> tuple[BudgetKey, ...]:
        """The budget buckets `request` counts against, now."""
        budgets = self.policy.budgets
        if not budgets:
            return ()
        from .._stores.periods import applicable_keys  # zoneinfo and calendar maths: only then

        return applicable_keys(budgets, tenant=request.tenant, tags=request.tags,
                               now=self.clock.wall())

    def soft_limited(self, keys: tuple[BudgetKey, ...]) -> bool:
        """Past the soft limit of any budget (as of the last reservation we saw)?"""
        limit = self.policy.soft_limit
        if limit is None or not keys:
            return False
        return any(self._budget_use.get(k.key, 0.0) >= limit for k in keys)

    def note_reservation(self, reservation: Reservation) -> None:
        """Remember how used each budget is, for the soft limit. Our own hold is left out: it
        is a worst case, and counting it would flip the objective back and forth as requests
        of different sizes come and go."""
        for s in reservation.statuses:
            used = s.spent_nano + s.reserved_nano - reservation.amount_nano
            self._budget_use[s.key] = used / s.limit_nano if s.limit_nano else 1.0

    # -- starting a request -------------------------------------------------------------------

    def start(self, request: CompletionRequest) -> RequestRun:
        """Route `request` and return the state machine that runs it."""
        self.require_tenant(request)
        require_schema_support(request.response_format)
        budget_keys = self.budget_keys(request)
        soft_limited = self.soft_limited(budget_keys)
        counts = PromptCounts(self.counter, self.trim_plans)
        budget = BudgetRouting(force_cheapest=True, note="soft budget limit passed: objective "
                               "cheapest") if soft_limited else None
        decision = self.decide(request, counts=counts, budget=budget)
        if self.hooks.on_route:
            run_hooks(self.hooks.on_route, decision)
        if not decision.ranked:
            err = NoRouteError(decision)
            if self.hooks.on_failure:
                run_hooks(self.hooks.on_failure, err)
            raise err
        return RequestRun(self, request, decision, counts, budget_keys)


def _provider_settings(name: str, given: ProviderSettings | Mapping[str, Any]) -> ProviderSettings:
    """`providers={name: {...}}` validated; an error names the argument as the caller wrote it."""
    if isinstance(given, ProviderSettings):
        return given
    try:
        return ProviderSettings(**given)
    except ConfigError as exc:
        cause = validation_error_of(exc)
        if cause is None:
            raise
        problems = [f"providers[{name!r}]" + "".join(f"[{p!r}]" for p in e["loc"]) + ": "
                    + e["msg"].removeprefix("Value error, ") for e in cause.errors()]
        raise ConfigError("; ".join(problems)) from None
