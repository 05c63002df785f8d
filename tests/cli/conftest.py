"""Fixtures for the command-line tests: a loopback server and a config file pointing at it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from starcoder_router.testing import FakeServer


@pytest.fixture
def server() -> Iterator[FakeServer]:
    with FakeServer() as s:
        yield s


@pytest.fixture
def fake_config(tmp_path: Path, server: FakeServer) -> Path:
    """A config whose only usable deployment is `server`, with a SQLite ledger beside it."""
    path = tmp_path / "router.toml"
    path.write_text(
        "[policy]\nallow_providers = ['openai-compatible']\n\n"
        "[[deployments]]\nname = 'fake/local'\nprovider = 'openai-compatible'\n"
        "variant = 'starcoder2-3b'\nmodel = 'fake-starcoder2'\ncontext_window = 16384\n"
        f"base_url = '{server.base_url}'\ninput_usd_per_mtok = 1.0\noutput_usd_per_mtok = 2.0\n"
        "\n[store]\nkind = 'sqlite'\npath = 'spend.db'\n",
        encoding="utf-8")
    return path
