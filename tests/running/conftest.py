"""Fixtures for router behaviour tests (helpers live in support/hosted_replies.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import respx

from starcoder_router import Catalog, FakeClock, MemoryStore, RetryPolicy
from support.hosted_replies import DI, FW, Wire


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
