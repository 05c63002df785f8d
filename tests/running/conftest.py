"""Fixtures for router behaviour tests (helpers live in support/hosted_replies.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import respx

from starcoder_router import (
    AsyncRouter,
    Catalog,
    FakeClock,
    MemoryStore,
    RetryPolicy,
    Router,
    TokenizerCounter,
)
from support.hosted_replies import DI, FW, KEYS, Wire
from support.router_driver import Driver, Make


@pytest.fixture
def wire() -> Iterator[Wire]:
    w = Wire()
    with respx.mock(assert_all_called=False) as mock:
        mock.post(FW).mock(side_effect=w.handle)
        mock.post(DI).mock(side_effect=w.handle)
        yield w


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def no_jitter() -> RetryPolicy:
    return RetryPolicy(max_retries=2, jitter_s=0, backoff_initial_s=0.5, backoff_max_s=8)


@pytest.fixture
def catalog() -> Catalog:
    return Catalog.default()


@pytest.fixture
def make(drive: Driver, clock: FakeClock, store: MemoryStore, no_jitter: RetryPolicy,
         exact_counter: TokenizerCounter) -> Make:
    """`make(**kw)`: a router in the test's mode over the default catalog's hosted deployments,
    with the test's clock, store, retry policy and the real tokenizer unless `kw` says other.
    A test module may define its own `make`, which then wins."""

    def build(**kw: Any) -> Router | AsyncRouter:
        options = {"env": KEYS, "clock": clock, "store": store, "retry": no_jitter,
                   "tokenizer": exact_counter} | kw
        return drive.new_router(**options)

    return build
