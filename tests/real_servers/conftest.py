"""Fixtures that run a real llama.cpp ``llama-server`` on a tiny random StarCoder 2 model.

Every test in this directory is marked ``integration``. Without a ``llama-server`` binary the
tests skip; with ``REQUIRE_LLAMA_SERVER=1`` (CI) they fail instead, so CI cannot go green by
silently skipping them. The binary is ``$LLAMA_SERVER_BIN``, else ``llama-server`` on PATH, else
the cache of ``.ci/build-llama-server.sh`` (tests never start a build).

The real StarCoder 2 tokenizer comes from ``tokenizer_path`` in tests/conftest.py. Servers are
shared by the whole session; a failing test shows the tail of the log of each server it used.

Here ``drive`` has three modes: the sync `Router`, and `AsyncRouter` on each of its transports
(httpx and the default aiohttp), since a real server is where the transports differ.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any, NoReturn

import pytest

from starcoder_router import AsyncRouter, Deployment, Router, TokenizerCounter
from support import llama_server as _process
from support import make_tiny_starcoder2 as _models
from support.llama_deployments import router_kwargs
from support.router_driver import LOOPBACK_MODES, Driver, Make, drive_fixture

HERE = Path(__file__).resolve().parent
Server = _process.LlamaServer
StartServer = Callable[..., Server]


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get(_process.REQUIRE_ENV) == "1":
        pytest.fail(
            f"{reason}\n({_process.REQUIRE_ENV}=1, so this is an error, not a skip)", pytrace=False
        )
    pytest.skip(reason)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.integration)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed and isinstance(item, pytest.Function):
        for server in item.funcargs.values():
            if isinstance(server, _process.LlamaServer):
                report.sections.append(
                    (f"llama-server log ({server.base_url}, {server.log_path})", server.log_tail())
                )
    return report


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory, tokenizer_path: Path) -> Path:
    """A tiny random ``starcoder2`` GGUF with the real vocabulary."""
    out = tmp_path_factory.mktemp("models") / "tiny-starcoder2.gguf"
    _models.write_tiny_model(out, tokenizer_json=tokenizer_path)
    return out


@pytest.fixture(scope="session")
def tiny_gguf_constant(tmp_path_factory: pytest.TempPathFactory, tokenizer_path: Path) -> Path:
    """Like ``tiny_gguf``, but every generated token is ``" x"``, whatever the sampler."""
    out = tmp_path_factory.mktemp("models") / "tiny-starcoder2-constant.gguf"
    _models.write_tiny_model(
        out, tokenizer_json=tokenizer_path, mode="constant", constant_token=" x"
    )
    return out


@pytest.fixture(scope="session")
def llama_server_bin() -> Path:
    try:
        binary: Path = _process.find_llama_server()
        return binary
    except _process.LlamaServerNotFoundError as exc:
        reason = str(exc)
    _unavailable(reason)  # outside the except block, so the report is just the reason


@pytest.fixture(scope="session")
def start_llama_server(
    llama_server_bin: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StartServer]:
    """``start(model, *extra_args)`` returns a running server, started once per session for
    each distinct (model, args) and stopped when the session ends."""
    started: dict[tuple[Path, tuple[str, ...]], Server] = {}
    logs = tmp_path_factory.mktemp("llama-server-logs")
    with ExitStack() as stack:

        def start(model: Path, *extra_args: str) -> Server:
            key = (model, extra_args)
            if key not in started:
                log_path = logs / f"server-{len(started)}.log"
                try:
                    started[key] = stack.enter_context(
                        _process.running_llama_server(
                            llama_server_bin, model, log_path=log_path, extra_args=extra_args
                        )
                    )
                except _process.LlamaServerStartError as exc:
                    pytest.fail(str(exc), pytrace=False)
            return started[key]

        yield start


@pytest.fixture(scope="session")
def llama_server(start_llama_server: StartServer, tiny_gguf: Path) -> Server:
    """``llama-server`` on the random model: ``-c 2048 -np 1 -t 1 -tb 1 --seed 42``."""
    return start_llama_server(tiny_gguf)


@pytest.fixture(scope="session")
def llama_server_constant(start_llama_server: StartServer, tiny_gguf_constant: Path) -> Server:
    """Same flags on the constant model, for exact text and stop strings."""
    return start_llama_server(tiny_gguf_constant)


drive = drive_fixture(*LOOPBACK_MODES)


@pytest.fixture
def make(drive: Driver, exact_counter: TokenizerCounter) -> Make:
    """`make(*deployments)`: a router over them in the test's mode, with the real tokenizer and
    no retries."""

    def build(*deps: Deployment, **options: Any) -> Router | AsyncRouter:
        return drive.new_router(**router_kwargs(exact_counter, *deps) | options)

    return build
