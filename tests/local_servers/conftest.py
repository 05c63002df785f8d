"""Fixtures for the local-server adapter tests (helpers live in support/local_replies.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import respx

from starcoder_router import AsyncRouter, Deployment, Router
from support.local_replies import router_options
from support.router_driver import Driver, Make


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    """respx on every httpx client; a request nobody mocked fails the test."""
    with respx.mock(assert_all_called=False) as router:
        yield router


@pytest.fixture
def make(drive: Driver) -> Make:
    """`make(*deployments, env=..., counter=..., retries=...)`: a router over these
    deployments in the test's mode (see `router_options`)."""

    def build(*deps: Deployment, **options: Any) -> Router | AsyncRouter:
        return drive.new_router(**router_options(*deps, **options))

    return build
