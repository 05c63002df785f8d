"""AsyncRouter accepts any store with the async methods, however it provides them (on every
Python: since 3.12 a Protocol isinstance check no longer sees methods from __getattr__)."""

from __future__ import annotations

from typing import Any

import pytest

from starcoder_router import AsyncRouter, ConfigError, MemoryStore


class Proxy:
    """A wrapper that forwards every attribute, as instrumentation or a mock would."""

    def __init__(self, inner: Any):
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


async def test_a_proxy_store_is_accepted() -> None:
    router = AsyncRouter(store=Proxy(MemoryStore()), env={})  # type: ignore[arg-type]
    await router.aclose()


def test_a_store_without_async_methods_is_refused_by_name() -> None:
    class SyncOnly:
        def reserve(self, *args: Any) -> None: ...

    with pytest.raises(ConfigError, match=r"SyncOnly has no async methods \(areserve, asettle"):
        AsyncRouter(store=SyncOnly(), env={})  # type: ignore[arg-type]
