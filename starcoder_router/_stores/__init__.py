"""Where spend is kept: budget keys and periods (`base`, `periods`), the stores (`memory`,
`sqlite`, `redis`, each a `SpendStore` with async twins), and the spend report (`report`).

`open_store` is the one place that turns a store's name and address into a store.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Literal

from .._errors import ConfigError

if TYPE_CHECKING:
    from .._config import StoreSettings
    from .base import SpendStore

__all__ = ["DEFAULT_REDIS_TIMEOUT_S", "open_configured", "open_store"]

# How long a Redis connect or reply may take before the call fails with `StoreError`: a hung
# server must not hold a request (or the gateway's event loop) without limit.
DEFAULT_REDIS_TIMEOUT_S = 2.0


def open_configured(settings: StoreSettings) -> SpendStore:
    """The store a config file's `[store]` table describes."""
    return open_store(settings.kind, path=settings.path, url=settings.url,
                      cluster=settings.cluster, on_store_error=settings.on_store_error,
                      retention_days=settings.retention_days, timeout_s=settings.timeout_s)


def open_store(kind: Literal["memory", "sqlite", "redis"] | str = "memory", *,
               path: str | None = None, url: str | None = None, prefix: str = "scr:",
               must_exist: bool = False, cluster: bool = False,
               on_store_error: Literal["reject", "allow"] = "reject",
               retention_days: float | None = None,
               timeout_s: float = DEFAULT_REDIS_TIMEOUT_S) -> SpendStore:
    """The store named by `kind`: `memory`, `sqlite` (needs `path`) or `redis` (needs `url`;
    a Redis Cluster with `cluster=True` or a `redis+cluster://host:port` URL).

    `must_exist` refuses a SQLite path with no database yet (a report from a mistyped path
    would otherwise print nothing). `on_store_error="allow"` keeps admitting requests while the
    store is down, against 10% of each budget (see `outage.OutageTolerantStore`); "reject"
    refuses them with `StoreError`. `retention_days` keeps raw ledger rows that long (SQLite
    and Redis; hourly roll-ups stay). `timeout_s` bounds each Redis connect and reply.
    Backends are imported only when chosen.
    """
    store = _open(kind, path=path, url=url, prefix=prefix, must_exist=must_exist,
                  cluster=cluster, retention_days=retention_days, timeout_s=timeout_s)
    if on_store_error == "reject":
        return store
    if on_store_error != "allow":
        raise ConfigError(f"unknown on_store_error {on_store_error!r}; choose reject or allow",
                          field="on_store_error")
    from .outage import OutageTolerantStore

    return OutageTolerantStore(store)


def _open(kind: str, *, path: str | None, url: str | None, prefix: str, must_exist: bool,
          cluster: bool, retention_days: float | None, timeout_s: float) -> SpendStore:
    if kind == "memory":
        from .memory import MemoryStore

        return MemoryStore()
    if kind == "sqlite":
        if not path:
            raise ConfigError("a sqlite store needs a path", field="path")
        if must_exist and not os.path.exists(path):
            raise ConfigError(f"no spend database at {path!r}", field="path")
        import sqlite3

        from .sqlite import SQLiteStore

        try:
            return SQLiteStore(path, retention_days=retention_days)
        except (sqlite3.Error, ValueError) as exc:  # ValueError: a NUL or surrogate in the path
            raise ConfigError(f"cannot open a SQLite spend database at "
                              f"{os.path.abspath(path)!r}: {exc}", field="path") from exc
    if kind == "redis":
        if not url:
            raise ConfigError("a redis store needs a url", field="url")
        from .redis import RedisStore

        return RedisStore(url, prefix=prefix, cluster=cluster, retention_days=retention_days,
                          timeout_s=timeout_s)
    raise ConfigError(f"unknown store {kind!r}; choose memory, sqlite or redis", field="kind")
