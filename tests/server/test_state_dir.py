"""Where `starcoder-router serve` keeps its spend without a `[store]`: a SQLite file in the
state directory (flag, then `[server] state_dir`, then the environment), created 0700; and a
memory store with several workers, refused before the banner."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from starcoder_router._server.state_dir import default_state_dir, prepare_state_dir

ROOT = Path(__file__).resolve().parents[2]
BANNER = "starcoder-router gateway on"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _serve(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "starcoder_router._cli", "serve",
                             "--port", str(_free_port()), *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _spend_line(proc: subprocess.Popen[str]) -> str:
    """The `spend kept in ...` line the started gateway prints after its banner; then stop it."""
    assert proc.stderr is not None
    deadline = threading.Timer(30, proc.kill)  # a gateway that never prints it must not hang
    deadline.start()
    try:
        for line in proc.stderr:
            if line.startswith("spend kept in "):
                return line.removeprefix("spend kept in ").strip()
        pytest.fail(f"serve printed no spend line (exit {proc.wait(10)})")
    finally:
        deadline.cancel()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


def test_the_state_dir_follows_env_then_xdg_then_home(monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_state_dir({"STARCODER_ROUTER_STATE_DIR": "/srv/scr",
                              "XDG_STATE_HOME": "/x"}) == Path("/srv/scr")
    assert default_state_dir({"XDG_STATE_HOME": "/x"}) == Path("/x/starcoder-router")
    # a relative XDG_STATE_HOME is invalid per the XDG specification: ignored
    assert default_state_dir({"XDG_STATE_HOME": "rel"}) == (
        tmp_path / "home" / ".local" / "state" / "starcoder-router")
    assert default_state_dir({"STARCODER_ROUTER_STATE_DIR": ""}) == (
        tmp_path / "home" / ".local" / "state" / "starcoder-router")


def test_the_state_dir_is_created_owner_only(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = prepare_state_dir(tmp_path / "a" / "b")
    finally:
        os.umask(old)
    assert path == tmp_path / "a" / "b" / "spend.db"
    assert stat.S_IMODE((tmp_path / "a" / "b").stat().st_mode) == 0o700


def test_an_existing_directory_keeps_its_mode(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    prepare_state_dir(tmp_path)
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o755


def test_serve_without_a_store_keeps_spend_in_the_env_state_dir(state_dir: Path) -> None:
    assert _spend_line(_serve()) == str(state_dir / "spend.db")
    assert (state_dir / "spend.db").is_file()
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700


def test_the_config_key_and_the_flag_override_the_state_dir(tmp_path: Path,
                                                            state_dir: Path) -> None:
    config = tmp_path / "router.toml"
    config.write_text(f'[server]\nstate_dir = "{tmp_path / "from-key"}"\n')
    assert _spend_line(_serve("--config", str(config))) == str(
        tmp_path / "from-key" / "spend.db")
    assert _spend_line(_serve("--config", str(config), "--state-dir",
                              str(tmp_path / "from-flag"))) == str(
        tmp_path / "from-flag" / "spend.db")
    assert (tmp_path / "from-key" / "spend.db").is_file()
    assert (tmp_path / "from-flag" / "spend.db").is_file()
    assert not state_dir.exists()


def test_an_explicit_store_wins(tmp_path: Path, state_dir: Path) -> None:
    config = tmp_path / "router.toml"
    config.write_text(f'[store]\nkind = "sqlite"\npath = "{tmp_path / "mine.db"}"\n')
    proc = _serve("--config", str(config), "--state-dir", str(tmp_path / "unused"))
    assert proc.stderr is not None
    assert BANNER in proc.stderr.readline()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert "spend kept in" not in err
    assert not (tmp_path / "unused").exists() and not state_dir.exists()


def test_a_memory_store_with_workers_is_refused_before_the_banner(tmp_path: Path) -> None:
    config = tmp_path / "router.toml"
    config.write_text('[store]\nkind = "memory"\n')
    proc = _serve("--config", str(config), "--workers", "2")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert BANNER not in out + err
    assert "Traceback" not in err
    assert "memory store" in err and "2 workers" in err
    assert 'kind = "sqlite"' in err and '"redis"' in err


def test_a_state_dir_that_cannot_be_made_fails_before_the_banner(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    proc = _serve("--state-dir", str(tmp_path / "file" / "sub"))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert BANNER not in out + err
    assert "Traceback" not in err
    assert "cannot create the state directory" in err
