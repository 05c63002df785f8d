"""Fixtures for the provider tests (helpers live in support/provider_replies.py).

`drive` runs each test twice: through the sync `Router` and through
`AsyncRouter(transport="httpx")`, with a router per provider (`drive.router("vllm")`); `mock` is
respx, which intercepts both httpx clients, so every test sees the exact request on the wire.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import respx

from support.provider_replies import ProviderDriver
from support.router_driver import MODES, drive_fixture

drive = drive_fixture(*MODES, driver=ProviderDriver)


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:
        yield router
