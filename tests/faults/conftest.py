"""Fixtures for the fault suite: our own misbehaving server (fault_server.py), and routers
built over three of its deployments."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fault_server import FaultServer


@pytest.fixture
def faulty() -> Iterator[FaultServer]:
    """A server that answers well until a test forces or schedules faults."""
    with FaultServer(seed=10) as server:
        yield server
