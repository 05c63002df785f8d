"""A real redis-server on a free loopback port, for the store and gateway tests.

Without `redis-server` on PATH (Debian package `redis-server`) a test skips, unless
`REQUIRE_REDIS=1` (as CI sets), when it fails instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from support.ports import free_port
from support.processes import stop


def start_redis(workdir: Path, *, port: int | None = None,
                durable: bool = False) -> tuple[subprocess.Popen[bytes], str]:
    """Start redis-server on a free loopback port (or `port`, to start one again where it was);
    returns the process and its URL. `durable` fsyncs every write to an append-only file in
    `workdir`, so a server killed and started again keeps what it acknowledged."""
    binary = shutil.which("redis-server")
    if binary is None:
        message = "redis-server is not installed (apt-get install redis-server)"
        if os.environ.get("REQUIRE_REDIS") == "1":
            pytest.fail(message + ", and REQUIRE_REDIS=1")
        pytest.skip(message)
    import redis

    fixed = port
    persistence = ["--appendonly", "yes", "--appendfsync", "always"] if durable else [
        "--appendonly", "no"]
    for _ in range(5):  # the port may be taken between free_port() and the bind
        port = fixed or free_port()
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             *persistence, "--dir", str(workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        url = f"redis://127.0.0.1:{port}/0"
        client = redis.Redis.from_url(url)
        deadline = time.monotonic() + 10
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                if client.ping():
                    client.close()
                    return proc, url
            except redis.ConnectionError:
                time.sleep(0.05)
        client.close()
        stop(proc)
    pytest.fail("redis-server did not answer PING")
