"""Fixtures for the gateway tests: a real gateway on 127.0.0.1 in front of a real loopback
upstream, both served by aiohttp on one background event loop, so that the official clients
(openai, ollama, huggingface_hub) call them from the test thread over real sockets."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import re
import sys
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import web

from starcoder_router import Catalog, Deployment
from support.redis_cluster import RedisCluster, fresh_backend, start_cluster

HERE = Path(__file__).resolve().parent
T = TypeVar("T")


def _load(name: str) -> Any:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


upstream_mod = _load("upstream")
Reply = upstream_mod.Reply

# USD per million tokens of the mock deployments: small but not zero, so costs are visible.
PRICES = {"starcoder2-3b": (0.1, 0.2), "starcoder2-7b": (0.2, 0.4),
          "starcoder2-15b-instruct": (0.5, 1.0)}


class LoopThread:
    """An event loop on a daemon thread; `run(coro)` runs a coroutine there and waits."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


async def start_site(app: web.Application, port: int = 0,
                     shutdown_timeout: float = 60.0) -> tuple[web.AppRunner, str]:
    from starcoder_router._server.app import RUNNER_OPTIONS

    runner = web.AppRunner(app, shutdown_timeout=shutdown_timeout, **RUNNER_OPTIONS)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    host, bound = runner.addresses[0][:2]
    return runner, f"http://{host}:{bound}"


# What must never reach a log: bearer keys and provider keys (every key the gateway tests use
# starts with "sk-"), an Authorization header's value, SHA-256 digests (a key's hash is as good
# as a tenant name to an attacker who has the config), and the canaries the adversarial tests
# put in prompts and keys.
# A bearer value is any token but the placeholder the 401 messages show ("Bearer <key>").
SECRET = re.compile(r"sk-[\w-]+|Bearer\s+[^\s<]|\b[0-9a-f]{64}\b|CANARY", re.IGNORECASE)


class _SecretScan(logging.Handler):
    """Keeps every record, at any level and from any logger, that shows a secret (while a
    gateway test runs: other folders' tests keep their own logging)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.active = False
        self.leaks: list[str] = []
        self._fmt = logging.Formatter()

    def emit(self, record: logging.LogRecord) -> None:
        if not self.active:
            return
        try:
            text = record.getMessage()
        except Exception:  # a record that cannot format shows nothing
            text = str(record.msg)
        if record.exc_info:
            text += self._fmt.formatException(record.exc_info)
        if SECRET.search(text):
            self.leaks.append(f"{record.name} {record.levelname}: {text[:500]!r}")


_LIBRARIES = ("aiohttp.server", "aiohttp.access", "aiohttp.web", "aiohttp.internal",
              "aiohttp.client", "asyncio", "httpx", "httpcore", "openai", "redis")


@pytest.fixture(scope="session")
def no_secret_in_any_log() -> Iterator[_SecretScan]:
    """Every log record of the gateway tests, DEBUG up, every library's logger included, is
    scanned as it is made; the session fails at the end if any showed a key or a canary."""
    scan = _SecretScan()
    logging.getLogger().addHandler(scan)
    try:
        yield scan
    finally:
        logging.getLogger().removeHandler(scan)
    assert not scan.leaks, "secrets in the logs:\n" + "\n".join(scan.leaks[:20])


@pytest.fixture(autouse=True)
def state_dir(tmp_path_factory: pytest.TempPathFactory,
               monkeypatch: pytest.MonkeyPatch) -> Path:
    """`serve` without a `[store]` keeps its spend database in the state directory: every
    gateway these tests start (subprocesses inherit the environment) writes into a temporary
    one, never the user's home."""
    state = tmp_path_factory.mktemp("state") / "starcoder-router"
    monkeypatch.setenv("STARCODER_ROUTER_STATE_DIR", str(state))
    return state


