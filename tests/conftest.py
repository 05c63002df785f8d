"""Shared test fixtures. The real StarCoder 2 tokenizer is read from ../shared (never copied).

`drive` runs a test once through the sync `Router` and once through `AsyncRouter` (httpx
transport, which respx intercepts); see support/router_driver.py.

Folders are by subject: routing/ (requests, rendering, fitting, tokens, routing decisions,
config), running/ (the routers: retries, fallbacks, health, streams, hedging, costs),
providers/ (hosted and OpenAI-compatible adapters over respx, error mapping, transports),
local_servers/ (Ollama and llama.cpp adapters over respx), stores/ (spend stores and budgets),
cli/, and real_servers/ (everything that starts a real llama-server). Helpers shared between
folders are the package support/.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from support.router_driver import MODES, drive_fixture

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("STARCODER_ROUTER_SHARED", ROOT.parent / "shared"))
TOKENIZER_JSON = SHARED / "data" / "starcoder2-tokenizer" / "tokenizer.json"


@pytest.fixture(scope="session")
def tokenizer_path() -> Path:
    if not TOKENIZER_JSON.is_file():
        pytest.fail(f"the StarCoder 2 tokenizer is expected at {TOKENIZER_JSON}")
    return TOKENIZER_JSON


@pytest.fixture(scope="session")
def exact_counter(tokenizer_path: Path):  # type: ignore[no-untyped-def]
    from starcoder_router import TokenizerCounter

    return TokenizerCounter.from_file(tokenizer_path)


drive = drive_fixture(*MODES)


@pytest.fixture(autouse=True)
def _no_ambient_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never see the developer's real API keys or tokenizer settings."""
    for var in ("FIREWORKS_API_KEY", "FIREWORKS_AI_API_KEY", "DEEPINFRA_API_KEY",
                "DEEPINFRA_TOKEN", "DEEPINFRA_API_TOKEN", "STARCODER_ROUTER_TOKENIZER"):
        monkeypatch.delenv(var, raising=False)


# Files the tests leave for a person to look at (the report's screenshot): listed at the end of
# the run with their paths, so a CI log says where to find them.
ARTIFACTS = ROOT / "tests" / "artifacts"
_RUN_STARTED = pytest.StashKey[float]()


def pytest_sessionstart(session: pytest.Session) -> None:
    import time

    session.config.stash[_RUN_STARTED] = time.time()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter,
                            config: pytest.Config) -> None:
    started = config.stash.get(_RUN_STARTED, None)
    if started is None or not ARTIFACTS.is_dir():
        return
    made = sorted(p for p in ARTIFACTS.iterdir() if p.stat().st_mtime >= started)
    if made:
        terminalreporter.write_sep("-", "artifacts to look at")
        for path in made:
            terminalreporter.write_line(str(path))
