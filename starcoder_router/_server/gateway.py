"""The gateway's core, whatever protocol the client speaks: model names → routers, tenants and
rate limits, and the router's public API (`complete`, `stream`, `route`) underneath.

One `AsyncRouter` serves each model name in use (`starcoder2:quality` has its own objective,
`starcoder2-7b` its own catalog); they share the token counter, the spend store and the hooks.

Example::

    gateway = Gateway.from_config("router.toml")
    completion = await gateway.complete(Call(model="starcoder2", fields={"prompt": "def f("}))
    await gateway.aclose()
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from .._clock import SystemClock
from .._config import load_config
from .._fleet import Fleet
from .._routing.throughput import ThroughputMeter
from .._routing.tokens import load_token_counter
from .._running.hooks import Hooks
from .._stores import DEFAULT_REDIS_TIMEOUT_S, open_configured, open_store
from .._stores.redis import cluster_url
from .._stores.redis_limits import RateLimitRefused
from .admission import Admission
from .context import CallContext, current_call
from .fairness import Fairness
from .health_share import GatewayHealth
from .local_share import sharing_for
from .models import ModelChoice, model_names, resolve_model
from .settings import ServerSettings, TenantSettings, load_server_settings
from .tenants import RateLimiter, Tenants, TokenHold

if TYPE_CHECKING:
    from .._autocomplete.sessions import AutocompletePolicy
    from .._config import ProviderSettings
    from .._fleet import FleetPolicy
    from .._routing.catalog import Catalog, Deployment
    from .._routing.health import HealthPolicy
    from .._routing.policy import CostPolicy
    from .._routing.tokens import TokenCounter
    from .._running.async_router import AsyncRouter
    from .._running.results import Attempt, Completion, StreamChunk
    from .._running.retry import RetryPolicy
    from .._running.streams import AsyncStream
    from .._stores.base import SpendStore
    from .metrics import GatewayMetrics

__all__ = ["Call", "Gateway", "Opened"]


class Call(NamedTuple):
    """One request as a protocol module parsed it: a model name and `CompletionRequest`
    fields."""

    model: str | None
    fields: dict[str, Any]
    tenant: TenantSettings | None = None
    request_id: str = ""
    protocol: str = "openai"
    hold: TokenHold | None = None


class Opened(NamedTuple):
    """A stream that has produced its first chunk (None: it ended without any)."""

    stream: AsyncStream
    first: StreamChunk | None


class Gateway:
    """Serves requests through one `AsyncRouter` per model name; owns them and the store."""

    def __init__(
        self,
        *,
        settings: ServerSettings | None = None,
        catalog: Catalog | None = None,
        policy: CostPolicy | None = None,
        providers: Mapping[str, ProviderSettings] | None = None,
        tokenizer: str | os.PathLike[str] | TokenCounter | None = None,
        store: SpendStore | None = None,
        retry: RetryPolicy | None = None,
        health: HealthPolicy | None = None,
        hooks: Hooks | None = None,
        env: Mapping[str, str] | None = None,
        redis_url: str | None = None,
        autocomplete: AutocompletePolicy | None = None,
        fleet: FleetPolicy | None = None,
    ):
        from .._routing.catalog import Catalog
        from .._routing.policy import CostPolicy
        from .metrics import GatewayMetrics

        self.settings = settings or ServerSettings()
        self.catalog = catalog or Catalog.default()
        self.policy = policy or CostPolicy()
        self.store: SpendStore = store if store is not None else open_store()
        self.metrics: GatewayMetrics = GatewayMetrics()
        if hasattr(self.store, "observer"):  # on_store_error = "allow": count blind admissions
            self.store.observer = self.metrics.on_store_event
        self.tenants = Tenants(self.settings.tenants)
        self.fairness = Fairness(self.settings)  # slots for requests in flight, per tenant
        # The store's own bound on a Redis reply bounds the limiter's and shared health's too.
        redis_timeout_s = getattr(getattr(self.store, "inner", self.store), "timeout_s",
                                  DEFAULT_REDIS_TIMEOUT_S)
        # Rate limits and health live in the store's Redis, else its SQLite file, else here.
        self.limiter: RateLimiter
        self.limiter, local_health = sharing_for(
            self.store, redis_url, prefix=getattr(self.store, "prefix", "scr:"),
            timeout_s=redis_timeout_s, poll_s=self.settings.health_sync_s)
        self.admission = Admission(self.limiter, self.store, self.policy.budgets)
        extra = hooks or Hooks()
        if self.settings.tracing:
            from .telemetry import otel_hooks

            extra = extra._replace(on_attempt=[*extra.on_attempt, *otel_hooks().on_attempt])
        self._hooks = extra._replace(on_attempt=[self._on_attempt, *extra.on_attempt])
        self._counter = load_token_counter(tokenizer)
        # Sessions, reuse and the cache: on for every completion unless the config says not.
        from .autocomplete import gateway_policy

        self.autocomplete = gateway_policy(autocomplete)
        # One fleet for every router: a server's requests in flight are counted once, whatever
        # model name brought them.
        self.fleet = Fleet(fleet, self.catalog.deployments, now=SystemClock().now)
        self._router_args: dict[str, Any] = {
            "providers": providers, "store": self.store, "retry": retry, "health": health,
            "hooks": self._hooks, "env": env, "tokenizer": self._counter, "fleet": self.fleet,
            "autocomplete": self.autocomplete,
        }
        self._routers: dict[ModelChoice, AsyncRouter] = {}
        self._throughput = ThroughputMeter()
        self._by_name: dict[str | None, AsyncRouter] = {}
        self.health = GatewayHealth(lambda: list(self._routers.values()), redis_url,
                                    getattr(self.store, "prefix", "scr:"), redis_timeout_s,
                                    local=local_health)
        # The default router exists from the start (/ready asks it); what it can serve is fixed
        # by the config (keys, allowed providers, quality floor), so the lists compute it once.
        default = self._routers[ModelChoice()] = self._build_router(ModelChoice())
        self.servable: tuple[Deployment, ...] = default._core.servable()
        self._variants = frozenset(d.variant for d in self.servable)
        self._by_name[None] = default

    @classmethod
    def from_config(cls, path: str | os.PathLike[str] | None, **overrides: Any) -> Gateway:
        """A gateway from a router config file (its `[server]` section included)."""
        if path is None:
            return cls(**overrides)
        cfg = load_config(path)
        kwargs: dict[str, Any] = {
            "settings": load_server_settings(path), "catalog": cfg.catalog,
            "policy": cfg.policy, "providers": cfg.providers, "tokenizer": cfg.tokenizer,
            "retry": cfg.retry, "health": cfg.health, "autocomplete": cfg.autocomplete,
            "fleet": cfg.fleet,
        }
        kwargs.update(overrides)
        if "store" not in kwargs and cfg.store is not None:
            kwargs["store"] = open_configured(cfg.store)
            # Rate limits and health are shared through the store's Redis (server or cluster).
            url = cfg.store.url
            if cfg.store.kind == "redis" and url:
                if getattr(kwargs["store"], "cluster", False):
                    url = cluster_url(url)  # `cluster = true` with a plain redis:// URL
                kwargs.setdefault("redis_url", url)
        return cls(**kwargs)

    # -- routers --------------------------------------------------------------------------------

    @property
    def model_names(self) -> list[str]:
        """Every model name a client may send now; every list (`/v1/models`, `/api/tags`,
        `/api/ps`, the 404's) shows exactly these."""
        return model_names(self._variants)

    def resolve(self, model: str | None) -> ModelChoice:
        """What a model name asks for (`UnknownModelError` for names no deployment serves)."""
        return resolve_model(model, variants=self._variants)

    def window(self, variant: str | None) -> int:
        """The largest context window a servable deployment of `variant` (None: any) has."""
        return max((d.context_window for d in self.servable
                    if variant is None or d.variant == variant), default=0)

    def router(self, model: str | None) -> AsyncRouter:
        """The router for a model name (`UnknownModelError` for names we do not serve)."""
        router = self._by_name.get(model)
        if router is not None:
            return router
        choice = self.resolve(model)
        router = self._routers.get(choice)
        if router is None:
            router = self._routers[choice] = self._build_router(choice)
        if len(self._by_name) < 1024:  # names come from clients: keep the memo bounded
            self._by_name[model] = router
        return router

    def _build_router(self, choice: ModelChoice) -> AsyncRouter:
        from .._running.async_router import AsyncRouter

        policy = self.policy
        if choice.objective is not None:
            policy = policy.model_copy(update={"objective": choice.objective})
        catalog = self.catalog
        if choice.variant is not None:
            catalog = catalog.model_copy(update={"deployments": tuple(
                d for d in catalog.deployments if d.variant == choice.variant)})
        router = AsyncRouter(catalog=catalog, policy=policy, **self._router_args)
        self.health.prepare(router)
        # One machine serves every model name that reaches it: all the routers observe its
        # throughput together, so each prices it from all of its traffic.
        router._core.throughput = self._throughput
        return router

    def ready(self) -> bool:
        """At least one deployment could take a small completion now: eligible, and not
        cooling down after failures."""
        return any(c.cooling_until is None for c in self._probe().ranked)

    def cooling(self) -> dict[str, bool]:
        """Per eligible deployment: is its circuit open (cooling down) right now?"""
        return {c.deployment.name: c.cooling_until is not None for c in self._probe().candidates
                if c.eligible}

    def _probe(self) -> Any:
        return self.router(None).route(prompt="def", max_tokens=1)

    # -- calls ----------------------------------------------------------------------------------

    async def admit(self, tenant: TenantSettings | None, call: Call) -> TokenHold | None:
        """Count the request against its tenant's rate limits and reserve the most tokens it
        can use (429 when over). The caller owns the hold: `settle` it on every path."""
        return await self.admission.admit(tenant, call.fields)

    async def settle(self, hold: TokenHold | None) -> None:
        """Give back what a finished request held beyond what it used."""
        await self.admission.settle(hold)

    async def complete(self, call: Call) -> Completion:
        router = self.router(call.model)
        token = current_call.set(self._context(call))
        try:
            return await router.complete(**self._fields(call))
        except RateLimitRefused:  # the admission that rode with its reserve
            raise self.admission.refused() from None
        finally:
            current_call.reset(token)

    async def open_stream(self, call: Call) -> Opened:
        """Route and start a stream up to its first chunk, so that failures before any output
        still become an HTTP error status."""
        router = self.router(call.model)
        token = current_call.set(self._context(call))
        try:
            stream = router.stream(**self._fields(call))
            try:
                first = await stream.__anext__()
            except StopAsyncIteration:
                return Opened(stream, None)
            except BaseException as exc:
                await stream.aclose()
                if isinstance(exc, RateLimitRefused):  # the admission that rode with its reserve
                    raise self.admission.refused() from None
                raise
            return Opened(stream, first)
        finally:
            current_call.reset(token)

    async def next_chunk(self, call: Call, stream: AsyncStream) -> StreamChunk | None:
        token = current_call.set(self._context(call))
        try:
            return await stream.__anext__()
        except StopAsyncIteration:
            return None
        finally:
            current_call.reset(token)

    async def close_stream(self, call: Call, stream: AsyncStream) -> None:
        token = current_call.set(self._context(call))
        try:
            await stream.aclose()
        finally:
            current_call.reset(token)

    def _fields(self, call: Call) -> dict[str, Any]:
        fields = call.fields
        timeout = self.settings.request_timeout_s
        if call.tenant is not None or timeout is not None:
            fields = dict(fields)
            if call.tenant is not None:
                fields["tenant"] = call.tenant.name
            if timeout is not None:
                fields["timeout"] = timeout
        return fields

    @staticmethod
    def _context(call: Call) -> CallContext:
        return CallContext(call.request_id, call.model or "starcoder2",
                           call.tenant.name if call.tenant else None, call.protocol, call.hold)

    def _on_attempt(self, attempt: Attempt) -> None:
        ctx = current_call.get()
        tenant = ctx.tenant if ctx else None
        self.metrics.on_attempt(attempt, tenant if self.settings.metrics_tenant_labels else None)
        if attempt.outcome == "error" and (self.health.shared is not None
                                           or len(self._routers) > 1):
            self.health.after_failure(attempt.deployment)
        if ctx is not None and ctx.hold is not None and attempt.usage is not None:
            ctx.hold.used += attempt.usage.total_tokens

    async def start(self) -> None:
        """Start background work (listening for shared health); the app calls it once its
        loop runs."""
        await self.health.start()

    async def refresh_gauges(self) -> None:
        """Read circuit states and budgets left into the metrics (when `/metrics` is scraped)."""
        self.metrics.set_circuits(self.cooling())
        budgets = self.policy.budgets
        if not budgets:
            return
        from .._stores.periods import applicable_keys

        now = dt.datetime.now(dt.UTC)
        # Without tenant labels a tenant's budgets are not shown either (their keys name it).
        tenants = self.tenants.names if self.settings.metrics_tenant_labels else []
        keys = {k.key: k for tenant in [None, *tenants]
                for k in applicable_keys(budgets, tenant=tenant, tags=(), now=now)}
        astatus = getattr(self.store, "astatus", None)
        if astatus is not None and keys:
            self.metrics.set_budgets(await astatus(list(keys.values())))

    async def aclose(self) -> None:
        await self.health.aclose()
        for router in self._routers.values():
            await router.aclose()
        self._routers.clear()
        self._by_name.clear()
        self.fleet.close()
        await self.limiter.aclose()
        close = getattr(self.store, "aclose", None)
        if close is not None:
            await close()
