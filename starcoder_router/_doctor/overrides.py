"""What `starcoder-router doctor --write` learned about each deployment, and the pure step that
applies it to a catalog.

The file is TOML, one table per deployment, each figure with the date it was measured::

    [deployments."fireworks/starcoder2-7b"]
    measured_at = 2026-12-07T16:59:00Z
    context_window = 4096           # the window the server enforced
    max_stop = 4                    # stop sequences it accepted
    special_stops = "fire"          # a `<file_sep>` stop ended the generation on the server
    ttft_s = 0.21                   # p50 time to the first token
    s_per_token = 0.012             # p50 time per further token

A router config names the file with `overrides = "path"`; without that key, a file called
`<config stem>.overrides.toml` beside the config is read when it exists. Routing then uses the
learned window and stop limit, the measured time to first token (`ttft_s`) and
`tokens_per_second` from the measured time per token: together the latency prior that ranks a
deployment until requests to it are observed. `special_stops` is kept for the record: stops the
server lets through are cut on our side whatever it does.
"""

from __future__ import annotations

import datetime as dt
import math
import os
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field

from .._errors import ConfigError
from .._routing.catalog import Catalog, Deployment
from .._validation import FrozenModel, read_toml, validate_config

__all__ = ["DeploymentOverride", "apply_overrides", "default_overrides_path", "dump_overrides",
           "read_overrides"]


class DeploymentOverride(FrozenModel):
    """Measured facts about one deployment; unset fields leave the catalog's claim alone."""

    measured_at: dt.datetime
    context_window: int | None = Field(default=None, gt=0)
    max_stop: int | None = Field(default=None, gt=0)
    special_stops: Literal["fire", "ignored"] | None = None
    ttft_s: float | None = Field(default=None, ge=0)
    s_per_token: float | None = Field(default=None, gt=0)


def default_overrides_path(config_path: str) -> str:
    """Where a config's overrides live unless it names a file: `router.overrides.toml` beside
    `router.toml`."""
    stem, _ = os.path.splitext(config_path)
    return stem + ".overrides.toml"


def read_overrides(path: str) -> dict[str, DeploymentOverride]:
    """The overrides in `path`, by deployment name. Errors name the file and the entry."""
    data = read_toml(path)
    unknown = sorted(set(data) - {"deployments"})
    if unknown:
        raise ConfigError("an overrides file holds only [deployments.\"NAME\"] tables",
                          source=path, field=unknown[0])
    tables = data.get("deployments", {})
    if not isinstance(tables, Mapping):
        raise ConfigError("must be a table of deployments", source=path, field="deployments")
    out = {}
    for name, raw in tables.items():
        if not isinstance(raw, Mapping):
            raise ConfigError("must be a table", source=path, field=f"deployments.{name}")
        out[name] = validate_config(DeploymentOverride, raw, source=path,
                                    prefix=f"deployments.{name}")
    return out


def apply_overrides(catalog: Catalog, overrides: Mapping[str, DeploymentOverride]) -> Catalog:
    """`catalog` with each measured figure in place of the claim. Overrides for deployments the
    catalog does not have are ignored: a config may drop a deployment after it was measured."""
    changed = []
    for dep in catalog.deployments:
        found = overrides.get(dep.name)
        if found is not None:
            changed.append(_applied(dep, found))
    return catalog.with_deployments(*changed) if changed else catalog


def _applied(dep: Deployment, o: DeploymentOverride) -> Deployment:
    update: dict[str, Any] = {}
    if o.context_window is not None:
        update["context_window"] = o.context_window
    if o.max_stop is not None:
        update["max_stop"] = o.max_stop
    if o.ttft_s is not None:
        update["ttft_s"] = o.ttft_s
    if o.s_per_token is not None:
        update["tokens_per_second"] = 1.0 / o.s_per_token
    return dep.model_copy(update=update) if update else dep


def dump_overrides(overrides: Mapping[str, DeploymentOverride]) -> str:
    """The TOML text of `overrides` (what `read_overrides` reads back)."""
    lines = ["# Written by `starcoder-router doctor --write`: what each deployment was measured",
             "# to do. Routing uses context_window, max_stop, ttft_s and s_per_token.", ""]
    for name in sorted(overrides):
        lines.append(f"[deployments.{_quote(name)}]")
        for key, value in overrides[name].model_dump(exclude_none=True).items():
            lines.append(f"{key} = {_value(value)}")
        lines.append("")
    return "\n".join(lines)


def _value(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, str):
        return _quote(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else "0.0"
    return str(value)


def _quote(text: str) -> str:
    escaped = "".join(c if c.isprintable() and c not in '"\\' else f"\\U{ord(c):08x}"
                      for c in text)
    return f'"{escaped}"'
