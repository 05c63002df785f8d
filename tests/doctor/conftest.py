"""Doctor tests talk to loopback stand-ins only, and never read a real terminal.

A hosted deployment left at its real base URL would be skipped anyway (no key is in a test's
environment, see tests/conftest.py); this makes sure of it: any host other than loopback fails
to resolve, so no request can leave the machine whatever a test configures.
"""

from __future__ import annotations

import io
import socket
import sys
from typing import Any

import pytest

LOOPBACK = {"127.0.0.1", "::1", "localhost", b"127.0.0.1", b"::1", b"localhost"}


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    real = socket.getaddrinfo

    def guarded(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in LOOPBACK:
            raise socket.gaierror(f"doctor tests send only to loopback, not to {host!r}")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded)
    # `doctor` asks at a terminal before hosted probes; under `pytest -s` that would be the
    # developer's. Tests that mean a terminal say so (sys.stdin.isatty).
    monkeypatch.setattr(sys, "stdin", io.StringIO())
