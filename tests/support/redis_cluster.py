"""A real three-master Redis Cluster on loopback ports, for the cluster store tests.

Three `redis-server --cluster-enabled yes` processes (each with its own config file and
append-only file in a temporary folder, fsynced on every write so a restarted master comes back
with what it acknowledged), joined by `redis-cli --cluster create`. Without redis-server or
redis-cli on PATH (Debian packages `redis-server`, `redis-tools`) the tests skip, unless
`REQUIRE_REDIS=1`, when they fail.
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


class RedisCluster:
    """The cluster's processes; `restart(i)` stops master `i` and starts it again."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.ports: list[int] = []
        self.bus_ports: list[int] = []  # given explicitly: the default, port + 10000, may not exist
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.ports[0]}"

    def start(self) -> None:
        binary, cli = _binary("redis-server"), _binary("redis-cli")
        for i in range(3):
            for _ in range(5):  # a port may be taken between free_port() and the bind
                self.ports[i:], self.bus_ports[i:] = [free_port()], [free_port()]
                self.procs[i:] = [self._spawn(binary, i)]
                if _wait_ping(cli, self.ports[i], self.procs[i]):
                    break
                stop(self.procs[i])
            else:
                raise RuntimeError("redis-server did not start in cluster mode")
        nodes = [f"127.0.0.1:{port}" for port in self.ports]
        subprocess.run([cli, "--cluster", "create", *nodes, "--cluster-replicas", "0",
                        "--cluster-yes"], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=60)
        self.wait_ok()

    def _spawn(self, binary: str, i: int) -> subprocess.Popen[bytes]:
        folder = self.workdir / f"node{i}"
        folder.mkdir(exist_ok=True)
        return subprocess.Popen(
            [binary, "--port", str(self.ports[i]), "--bind", "127.0.0.1", "--dir", str(folder),
             "--cluster-enabled", "yes", "--cluster-port", str(self.bus_ports[i]),
             "--cluster-config-file", str(folder / "nodes.conf"),
             "--cluster-node-timeout", "1000", "--save", "", "--appendonly", "yes",
             "--appendfsync", "always"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def kill_master(self, i: int) -> None:
        """SIGKILL master `i`: no shutdown save, only what its append-only file already holds."""
        self.procs[i].kill()
        self.procs[i].wait()

    def master_of(self, port: int) -> int:
        return self.ports.index(port)

    def start_master(self, i: int) -> None:
        self.procs[i] = self._spawn(_binary("redis-server"), i)
        if not _wait_ping(_binary("redis-cli"), self.ports[i], self.procs[i]):
            raise RuntimeError(f"cluster master {i} did not start again")
        self.wait_ok()

    def wait_ok(self, timeout_s: float = 30.0) -> None:
        """Until every node reports `cluster_state:ok` (all slots served)."""
        cli, deadline = _binary("redis-cli"), time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all("cluster_state:ok" in _cli(cli, port, "cluster", "info")
                   for port in self.ports):
                return
            time.sleep(0.1)
        raise RuntimeError("the Redis Cluster did not reach cluster_state:ok")

    def close(self) -> None:
        for proc in self.procs:
            stop(proc)


def backend_url(kind: str, request: pytest.FixtureRequest) -> str:
    """The address of the Redis server (`redis`) or cluster (`cluster`) a test's store uses,
    from the session fixtures `redis_url` and `redis_cluster`."""
    if kind == "cluster":
        return str(request.getfixturevalue("redis_cluster").url)
    return str(request.getfixturevalue("redis_url"))


def fresh_backend(kind: str, request: pytest.FixtureRequest) -> str:
    """`backend_url`, emptied first (every master of a cluster)."""
    import redis
    import redis.cluster

    url = backend_url(kind, request)
    if kind == "cluster":
        with redis.cluster.RedisCluster.from_url(url.replace("+cluster", "", 1)) as cluster:
            cluster.flushall(target_nodes=redis.cluster.RedisCluster.PRIMARIES)
    else:
        with redis.Redis.from_url(url) as client:
            client.flushall()
    return url


def start_cluster(workdir: Path) -> RedisCluster:
    cluster = RedisCluster(workdir)
    try:
        cluster.start()
    except BaseException:
        cluster.close()
        raise
    return cluster


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        message = f"{name} is not installed (apt-get install redis-server)"
        if os.environ.get("REQUIRE_REDIS") == "1":
            pytest.fail(message + ", and REQUIRE_REDIS=1")
        pytest.skip(message)
    return found


def _cli(cli: str, port: int, *args: str) -> str:
    done = subprocess.run([cli, "-h", "127.0.0.1", "-p", str(port), *args],
                          check=False, capture_output=True, text=True, timeout=10)
    return done.stdout


def _wait_ping(cli: str, port: int, proc: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + 10
    while proc.poll() is None and time.monotonic() < deadline:
        if "PONG" in _cli(cli, port, "ping"):
            return True
        time.sleep(0.05)
    return False
