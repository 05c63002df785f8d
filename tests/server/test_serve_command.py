"""`starcoder-router serve` as a user runs it: it checks what it needs before it prints its
banner, and prints that banner once however many workers it starts."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
BANNER = "starcoder-router gateway on"


def _serve(*args: str, prelude: str = "pass") -> subprocess.Popen[str]:
    code = (f"import sys; {prelude}; from starcoder_router._cli import main; "
            f"sys.exit(main(['serve', *sys.argv[1:]]))")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_until_up(port: int, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail("the gateway did not start")


def test_port_in_use_fails_before_the_banner(taken_port: int) -> None:
    proc = _serve("--port", str(taken_port))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert f"cannot listen on 127.0.0.1:{taken_port}: the address is already in use" in err
    assert BANNER not in err + out
    assert "Traceback" not in err


def test_missing_prometheus_client_fails_before_the_banner() -> None:
    # None in sys.modules makes `import prometheus_client` raise ImportError
    proc = _serve("--port", str(_free_port()),
                  prelude="sys.modules['prometheus_client'] = None")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "pip install 'starcoder-router[server]'" in err
    assert BANNER not in err + out
    assert "Traceback" not in err


def test_broken_config_fails_before_the_banner(tmp_path: Path) -> None:
    config = tmp_path / "router.toml"
    config.write_text('[policy]\nobjective = "fastest-please"\n')
    proc = _serve("--config", str(config), "--port", str(_free_port()))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert err.startswith("error: ")
    assert "objective" in err
    assert BANNER not in err + out
    assert "Traceback" not in err


def test_two_workers_print_one_banner() -> None:
    port = _free_port()
    proc = _serve("--port", str(port), "--workers", "2", "--no-access-log")
    try:
        _wait_until_up(port)
        time.sleep(2)  # the second worker has had its time to print, too
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    banners = [line for line in err.splitlines() if BANNER in line]
    assert banners == [f"{BANNER} http://127.0.0.1:{port} (2 workers, "
                       f"{banners[0].rsplit('(2 workers, ', 1)[-1]}"]
    assert banners[0].endswith(("uvloop loop)", "asyncio loop)"))


def test_the_tokenizer_notice_tells_a_gateway_operator_what_to_set(tmp_path: Path) -> None:
    """`serve` has no --tokenizer flag and no Python caller: the notice names the config key."""
    config = tmp_path / "router.toml"
    config.write_text("[policy]\nallow_providers = ['openai-compatible']\n\n[[deployments]]\n"
                      "name = 'local/3b'\nprovider = 'openai-compatible'\n"
                      "variant = 'starcoder2-3b'\nmodel = 'm'\ncontext_window = 16384\n"
                      "base_url = 'http://127.0.0.1:9/v1'\n", encoding="utf-8")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "STARCODER_ROUTER_TOKENIZER"}
    env.update(PYTHONPATH=str(ROOT), HF_HUB_CACHE=str(tmp_path / "hub"))
    code = "import sys; from starcoder_router._cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen([sys.executable, "-c", code, "serve", "--config", str(config),
                             "--port", str(port), "--no-access-log"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_until_up(port)
        httpx.post(f"http://127.0.0.1:{port}/v1/completions", timeout=30,
                   json={"model": "starcoder2", "prompt": "x = 1\n" * 2000, "max_tokens": 8})
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert err.count("no StarCoder 2 tokenizer found") == 1, err
    assert 'tokenizer = "/path/to/tokenizer.json" in the config file' in err
    assert "tokenizer=<path" not in err and "--tokenizer" not in err


def test_the_command_logs_each_request_and_each_error_once() -> None:
    """The access log and the error lines are on by default in `serve` itself, not only in a
    gateway built in Python: one line each, in the gateway's format."""
    port = _free_port()
    proc = _serve("--port", str(port))
    try:
        _wait_until_up(port)
        httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=10)
        missing = httpx.post(f"http://127.0.0.1:{port}/v1/completions", timeout=10,
                             json={"model": "no-such-model", "prompt": "x"})
        assert missing.status_code == 404
        time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    lines = err.splitlines()
    assert len([ln for ln in lines if "starcoder_router.access GET /v1/models 200" in ln]) == 1
    assert len([ln for ln in lines if "POST /v1/completions 404" in ln]) == 1
    assert len([ln for ln in lines if ": 404 model_not_found: " in ln]) == 1, err
def test_a_worker_freezes_its_startup_heap_and_collects_young_objects_less_often(
        tmp_path: Path) -> None:
    port = _free_port()
    report = ("import atexit, gc; atexit.register(lambda: print('GC', gc.get_threshold()[0], "
              "gc.get_freeze_count(), file=sys.stderr))")
    proc = _serve("--port", str(port), "--no-access-log", "--state-dir", str(tmp_path),
                  prelude=report)
    try:
        _wait_until_up(port)
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    [line] = [line for line in err.splitlines() if line.startswith("GC ")]
    _, threshold, frozen = line.split()
    assert int(threshold) == 10_000
    assert int(frozen) > 10_000  # the modules, schemas and app made at startup
