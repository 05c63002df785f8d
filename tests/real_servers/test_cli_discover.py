"""`starcoder-router discover` finds a real llama-server with its real window."""

from __future__ import annotations

from typing import Any

import pytest

from starcoder_router._cli import main
from support.ports import free_port


def test_discover_prints_the_server_and_its_window(llama_server: Any,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["discover", "--address", f"llamacpp={llama_server.base_url}"])
    out = capsys.readouterr().out
    assert code == 0
    assert llama_server.base_url in out
    assert str(llama_server.n_ctx) in out
    assert "llamacpp/" in out


def test_discover_with_nothing_listening(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    code = main(["discover", "--address", f"llamacpp=http://127.0.0.1:{port}",
                 "--timeout", "0.3"])
    assert code == 1
    assert "no local StarCoder 2 servers found" in capsys.readouterr().out


def test_discover_rejects_a_malformed_address(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["discover", "--address", "llamacpp"]) == 2
    assert "PROVIDER=URL" in capsys.readouterr().err
