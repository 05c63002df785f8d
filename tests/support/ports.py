"""Loopback ports for tests that start servers or need a connection to be refused."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A loopback port that was free a moment ago; nothing listens on it, so a connection to it
    is refused until someone binds it (servers that start on it should retry on a clash)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
