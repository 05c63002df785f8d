"""Fixtures for the local-server adapter tests (helpers live in support/local_replies.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import respx


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    """respx on every httpx client; a request nobody mocked fails the test."""
    with respx.mock(assert_all_called=False) as router:
        yield router
