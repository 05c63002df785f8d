"""Several gateway processes (`starcoder-router serve`) on one real redis-server share budgets
(no overshoot) and deployment health (one instance's opened circuit stops the others within a
second); a stop signal lets an in-flight stream finish."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from upstream import Reply  # loaded by conftest.py

from support.ports import free_port
from support.processes import stop
from support.redis_server import start_redis

pytestmark = [pytest.mark.integration, pytest.mark.slow]



@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    proc, url = start_redis(tmp_path_factory.mktemp("redis"))
    yield url
    stop(proc)


@pytest.fixture
def fresh_redis(redis_url: str) -> str:
    import redis

    with redis.Redis.from_url(redis_url) as client:
        client.flushall()
    return redis_url


def write_config(path: Path, upstream_url: str, *, store: str, budget_usd: float | None = None,
                 variants: tuple[str, ...] = ("starcoder2-3b",)) -> Path:
    lines = ['[policy]', 'allow_providers = ["openai-compatible"]']
    if budget_usd is not None:
        lines += ["[[policy.budgets]]", f"limit_usd = {budget_usd}", 'period = "day"']
    lines += ["[health]", "failure_threshold = 1", "cooldown_s = 30",
              "[retry]", "max_retries = 0", store]
    for i, variant in enumerate(variants):
        price = 100 * (i + 1)  # the first variant is the cheapest, so it is tried first
        lines += ["[[deployments]]", f'name = "mock/{variant}"',
                  'provider = "openai-compatible"', f'variant = "{variant}"',
                  f'model = "mock-{variant}"', f'base_url = "{upstream_url}/v1"',
                  "context_window = 2048", f"input_usd_per_mtok = {price}",
                  f"output_usd_per_mtok = {price}"]
    path.write_text("\n".join(lines) + "\n")
    return path


class Instance:
    def __init__(self, config: Path, log: Path, *extra: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "starcoder_router._cli", "serve", "--config", str(config),
             "--port", str(self.port), *extra], stdout=self._log, stderr=subprocess.STDOUT,
            env={k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")})
        self.log_path = log
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        self.stop()
        pytest.fail(f"the gateway did not start:\n{log.read_text()[-3000:]}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return int(self.proc.returncode)


@pytest.fixture
def instances(tmp_path: Path) -> Iterator[Any]:
    started: list[Instance] = []

    def start(config: Path, n: int) -> list[Instance]:
        for _ in range(n):
            started.append(Instance(config, tmp_path / f"gateway-{len(started)}.log"))
        return started[-n:]

    yield start
    for inst in started:
        inst.stop()


def complete(url: str, **body: Any) -> httpx.Response:
    body = {"model": "starcoder2", "prompt": "x", "max_tokens": 10, **body}
    return httpx.post(url + "/v1/completions", json=body, timeout=20)


def test_two_instances_share_a_budget_without_overshoot(
        tmp_path: Path, fresh_redis: str, upstream: Any, upstream_url: str,
        instances: Any) -> None:
    from starcoder_router import RedisStore

    limit = 0.004
    config = write_config(tmp_path / "router.toml", upstream_url, budget_usd=limit,
                          store=f'[store]\nkind = "redis"\nurl = "{fresh_redis}"')
    a, b = instances(config, 2)
    upstream.script(*[Reply(delay_s=0.05)] * 40)
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda i: complete((a, b)[i % 2].url), range(40)))
    statuses = [r.status_code for r in results]
    assert set(statuses) == {200, 429}
    assert all(r.json()["error"]["code"] == "insufficient_quota"
               for r in results if r.status_code == 429)
    store = RedisStore(fresh_redis)
    try:
        spent = sum(e.cost_nano for e in store.ledger())
        # each answer: 1 prompt token + 4 output tokens at $100/M = $0.0005
        assert spent == statuses.count(200) * 500_000
        assert spent <= limit * 1e9  # no overshoot, across both processes
        assert spent >= (limit - 0.0011) * 1e9  # and the budget was used, not refused early
    finally:
        store.close()


def test_an_opened_circuit_reaches_the_other_instance_within_a_second(
        tmp_path: Path, shared_redis: str, upstream: Any, upstream_url: str,
        instances: Any) -> None:
    """Through one redis-server, and through a Redis Cluster (`cluster = true`)."""
    url = shared_redis.replace("+cluster", "", 1)
    cluster = "\ncluster = true" if url != shared_redis else ""
    config = write_config(tmp_path / "router.toml", upstream_url,
                          variants=("starcoder2-3b", "starcoder2-7b"),
                          store=f'[store]\nkind = "redis"\nurl = "{url}"{cluster}')
    a, b = instances(config, 2)
    assert complete(b.url).headers["x-starcoder-router-deployment"] == "mock/starcoder2-3b"
    upstream.fail_models.add("mock-starcoder2-3b")
    r = complete(a.url)  # a tries 3b, which fails: its circuit opens; it falls back to 7b
    assert (r.headers["x-starcoder-router-deployment"], r.headers[
        "x-starcoder-router-attempts"]) == ("mock/starcoder2-7b", "2")
    opened = time.monotonic()
    upstream.fail_models.clear()  # b must not even try 3b now: it would not see it fail
    time.sleep(1.0)
    tried = len(upstream.bodies)
    r = complete(b.url)
    assert time.monotonic() - opened < 2.0
    assert r.headers["x-starcoder-router-deployment"] == "mock/starcoder2-7b"
    assert r.headers["x-starcoder-router-attempts"] == "1"
    assert [body["model"] for body in upstream.bodies[tried:]] == ["mock-starcoder2-7b"]
    # an instance started now learns it from Redis
    (c,) = instances(config, 1)
    assert complete(c.url).headers["x-starcoder-router-deployment"] == "mock/starcoder2-7b"


def test_sigterm_lets_an_inflight_stream_finish(tmp_path: Path, upstream: Any,
                                                upstream_url: str, instances: Any) -> None:
    config = write_config(tmp_path / "router.toml", upstream_url, store="")
    (gw,) = instances(config, 1)
    upstream.script(Reply(text="one two three four five", chunk_delay_s=0.2))
    body = {"model": "starcoder2", "prompt": "x", "max_tokens": 8, "stream": True}
    lines: list[str] = []
    with httpx.stream("POST", gw.url + "/v1/completions", json=body, timeout=20) as r:
        it = r.iter_lines()
        lines.append(next(it))
        gw.proc.send_signal(signal.SIGTERM)
        lines.extend(it)
    assert "data: [DONE]" in lines
    text = "".join(json.loads(line[6:])["choices"][0]["text"]
                   for line in lines if line.startswith("data: {"))
    assert text == "one two three four five"
    assert gw.proc.wait(timeout=15) == 0  # a clean exit (a second signal would force it)


def test_workers_share_the_port_and_stop_together(tmp_path: Path, upstream: Any,
                                                  upstream_url: str) -> None:
    config = write_config(tmp_path / "router.toml", upstream_url, store="")
    gw = Instance(config, tmp_path / "workers.log", "--workers", "2")
    try:
        children = Path(f"/proc/{gw.proc.pid}/task/{gw.proc.pid}/children").read_text().split()
        # the spawned worker (multiprocessing's resource tracker, also a child, is not one)
        workers = [int(c) for c in children
                   if "spawn_main" in Path(f"/proc/{c}/cmdline").read_text()]
        assert len(workers) == 1
        assert all(complete(gw.url).status_code == 200 for _ in range(20))
    finally:
        assert gw.stop() == 0
    # the parent joins its workers before it exits
    assert not Path(f"/proc/{workers[0]}").exists()


def test_rate_limits_are_shared_through_redis(serve: Any, shared_redis: str) -> None:
    """Through one redis-server, and through a Redis Cluster."""
    from starcoder_router import RedisStore
    from starcoder_router._server.settings import ServerSettings, TenantSettings
    from starcoder_router._server.tenants import hash_key

    tenants = (TenantSettings(name="acme", key_sha256=hash_key("sk-acme"),
                              requests_per_minute=3),)
    settings = ServerSettings(tenants=tenants)
    a = serve(settings=settings, store=RedisStore(shared_redis), redis_url=shared_redis)
    b = serve(settings=settings, store=RedisStore(shared_redis), redis_url=shared_redis)
    auth = {"Authorization": "Bearer sk-acme"}
    body = {"model": "starcoder2", "prompt": "x", "max_tokens": 4}
    codes = [httpx.post(url + "/v1/completions", json=body, headers=auth, timeout=10).status_code
             for url in (a.url, b.url, a.url, b.url)]
    if codes != [200, 200, 200, 429]:
        # a minute boundary fell inside the burst: the counters restarted; once more
        codes = [httpx.post(url + "/v1/completions", json=body, headers=auth,
                            timeout=10).status_code for url in (a.url, b.url, a.url, b.url)]
    assert codes == [200, 200, 200, 429]


def _spent_in(state_dir: Path) -> int:
    from starcoder_router import SQLiteStore

    store = SQLiteStore(state_dir / "spend.db")
    try:
        return sum(e.cost_nano for e in store.ledger())
    finally:
        store.close()


def test_spend_survives_a_restart_without_a_store(tmp_path: Path, upstream: Any,
                                                  upstream_url: str, instances: Any,
                                                  state_dir: Path) -> None:
    # each answer: 1 prompt token + 4 output tokens at $100/M = $0.0005; the budget holds 8
    config = write_config(tmp_path / "router.toml", upstream_url, budget_usd=0.004, store="")
    (gw,) = instances(config, 1)
    assert [complete(gw.url).status_code for _ in range(5)] == [200] * 5
    assert gw.stop() == 0
    assert _spent_in(state_dir) == 5 * 500_000
    (again,) = instances(config, 1)
    codes = [complete(again.url).status_code for _ in range(8)]
    # what was spent before the restart still counts: 3 more at most, not 8
    assert 1 <= codes.count(200) <= 3 and codes[-1] == 429
    assert _spent_in(state_dir) <= 4_000_000


def test_two_workers_share_a_budget_through_the_default_file(
        tmp_path: Path, upstream: Any, upstream_url: str, state_dir: Path) -> None:
    limit = 0.004
    config = write_config(tmp_path / "router.toml", upstream_url, budget_usd=limit, store="")
    gw = Instance(config, tmp_path / "workers.log", "--workers", "2")
    try:
        upstream.script(*[Reply(delay_s=0.05)] * 40)
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            results = list(pool.map(lambda _: complete(gw.url), range(40)))
    finally:
        assert gw.stop() == 0
    statuses = [r.status_code for r in results]
    assert set(statuses) == {200, 429}
    spent = _spent_in(state_dir)
    assert spent == statuses.count(200) * 500_000
    assert spent <= limit * 1e9  # one budget for both workers: no overspend
    assert spent >= (limit - 0.0011) * 1e9
