"""A Redis server that accepts connections and never answers: every Redis client we make gives
up within its timeout (`[store] timeout_s`) with our `StoreError`, and the gateway answers."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

pytest.importorskip("redis")

from starcoder_router import StoreError
from starcoder_router._stores import open_store
from starcoder_router._stores.base import BudgetKey

TIMEOUT_S = 0.3
# A call may wait out its connect and its reply (two timeouts); a loaded machine adds to that. A
# hang would never end: ten timeouts tell the two apart without racing the scheduler.
IN_TIME_S = TIMEOUT_S * 10
KEYS = [BudgetKey("global", "global/day|2026-12-07", 10**9, None, None)]


@pytest.fixture
def hung_redis() -> Iterator[str]:
    """A TCP listener on 127.0.0.1 that accepts and reads, and never writes a byte."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    held: list[socket.socket] = []
    closing = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not closing.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"redis://127.0.0.1:{server.getsockname()[1]}/0"
    closing.set()
    thread.join(5)
    for conn in held:
        conn.close()
    server.close()


def test_a_sync_call_to_a_hung_server_raises_store_error_in_time(hung_redis: str) -> None:
    store = open_store("redis", url=hung_redis, timeout_s=TIMEOUT_S)
    try:
        for call in (lambda: store.reserve(KEYS, 1000, 60), lambda: store.status(KEYS),
                     lambda: store.spent(KEYS[0].key)):
            began = time.monotonic()
            with pytest.raises(StoreError, match="Timeout"):
                call()
            assert time.monotonic() - began < IN_TIME_S
    finally:
        store.close()  # type: ignore[attr-defined]


async def test_an_async_call_to_a_hung_server_raises_store_error_in_time(
        hung_redis: str) -> None:
    store = open_store("redis", url=hung_redis, timeout_s=TIMEOUT_S)
    try:
        for call in (lambda: store.areserve(KEYS, 1000, 60),  # type: ignore[attr-defined]
                     lambda: store.astatus(KEYS)):  # type: ignore[attr-defined]
            began = time.monotonic()
            with pytest.raises(StoreError, match="Timeout"):
                await call()
            assert time.monotonic() - began < IN_TIME_S
    finally:
        await store.aclose()  # type: ignore[attr-defined]


def test_the_timeout_comes_from_the_store_section(hung_redis: str) -> None:
    from starcoder_router import ConfigError
    from starcoder_router._config import StoreSettings
    from starcoder_router._stores import open_configured

    assert StoreSettings(kind="redis", url=hung_redis).timeout_s == 2.0
    with pytest.raises(ConfigError, match="greater than 0"):
        StoreSettings(kind="redis", url=hung_redis, timeout_s=0)
    store = open_configured(StoreSettings(kind="redis", url=hung_redis, timeout_s=TIMEOUT_S))
    try:
        began = time.monotonic()
        with pytest.raises(StoreError):
            store.reserve(KEYS, 1000, 60)
        assert time.monotonic() - began < IN_TIME_S
    finally:
        store.close()  # type: ignore[attr-defined]
