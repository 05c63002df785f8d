"""`starcoder-router discover` reaches a real llama-server through
`STARCODER_ROUTER_LLAMACPP_BASE_URL`, as a router configured the same way would."""

from __future__ import annotations

from typing import Any

import pytest

from starcoder_router._cli import main
from support.ports import free_port


def test_discover_uses_the_base_url_variable(llama_server: Any, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("STARCODER_ROUTER_LLAMACPP_BASE_URL", llama_server.base_url)
    for other in ("OLLAMA", "VLLM", "TGI", "LMSTUDIO"):
        monkeypatch.setenv(f"STARCODER_ROUTER_{other}_BASE_URL",
                           f"http://127.0.0.1:{free_port()}")
    code = main(["discover", "--verbose"])
    out, err = capsys.readouterr()
    assert code == 0
    assert llama_server.base_url in out and str(llama_server.n_ctx) in out
    assert f"GET {llama_server.base_url}/props -> 200" in err
    assert err.count("no answer") >= 4
