"""Fixtures for the spend-store tests: a real redis-server and a real three-master Redis
Cluster, and every store behind one API.

The Redis tests need `redis-server` and `redis-cli` on PATH (Debian package `redis-server`).
Without them they are skipped, unless `REQUIRE_REDIS=1` (as CI sets), when they fail instead.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from starcoder_router._stores.memory import MemoryStore
from starcoder_router._stores.redis import RedisStore
from starcoder_router._stores.sqlite import SQLiteStore
from support.processes import stop
from support.redis_cluster import RedisCluster, backend_url, start_cluster
from support.redis_server import start_redis

# "cluster" is the Redis store on a Redis Cluster.
STORE_KINDS = ("memory", "sqlite", "redis", "cluster")
Store = MemoryStore | SQLiteStore | RedisStore


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    proc, url = start_redis(tmp_path_factory.mktemp("redis"))
    yield url
    stop(proc)


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    cluster = start_cluster(tmp_path_factory.mktemp("redis-cluster"))
    yield cluster
    cluster.close()


@pytest.fixture(params=STORE_KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_store(kind: str, request: pytest.FixtureRequest,
               tmp_path: Path) -> Iterator[Callable[[], Store]]:
    """Opens stores of the kind under test; every store one test opens shares one backend.

    Each test gets its own SQLite file or Redis key prefix, so tests never see each other.
    `@pytest.mark.parametrize("kind", [...])` narrows a test to some kinds.
    """
    url = backend_url(kind, request) if kind in ("redis", "cluster") else ""
    prefix = f"test:{uuid.uuid4().hex[:12]}:"
    shared = MemoryStore()
    opened: list[Store] = []

    def make() -> Store:
        store: Store
        if kind == "memory":
            store = shared
        elif kind == "sqlite":
            store = SQLiteStore(tmp_path / "spend.db")
        else:
            store = RedisStore(url, prefix=prefix)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def shared_store(kind: str, make_store: Callable[[], Store], tmp_path: Path,
                 request: pytest.FixtureRequest) -> tuple[Store, tuple[str, str, str]]:
    """A store of the kind under test, and the spec with which `support.stores.open_store` opens
    the same backend in a child process (SQLite and Redis only: memory is not shared)."""
    store = make_store()  # creates the SQLite schema before any child opens the file
    if kind == "sqlite":
        return store, (kind, str(tmp_path / "spend.db"), "")
    assert isinstance(store, RedisStore), f"a {kind} store cannot be shared with other processes"
    return store, ("redis", backend_url(kind, request), store.prefix)


class Api:
    """One store seen through its sync or its async methods, always awaited.

    The contract tests are written once against this, so the sync methods and their `a`-prefixed
    twins are held to the same behaviour.
    """

    def __init__(self, store: Store, *, asynchronous: bool) -> None:
        self.store = store
        self.asynchronous = asynchronous

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if self.asynchronous:
            return getattr(self.store, "a" + name)
        method = getattr(self.store, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            return method(*args, **kwargs)

        return call


@pytest.fixture(params=["sync", "async"])
async def api(request: pytest.FixtureRequest,
              make_store: Callable[[], Store]) -> AsyncIterator[Api]:
    store = make_store()
    yield Api(store, asynchronous=request.param == "async")
    if request.param == "async":
        await store.aclose()
