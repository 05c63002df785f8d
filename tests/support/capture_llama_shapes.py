#!/usr/bin/env python3
"""Record real llama-server replies into ``tests/local_servers/fixtures/llamacpp/`` for the
HTTP-mocked adapter tests.

Runs ``llama-server`` on the tiny constant-mode StarCoder 2 model (every generated token is
``" x"``, so the text is readable and the same on every run), sends each request below once, and
writes the reply body to its file:

- ``*.json``: the JSON body, re-indented for review (values and key order untouched);
- ``*.sse``: the ``text/event-stream`` body byte for byte.

``requests.json`` records, for each file, the request that produced it and the HTTP status, plus
the server command line and build. ``test_server_protocol.py`` replays those requests against a
live server and checks that the recorded replies still have the same fields.

Usage (needs the binary; see ``.ci/build-llama-server.sh``)::

    PYTHONPATH=tests .venv/bin/python -m support.capture_llama_shapes \
        [--out tests/local_servers/fixtures/llamacpp]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import httpx

from support.llama_server import (
    DEFAULT_ARGS,
    build_script_default,
    find_llama_server,
    running_llama_server,
)
from support.make_tiny_starcoder2 import default_tokenizer_json, write_tiny_model

FIXTURES = Path(__file__).resolve().parents[1] / "local_servers" / "fixtures" / "llamacpp"
MODEL_FILE = "tiny-starcoder2.gguf"  # passed relative, so replies say this rather than a temp path

PROMPT = "def hello_world():\n    "
PREFIX = "def add(a, b):\n    "
SUFFIX = "\n\nprint(add(1, 2))\n"

# file name -> (method, path, JSON body or None)
CAPTURES: dict[str, tuple[str, str, dict[str, Any] | None]] = {
    "v1_completions.json": (
        "POST",
        "/v1/completions",
        {"model": "starcoder2", "prompt": PROMPT, "max_tokens": 8, "temperature": 0.2},
    ),
    "v1_completions_stop.json": (
        "POST",
        "/v1/completions",
        {"model": "starcoder2", "prompt": PROMPT, "max_tokens": 16, "stop": ["x x x"]},
    ),
    "v1_completions_stream.sse": (
        "POST",
        "/v1/completions",
        {"model": "starcoder2", "prompt": PROMPT, "max_tokens": 4, "stream": True},
    ),
    "completion.json": ("POST", "/completion", {"prompt": PROMPT, "n_predict": 8}),
    "completion_stream.sse": (
        "POST",
        "/completion",
        {"prompt": PROMPT, "n_predict": 4, "stream": True},
    ),
    "infill.json": (
        "POST",
        "/infill",
        {
            "input_prefix": PREFIX,
            "input_suffix": SUFFIX,
            "input_extra": [{"filename": "util.py", "text": "def sub(a, b):\n    return a - b\n"}],
            "n_predict": 4,
        },
    ),
    "error_exceed_context_size.json": (
        "POST",
        "/v1/completions",
        {"model": "starcoder2", "prompt": "a b " * 1100, "max_tokens": 8},
    ),
    "tokenize.json": (
        "POST",
        "/tokenize",
        {"content": f"<fim_prefix>{PREFIX}<fim_suffix>{SUFFIX}<fim_middle>"},
    ),
    "props.json": ("GET", "/props", None),
    "v1_models.json": ("GET", "/v1/models", None),
}


def capture(out: Path) -> None:
    binary = find_llama_server()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        write_tiny_model(
            workdir / MODEL_FILE, tokenizer_json=default_tokenizer_json(), mode="constant"
        )
        server_cm = running_llama_server(
            binary, Path(MODEL_FILE), log_path=workdir / "server.log", cwd=workdir
        )
        # No connection reuse: llama-server closes the connection after every stream.
        limits = httpx.Limits(max_keepalive_connections=0)
        with (
            server_cm as server,
            httpx.Client(base_url=server.base_url, timeout=30, limits=limits) as client,
        ):
            index: dict[str, Any] = {}
            for name, (method, path, body) in CAPTURES.items():
                response = client.request(method, path, json=body)
                if name.endswith(".sse"):
                    (out / name).write_bytes(response.content)
                else:
                    text = json.dumps(response.json(), indent=2, ensure_ascii=False)
                    (out / name).write_text(text + "\n", encoding="utf-8")
                index[name] = {
                    "method": method,
                    "path": path,
                    "status": response.status_code,
                    "body": body,
                }
            build_info = client.get("/props").json()["build_info"]
    argv = ["llama-server", "-m", MODEL_FILE, "--host", "127.0.0.1", "--port", "<free>"]
    meta = {
        "server": " ".join([*argv, "-c", "2048", *DEFAULT_ARGS]),
        "model": "make_tiny_starcoder2.write_tiny_model(mode='constant', constant_token=' x')",
        "build_info": build_info,
        "build_script_llama_cpp_python": build_script_default("LLAMA_CPP_PYTHON_VERSION"),
    }
    requests_json = json.dumps({"captured_with": meta, "captures": index}, indent=2)
    (out / "requests.json").write_text(requests_json + "\n", encoding="utf-8")
    for name, entry in index.items():
        print(f"{entry['status']} {entry['method']} {entry['path']:<16} -> {out / name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=FIXTURES, help="directory to write into")
    capture(parser.parse_args().out)


if __name__ == "__main__":
    main()
