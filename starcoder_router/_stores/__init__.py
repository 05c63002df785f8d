"""Where spend is kept: budget keys and periods (`base`, `periods`), the stores (`memory`,
`sqlite`, `redis`, each a `SpendStore` with async twins), and the spend report (`report`).

`open_store` is the one place that turns a store's name and address into a store.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Literal

from .._errors import ConfigError

if TYPE_CHECKING:
    from .base import SpendStore

__all__ = ["open_store"]


def open_store(kind: Literal["memory", "sqlite", "redis"] | str = "memory", *,
               path: str | None = None, url: str | None = None, prefix: str = "scr:",
               must_exist: bool = False) -> SpendStore:
    """The store named by `kind`: `memory`, `sqlite` (needs `path`) or `redis` (needs `url`).

    `must_exist` refuses a SQLite path with no database yet (a report from a mistyped path
    would otherwise print nothing). Backends are imported only when chosen.
    """
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
            return SQLiteStore(path)
        except (sqlite3.Error, ValueError) as exc:  # ValueError: a NUL or surrogate in the path
            raise ConfigError(f"cannot open a SQLite spend database at "
                              f"{os.path.abspath(path)!r}: {exc}", field="path") from exc
    if kind == "redis":
        if not url:
            raise ConfigError("a redis store needs a url", field="url")
        from .redis import RedisStore

        return RedisStore(url, prefix=prefix)
    raise ConfigError(f"unknown store {kind!r}; choose memory, sqlite or redis", field="kind")
