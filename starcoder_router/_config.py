"""Router configuration: provider settings, and loading everything from a TOML file.

A config file adds to and overrides the defaults; every error names the file and the field::

    tokenizer = "~/models/starcoder2/tokenizer.json"

    [policy]
    objective = "cheapest"
    max_cost_per_request_usd = 0.01
    prefer_local = true

    [[policy.budgets]]
    limit_usd = 5
    period = "day"

    [providers.ollama]
    base_url = "http://localhost:11434"

    [[deployments]]
    provider = "ollama"
    variant = "starcoder2-3b"
    model = "starcoder2:3b"
    context_window = 16384

    [store]
    kind = "sqlite"
    path = "spend.db"

What `starcoder-router doctor --write` measured is applied on top: the file `overrides = "path"`
names, else `<config stem>.overrides.toml` beside the config when it exists.

Relative paths (`tokenizer`, `store.path`) are read from the config file's folder, so a file
means the same wherever the program runs; `~` is the home directory.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Literal, NamedTuple, TypeVar

from pydantic import BaseModel, Field, SecretStr, model_validator

from ._autocomplete.sessions import AutocompletePolicy
from ._errors import ConfigError
from ._fleet.policy import FleetPolicy
from ._providers.registry import PROVIDERS
from ._routing.catalog import Catalog
from ._routing.health import HealthPolicy
from ._routing.policy import CostPolicy, check_benchmarks
from ._routing.tokens import looks_like_hub_id
from ._running.retry import RetryPolicy
from ._validation import FrozenModel, read_toml, validate_config

__all__ = ["ProviderSettings", "RouterConfig", "StoreSettings", "load_config"]

_M = TypeVar("_M", bound=BaseModel)


class ProviderSettings(FrozenModel):
    """How to reach one provider. Unset fields fall back to the environment, then to the
    provider's defaults: `STARCODER_ROUTER_<PROVIDER>_BASE_URL` for the URL, the provider's
    usual key variables (or `api_key_env`) for the key."""

    base_url: str | None = None
    api_key: SecretStr | None = None
    api_key_env: str | None = None
    timeout: float = Field(default=60.0, gt=0)
    connect_timeout: float = Field(default=5.0, gt=0)
    headers: dict[str, str] = Field(default_factory=dict)


class StoreSettings(FrozenModel):
    """Where spend is kept: `memory` (default), `sqlite` (needs `path`) or `redis` (`url`;
    `cluster = true` or a `redis+cluster://` URL for a Redis Cluster). `on_store_error`:
    refuse requests while the store is down (`reject`), or admit them against 10% of each
    budget and book them when it is back (`allow`). `retention_days`: how long raw ledger rows
    are kept (hourly roll-ups are kept for ever); None keeps them all. `timeout_s` bounds each
    Redis connect and each reply (a hung server gives `StoreError` after it)."""

    kind: Literal["memory", "sqlite", "redis"] = "memory"
    path: str | None = None
    url: str | None = None
    cluster: bool = False
    on_store_error: Literal["reject", "allow"] = "reject"
    retention_days: float | None = Field(default=None, gt=0)
    timeout_s: float = Field(default=2.0, gt=0)

    @model_validator(mode="after")
    def _address(self) -> StoreSettings:
        if self.kind == "sqlite" and not self.path:
            raise ValueError("a sqlite store needs a path")
        if self.kind == "redis" and not self.url:
            raise ValueError("a redis store needs a url")
        return self


class RouterConfig(NamedTuple):
    """Everything a config file can set, validated."""

    catalog: Catalog
    policy: CostPolicy
    providers: Mapping[str, ProviderSettings] = {}
    tokenizer: str | None = None
    store: StoreSettings | None = None
    retry: RetryPolicy | None = None
    health: HealthPolicy | None = None
    autocomplete: AutocompletePolicy | None = None
    fleet: FleetPolicy | None = None


# `simulate` belongs to `starcoder-router simulate` (read by `_simulate.model`) and `server` to
# the gateway (`starcoder-router serve`), which validate them themselves; routers ignore both.
_TOP_LEVEL = {"tokenizer", "policy", "providers", "deployments", "variants", "store", "retry",
              "health", "fleet", "simulate", "server", "overrides", "autocomplete"}


def load_config(path: str | os.PathLike[str], *, catalog: Catalog | None = None,
                overrides: bool = True) -> RouterConfig:
    """Read and validate a router config file; `overrides=False` leaves out the measured
    overrides (`doctor` measures against the claims)."""
    source = os.path.expanduser(os.fspath(path))
    data = read_toml(source)
    unknown = sorted(set(data) - _TOP_LEVEL)
    if unknown:
        raise ConfigError(
            f"unknown section(s) {', '.join(unknown)}; expected some of "
            f"{', '.join(sorted(_TOP_LEVEL))}", source=source, field=unknown[0],
        )
    base = catalog or Catalog.default()
    entries = _list(data, "deployments", source)
    for i, entry in enumerate(entries):
        _known_provider(entry.get("provider"), source, f"deployments[{i}].provider")
    merged = base.merged(variants=_list(data, "variants", source), deployments=entries,
                         source=source)
    if overrides:
        merged = _with_overrides(merged, data.get("overrides"), source)
    providers = {}
    for name, raw in _table(data, "providers", source).items():
        _known_provider(name, source, f"providers.{name}")
        providers[name] = _model(ProviderSettings, raw, source, f"providers.{name}")
    policy = _model(CostPolicy, data.get("policy", {}), source, "policy")
    check_benchmarks(policy, merged, source=source)
    store = _model(StoreSettings, data["store"], source, "store") if "store" in data else None
    if store is not None and store.kind == "sqlite" and store.path and store.path != ":memory:":
        store = store.model_copy(update={"path": _resolve(store.path, source)})
    return RouterConfig(
        catalog=merged,
        policy=policy,
        providers=providers,
        tokenizer=_tokenizer(data.get("tokenizer"), source),
        store=store,
        retry=_model(RetryPolicy, data["retry"], source, "retry") if "retry" in data else None,
        health=_model(HealthPolicy, data["health"], source, "health") if "health" in data else None,
        autocomplete=(_model(AutocompletePolicy, data["autocomplete"], source, "autocomplete")
                      if "autocomplete" in data else None),
        fleet=_model(FleetPolicy, data["fleet"], source, "fleet") if "fleet" in data else None,
    )


def _with_overrides(catalog: Catalog, value: Any, source: str) -> Catalog:
    """`catalog` with the measured overrides the config names (or keeps beside it) applied."""
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise ConfigError("must be the path of an overrides file", source=source,
                          field="overrides")
    if value is None:
        from ._doctor.overrides import default_overrides_path

        path = default_overrides_path(source)
        if not os.path.isfile(path):
            return catalog
    else:
        path = _resolve(value, source)
    from ._doctor.overrides import apply_overrides, read_overrides

    return apply_overrides(catalog, read_overrides(path))


def _resolve(path: str, source: str) -> str:
    """`path` as the config file means it: relative to the file's folder."""
    folder = os.path.dirname(os.path.abspath(source))
    return os.path.normpath(os.path.join(folder, os.path.expanduser(path)))


