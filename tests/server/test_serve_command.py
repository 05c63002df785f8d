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
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            pytest.fail("the gateway did not start")
        time.sleep(2)  # the second worker has had its time to print, too
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    banners = [line for line in err.splitlines() if BANNER in line]
    assert banners == [f"{BANNER} http://127.0.0.1:{port} (2 workers, "
                       f"{banners[0].rsplit('(2 workers, ', 1)[-1]}"]
    assert banners[0].endswith(("uvloop loop)", "asyncio loop)"))


def test_a_worker_freezes_its_startup_heap_and_collects_young_objects_less_often(
        tmp_path: Path) -> None:
    port = _free_port()
    report = ("import atexit, gc; atexit.register(lambda: print('GC', gc.get_threshold()[0], "
              "gc.get_freeze_count(), file=sys.stderr))")
    proc = _serve("--port", str(port), "--no-access-log", "--state-dir", str(tmp_path),
                  prelude=report)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            pytest.fail("the gateway did not start")
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    [line] = [line for line in err.splitlines() if line.startswith("GC ")]
    _, threshold, frozen = line.split()
    assert int(threshold) == 10_000
    assert int(frozen) > 10_000  # the modules, schemas and app made at startup
