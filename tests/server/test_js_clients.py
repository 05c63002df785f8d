"""The gateway through JavaScript clients, run by node: the official `ollama` npm client and
Continue's `@continuedev/openai-adapters` (its FIM stream posts to Mistral's
`/v1/fim/completions`). `.ci/npm-clients.sh` installs them from tests/js_clients' lockfile;
under REQUIRE_NODE_CLIENTS=1 (as .ci/test.sh sets) a missing node or client fails the test."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

CLIENTS = Path(__file__).resolve().parents[1] / "js_clients"


def _node(script: str, *args: str) -> dict[str, Any]:
    node = shutil.which("node")
    installed = (CLIENTS / "node_modules" / "ollama").is_dir() and (
        CLIENTS / "node_modules" / "@continuedev" / "openai-adapters").is_dir()
    if node is None or not installed:
        why = ("node is not installed" if node is None
               else "the clients are not installed: run bash .ci/npm-clients.sh")
        if os.environ.get("REQUIRE_NODE_CLIENTS") == "1":
            pytest.fail(why)
        pytest.skip(why)
    done = subprocess.run([node, script, *args], check=False, cwd=CLIENTS, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "NO_PROXY": "127.0.0.1"})
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_ollama_npm_client(serve: Any, upstream: Any) -> None:
    gw = serve()
    out = _node("ollama_client.mjs", gw.url)
    assert out["tags"] == gw.gateway.model_names
    assert ".Suffix" in out["show"]["template"]
    assert "insert" in out["show"]["capabilities"]
    assert out["show"]["parameters"].split() == ["num_ctx", "2048"]
    assert out["generate"] == {"response": "return a + b", "done": True, "eval_count": 4}
    assert "".join(p["response"] for p in out["stream"]) == "return a + b"
    assert [p["done"] for p in out["stream"]][-1] is True
    assert all(p["response"] for p in out["stream"][:-1])  # no empty parts
    assert out["missing"]["status"] == 404
    fim = next(b for b in upstream.bodies if "<fim_suffix>" in b["prompt"])
    assert fim["prompt"] == "<fim_prefix>def add(a, b):\n    <fim_suffix>\n<fim_middle>"


def test_continue_openai_adapters(serve: Any, upstream: Any) -> None:
    gw = serve()
    out = _node("continue_adapters.mjs", gw.url + "/v1/")
    assert "".join(out["fim"]) == "return a + b"
    assert out["chat"] == "return a + b"
    assert "".join(out["chatStream"]) == "return a + b"
    fim = upstream.bodies[0]
    assert fim["prompt"] == "<fim_prefix>def add(a, b):\n    <fim_suffix>\n<fim_middle>"
    assert fim["stop"][0] == "\n\n"
    assert fim["max_tokens"] == 8