def _tokenizer(value: Any, source: str) -> str | None:
    """A tokenizer path resolved against the file's folder, or a hub id kept as written."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError("must be a path or a hub id", source=source, field="tokenizer")
    path = _resolve(value, source)
    if os.path.exists(path):
        return path
    if looks_like_hub_id(value) and not value.endswith(".json"):
        return value
    raise ConfigError(f"no tokenizer at {path!r} (relative paths are read from the config "
                      "file's folder)", source=source, field="tokenizer")


def _known_provider(name: Any, source: str, field: str) -> None:
    if isinstance(name, str) and name not in PROVIDERS:
        raise ConfigError(f"unknown provider {name!r}; known providers: "
                          f"{', '.join(sorted(PROVIDERS))}", source=source, field=field)


def _model(cls: type[_M], raw: Any, source: str, where: str) -> _M:
    if not isinstance(raw, Mapping):
        raise ConfigError("must be a table", source=source, field=where)
    return validate_config(cls, raw, source=source, prefix=where)


def _table(data: Mapping[str, Any], key: str, source: str) -> Mapping[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, Mapping):
        raise ConfigError("must be a table", source=source, field=key)
    return value


def _list(data: Mapping[str, Any], key: str, source: str) -> list[Mapping[str, Any]]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
        raise ConfigError(f"must be an array of tables ([[{key}]])", source=source, field=key)
    return value
