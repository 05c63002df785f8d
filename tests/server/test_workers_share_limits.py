"""The workers of one `starcoder-router serve --workers 2` without Redis share tenant rate limits
and deployment health through the SQLite spend file in the state directory: a limit of N
requests a minute admits N in all, not N per worker, and a circuit one worker opens keeps the
other off that deployment. The limiter's verdicts are checked directly on two limiters over one
file (two processes' view of it) as well."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from upstream import Reply  # loaded by conftest.py

from starcoder_router._server.local_share import SQLiteRateLimiter, SQLiteSharedHealth
from starcoder_router._server.problems import GatewayError
from starcoder_router._server.settings import TenantSettings
from starcoder_router._server.tenants import hash_key
from support.ports import free_port

KEY = "sk-acme"
AUTH = {"Authorization": f"Bearer {KEY}"}


def _config(path: Path, upstream_url: str, *, requests_per_minute: int | None = None) -> Path:
    lines = ["[policy]", 'allow_providers = ["openai-compatible"]',
             "[health]", "failure_threshold = 1", "cooldown_s = 30",
             "[retry]", "max_retries = 0",
             "[server]", "health_sync_s = 0.1"]
    if requests_per_minute is not None:
        lines += ["[[server.tenants]]", 'name = "acme"', f'key_sha256 = "{hash_key(KEY)}"',
                  f"requests_per_minute = {requests_per_minute}"]
    lines += ["[[deployments]]", 'name = "mock/starcoder2-3b"', 'provider = "openai-compatible"',
              'variant = "starcoder2-3b"', 'model = "mock-starcoder2-3b"',
              f'base_url = "{upstream_url}/v1"', "context_window = 2048",
              "input_usd_per_mtok = 100", "output_usd_per_mtok = 100"]
    path.write_text("\n".join(lines) + "\n")
    return path


class Workers:
    """`serve --workers 2` with its own state directory, stopped by SIGTERM."""

    def __init__(self, config: Path, tmp_path: Path):
        self.url = f"http://127.0.0.1:{free_port()}"
        self._log = (tmp_path / "workers.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "starcoder_router._cli", "serve", "--config", str(config),
             "--port", self.url.rsplit(":", 1)[1], "--workers", "2",
             "--state-dir", str(tmp_path / "state")],
            stdout=self._log, stderr=subprocess.STDOUT,
            env={k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    time.sleep(0.5)  # the second worker starts a little later
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        self.stop()
        pytest.fail(f"the gateway did not start:\n{(tmp_path / 'workers.log').read_text()}")

    def post(self, **headers: str) -> httpx.Response:
        # A new connection each time, so the kernel spreads them over both workers.
        body = {"model": "starcoder2", "prompt": "x", "max_tokens": 4}
        return httpx.post(self.url + "/v1/completions", json=body, timeout=20,
                          headers=headers)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return int(self.proc.returncode)


@pytest.mark.integration
def test_two_workers_admit_a_tenants_requests_per_minute_once(
        tmp_path: Path, upstream: Any, upstream_url: str) -> None:
    gw = Workers(_config(tmp_path / "router.toml", upstream_url, requests_per_minute=5),
                 tmp_path)
    try:
        for _ in range(2):  # a minute boundary inside the burst restarts the count: once more
            codes = [gw.post(**AUTH).status_code for _ in range(24)]
            if codes.count(200) == 5:
                break
    finally:
        assert gw.stop() == 0
    # 24 connections spread over 2 workers: separate counters would have let up to 10 in.
    assert codes[:5] == [200] * 5 and set(codes[5:]) == {429}


@pytest.mark.integration
def test_a_cooldown_one_worker_sees_applies_in_the_other(
        tmp_path: Path, upstream: Any, upstream_url: str) -> None:
    gw = Workers(_config(tmp_path / "router.toml", upstream_url), tmp_path)
    try:
        upstream.script(Reply(status=500))
        assert gw.post().status_code >= 500  # one worker's circuit opens (threshold 1)
        time.sleep(1.5)  # many of the other worker's looks at the table (every 0.1 s)
        codes = [gw.post().status_code for _ in range(12)]
    finally:
        assert gw.stop() == 0
    # Neither worker calls the deployment again: the other one would have got a 200.
    assert set(codes) == {503}
    assert len(upstream.bodies) == 1


def _tenant(**limits: int) -> TenantSettings:
    return TenantSettings(name="acme", key_sha256=hash_key(KEY), **limits)


def test_two_limiters_on_one_file_share_requests_and_tokens(tmp_path: Path) -> None:
    async def scenario() -> None:
        path = tmp_path / "spend.db"
        a, b = SQLiteRateLimiter(path), SQLiteRateLimiter(path)
        tenant = _tenant(requests_per_minute=3, tokens_per_minute=100)
        now = 60.0 * 1000 + 1
        try:
            hold = await a.admit(tenant, now, 60)
            assert hold is not None and hold.reserved == 60
            with pytest.raises(GatewayError) as refused:  # 60 + 60 > 100: held in a, seen in b
                await b.admit(tenant, now, 60)
            assert refused.value.problem.status == 429
            hold.used = 10
            await a.settle(hold)  # gives back 50
            assert hold.settled
            again = await b.admit(tenant, now, 60)  # 10 + 60 fits now
            assert again is not None
            with pytest.raises(GatewayError):  # the 4th request of the minute, tokens aside
                await a.admit(tenant, now, 0)
            # the next minute starts afresh; a settle for the old one changes nothing
            assert await b.admit(tenant, now + 60, 100) is not None
            again.used = 0
            await b.settle(again)
            with pytest.raises(GatewayError):
                await a.admit(tenant, now + 60, 1)
        finally:
            await a.aclose()
            await b.aclose()

    asyncio.run(scenario())


def test_a_tenant_without_limits_touches_no_file(tmp_path: Path) -> None:
    async def scenario() -> None:
        limiter = SQLiteRateLimiter(tmp_path / "spend.db")
        try:
            assert await limiter.admit(_tenant(), 1.0, 500) is None
        finally:
            await limiter.aclose()

    asyncio.run(scenario())


def test_shared_health_reaches_the_other_reader_and_not_its_author(tmp_path: Path) -> None:
    async def scenario() -> None:
        path = tmp_path / "spend.db"
        a = SQLiteSharedHealth(path, poll_s=0.02)
        b = SQLiteSharedHealth(path, poll_s=0.02)
        got_a: list[tuple[str, float, str]] = []
        got_b: list[tuple[str, float, str]] = []
        await a.start(lambda *x: got_a.append(x))
        await b.start(lambda *x: got_b.append(x))
        until = time.time() + 30
        try:
            a.publish("mock/x", until, "http 500")
            a.publish("mock/gone", time.time() - 1, "expired")  # stale: nobody applies it
            for _ in range(200):
                if got_b:
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.1)
            assert got_b == [("mock/x", until, "http 500")]
            assert got_a == []
            # a reader that starts later finds what is still open
            c = SQLiteSharedHealth(path, poll_s=0.02)
            got_c: list[tuple[str, float, str]] = []
            await c.start(lambda *x: got_c.append(x))
            await c.aclose()
            assert got_c == [("mock/x", until, "http 500")]
        finally:
            await a.aclose()
            await b.aclose()

    asyncio.run(scenario())


_OPS = st.lists(st.one_of(
    st.tuples(st.just("admit"), st.integers(0, 130), st.integers(0, 90)),  # seconds, tokens
    st.tuples(st.just("settle"), st.integers(0, 20), st.integers(0, 90)),  # which hold, used
), max_size=25)


@hyp_settings(max_examples=25, deadline=None)
@given(ops=_OPS, rpm=st.one_of(st.none(), st.integers(1, 6)),
       tpm=st.one_of(st.none(), st.integers(1, 200)))
def test_the_shared_limiter_decides_as_the_in_process_one(
        ops: list[tuple[str, int, int]], rpm: int | None, tpm: int | None) -> None:
    """Any sequence of admissions (moving through minutes) and settlements gets the same
    verdicts and holds from the SQLite limiter as from `MemoryRateLimiter`."""
    import tempfile

    from starcoder_router._server.tenants import MemoryRateLimiter

    tenant = TenantSettings(name="t", key_sha256=hash_key(KEY), requests_per_minute=rpm,
                            tokens_per_minute=tpm)

    async def run(limiter: Any) -> list[Any]:
        seen: list[Any] = []
        holds: list[Any] = []
        now = 6_000.0
        for op, a, b in ops:
            if op == "admit":
                now += a
                try:
                    hold = await limiter.admit(tenant, now, b)
                except GatewayError as exc:
                    seen.append(exc.problem.detail if hasattr(exc.problem, "detail")
                                else str(exc))
                    continue
                seen.append(None if hold is None else hold.reserved)
                if hold is not None:
                    holds.append(hold)
            elif holds:
                hold = holds[a % len(holds)]
                hold.used = b
                await limiter.settle(hold)
        await limiter.aclose()
        return seen

    with tempfile.TemporaryDirectory() as tmp:
        shared = asyncio.run(run(SQLiteRateLimiter(Path(tmp) / "spend.db")))
    assert shared == asyncio.run(run(MemoryRateLimiter()))
