"""examples/local_llamacpp.py finds a real llama-server with `discover_local()` (through
`STARCODER_ROUTER_LLAMACPP_BASE_URL`) and completes through it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from support.ports import free_port

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "local_llamacpp.py"


def _closed_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


def test_the_local_example_uses_a_real_llama_server(llama_server: Any, tmp_path: Path) -> None:
    env = {**os.environ, "STARCODER_ROUTER_LLAMACPP_BASE_URL": llama_server.base_url}
    for other in ("OLLAMA", "VLLM", "TGI", "LMSTUDIO"):  # nothing else answers
        env[f"STARCODER_ROUTER_{other}_BASE_URL"] = _closed_url()
    done = subprocess.run([sys.executable, str(EXAMPLE)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert f"at {llama_server.base_url}, window {llama_server.n_ctx}" in done.stdout
    assert "llamacpp/" in done.stdout and " wrote " in done.stdout


def test_the_local_example_says_when_nothing_is_found(tmp_path: Path) -> None:
    env = {**os.environ}
    for name in ("LLAMACPP", "OLLAMA", "VLLM", "TGI", "LMSTUDIO"):
        env[f"STARCODER_ROUTER_{name}_BASE_URL"] = _closed_url()
    done = subprocess.run([sys.executable, str(EXAMPLE)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1
    assert done.stderr == "no local StarCoder 2 server found\n"