@pytest.fixture(autouse=True)
def _logs_at_debug(no_secret_in_any_log: _SecretScan) -> Iterator[None]:
    """Each gateway test runs with every logger at DEBUG, under the scan."""
    loggers = [logging.getLogger(), *(logging.getLogger(n) for n in _LIBRARIES)]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.DEBUG)
    no_secret_in_any_log.active = True
    try:
        yield
    finally:
        no_secret_in_any_log.active = False
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A real three-master Redis Cluster, started on first use."""
    cluster = start_cluster(tmp_path_factory.mktemp("redis-cluster"))
    yield cluster
    cluster.close()


@pytest.fixture(params=["redis", "cluster"])
def shared_redis(request: pytest.FixtureRequest) -> str:
    """An empty Redis to share between gateways: the test module's `redis_url` server, or the
    cluster (as a `redis+cluster://` URL)."""
    return fresh_backend(str(request.param), request)


@pytest.fixture(scope="session")
def loop_thread() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.stop()


@pytest.fixture(scope="session")
def _upstream_site(loop_thread: LoopThread) -> Iterator[tuple[Any, str]]:
    up = upstream_mod.Upstream()
    runner, url = loop_thread.run(start_site(up.app()))
    yield up, url
    loop_thread.run(runner.cleanup())


@pytest.fixture
def upstream(_upstream_site: tuple[Any, str]) -> Any:
    up, _ = _upstream_site
    up.reset()
    return up


@pytest.fixture
def upstream_url(_upstream_site: tuple[Any, str]) -> str:
    return _upstream_site[1]


def mock_catalog(base_url: str, variants: tuple[str, ...] = tuple(PRICES)) -> Catalog:
    """The packaged variants, with only mock deployments that point at the upstream."""
    deployments = []
    for variant in variants:
        caps = {"chat", "streaming", "structured_output"} if "instruct" in variant else {
            "completion", "fim", "streaming"}
        inp, out = PRICES[variant]
        deployments.append(Deployment(
            name=f"mock/{variant}", provider="openai-compatible", variant=variant,
            model=f"mock-{variant}", context_window=2048, base_url=base_url + "/v1",
            input_usd_per_mtok=inp, output_usd_per_mtok=out, capabilities=frozenset(caps)))
    return Catalog(variants=Catalog.default().variants, deployments=tuple(deployments))


@pytest.fixture
def catalog_of(upstream_url: str) -> Callable[..., Catalog]:
    """`catalog_of(*variants)`: the mock catalog with deployments of those variants only (all
    of them when none is named)."""
    def make(*variants: str) -> Catalog:
        return mock_catalog(upstream_url, variants or tuple(PRICES))
    return make


@pytest.fixture
def serve(loop_thread: LoopThread, upstream_url: str) -> Iterator[Callable[..., Any]]:
    """`serve(**gateway_kwargs)` starts a gateway (default: the mock catalog, in-memory
    store) and returns a handle with `.url` and `.gateway`; all are stopped after the test."""
    from starcoder_router._server.app import create_app, listen
    from starcoder_router._server.gateway import Gateway

    started: list[Running] = []

    def start(**kwargs: Any) -> Running:
        kwargs.setdefault("catalog", mock_catalog(upstream_url))
        kwargs.setdefault("env", {})

        async def boot() -> Running:
            gateway = Gateway(**kwargs)
            runner = await listen(create_app(gateway), gateway.settings, host="127.0.0.1",
                                  port=0)
            host, bound = runner.addresses[0][:2]
            return Running(f"http://{host}:{bound}", gateway, runner)

        handle = loop_thread.run(boot())
        started.append(handle)
        return handle

    yield start
    for handle in started:
        loop_thread.run(handle.stop())


class Running:
    """A gateway being served: `url`, `gateway`, and `await stop()` (a graceful shutdown)."""

    def __init__(self, url: str, gateway: Any, runner: web.AppRunner):
        self.url = url
        self.gateway = gateway
        self._runner: web.AppRunner | None = runner

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
