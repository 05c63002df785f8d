"""What `Router` and `AsyncRouter` have in common and does no I/O: construction, configuration
from a file, the routing decision, and the per-request start. The two routers add only their
sending loops (as httpx's `Client` and `AsyncClient` do over `BaseClient`)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, Self

from .._autocomplete import apply_mode
from .._autocomplete.sessions import AutocompletePolicy
from .._clock import Clock, SystemClock
from .._config import ProviderSettings, load_config
from .._errors import ConfigError, RouterClosedError, StoreError
from .._fleet import Fleet, FleetPolicy
from .._routing.catalog import Catalog
from .._routing.decision import RoutingDecision
from .._routing.health import HealthPolicy, HealthTracker
from .._routing.policy import CostPolicy
from .._routing.request import CompletionRequest, RequestFields, build_request
from .._routing.tokens import TokenCounter, load_token_counter
from .._stores import open_configured, open_store
from .._stores.base import SpendStore
from .core import RouterCore
from .hooks import Hooks
from .retry import HedgePolicy, RetryPolicy
from .sessions_run import SessionHook

if TYPE_CHECKING:
    from typing import Unpack

__all__ = ["BaseRouter"]


class BaseRouter:
    def __init__(
        self,
        *,
        catalog: Catalog | None,
        policy: CostPolicy | None,
        providers: Mapping[str, ProviderSettings | Mapping[str, Any]] | None,
        tokenizer: str | os.PathLike[str] | TokenCounter | Literal[False] | None,
        store: SpendStore | None,
        retry: RetryPolicy | None,
        health: HealthPolicy | None,
        hooks: Hooks | None,
        hedge: HedgePolicy | None,
        clock: Clock | None,
        env: Mapping[str, str] | None,
        autocomplete: AutocompletePolicy | None = None,
        fleet: FleetPolicy | Fleet | None = None,
    ):
        self._core = RouterCore(
            catalog=catalog, policy=policy, providers=providers,
            counter=load_token_counter(tokenizer), retry=retry, health=health, hooks=hooks,
            clock=clock or SystemClock(), env=env, fleet=fleet,
        )
        self._store: SpendStore = store if store is not None else open_store()
        self._hedge = hedge
        self._closed = False
        # A store the router opened itself (from a config file's [store]): it closes it too.
        self._owned_store: SpendStore | None = None
        # Autocomplete sessions, typed-ahead reuse and the exact-repeat cache.
        self._sessions = SessionHook(autocomplete or AutocompletePolicy(), self._core.clock.now)

    @classmethod
    def from_config(cls, path: str | os.PathLike[str], **overrides: Any) -> Self:
        """A router from a TOML config file; keyword arguments override what the file sets.

        Relative paths in the file are read from the file's folder. Every error is a
        `ConfigError` naming the file."""
        cfg = load_config(path, catalog=overrides.pop("catalog", None))
        kwargs: dict[str, Any] = {
            "catalog": cfg.catalog, "policy": cfg.policy, "providers": cfg.providers,
            "tokenizer": cfg.tokenizer, "retry": cfg.retry, "health": cfg.health,
            "fleet": cfg.fleet,
        }
        if cfg.autocomplete is not None:
            kwargs["autocomplete"] = cfg.autocomplete
        kwargs.update(overrides)
        opened: SpendStore | None = None
        try:
            if "store" not in kwargs and cfg.store:
                # Opened only when not overridden: a SQLite path would create its file.
                opened = kwargs["store"] = open_configured(cfg.store)
            router = cls(**kwargs)
            router._owned_store = opened
            return router
        except BaseException as exc:
            if opened is not None:
                opened.close()  # the router that was to own it was never made
            if isinstance(exc, StoreError):
                raise ConfigError(f"cannot open the store it names: {exc}",
                                  source=os.fspath(path), field="store") from exc
            if isinstance(exc, ConfigError) and exc.source is None:
                # open_store's keyword arguments are the [store] table's keys.
                field = f"store.{exc.field}" if exc.field in ("kind", "path", "url") else None
                raise ConfigError(exc.detail if field else str(exc), source=os.fspath(path),
                                  field=field) from exc
            raise

    @property
    def catalog(self) -> Catalog:
        return self._core.catalog

    @property
    def policy(self) -> CostPolicy:
        return self._core.policy

    @property
    def store(self) -> SpendStore:
        return self._store

    @property
    def health(self) -> HealthTracker:
        """This router's circuit breakers, latency averages and learned windows (one tracker
        per router; the gateway shares opened circuits between instances through it)."""
        return self._core.health

    @property
    def fleet(self) -> Fleet:
        """Replica groups, each local server's slots and the requests in flight on it."""
        return self._core.fleet

    @property
    def token_counter(self) -> TokenCounter:
        return self._core.counter

    def route(self, request: CompletionRequest | None = None, /,
              **fields: Unpack[RequestFields]) -> RoutingDecision:
        """The routing decision for a request, without sending anything (no I/O, so it is
        not async in `AsyncRouter` either)."""
        return self._core.route(apply_mode(build_request(request, fields)))

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(deployments={len(self._core.catalog.deployments)}, "
                f"objective={self._core.policy.objective!r})")

    @property
    def closed(self) -> bool:
        return self._closed

    def _request(self, request: CompletionRequest | None, fields: Mapping[str, Any], *,
                 stream: bool) -> CompletionRequest:
        """The validated request for `complete()` (`stream=False`) or `stream()`."""
        if self._closed:
            raise RouterClosedError(f"this {type(self).__name__} is closed; make a new one")
        if request is None:
            fields = {**fields, "stream": stream}  # set before validation: cheaper than a copy
        req = build_request(request, fields)
        if req.stream != stream:
            req = req.model_copy(update={"stream": stream})
        return apply_mode(req)

    def _close_owned_store(self) -> None:
        if self._core.owns_fleet:  # every close() ends here: stop the slot probes too
            self._core.fleet.close()
        store, self._owned_store = self._owned_store, None
        if store is not None:
            store.close()
