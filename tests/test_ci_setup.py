"""`.ci/test.sh` on a machine that lacks what the suite needs: it stops at once, before creating
or installing anything, and says what to install. Each run here gets a PATH of its own holding
only the tools the test lends it, so nothing is installed and no apt or sudo runs for real."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tool(folder: Path, name: str, script: str) -> None:
    path = folder / name
    path.write_text("#!/bin/sh\n" + script + "\n", encoding="utf-8")
    path.chmod(0o755)


def _run(tmp_path: Path, tools: dict[str, str], **env: str) -> subprocess.CompletedProcess[str]:
    """`.ci/test.sh` with a PATH of `tools` (name: shell script) and links to dirname, and
    the test's own Python as `python3`, unless `tools` names them."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("dirname",):
        found = shutil.which(name)
        assert found is not None
        (bin_dir / name).symlink_to(found)
    (bin_dir / "python3").symlink_to(sys.executable)
    for name, script in tools.items():
        if (bin_dir / name).is_symlink():
            (bin_dir / name).unlink()
        _tool(bin_dir, name, script)
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    _tool(venv / "bin", "python", "exit 0")  # a venv that exists: no venv is made here
    return subprocess.run(["/bin/bash", str(ROOT / ".ci" / "test.sh")], check=False,
                          capture_output=True,
                          text=True, timeout=60, cwd=tmp_path,
                          env={"PATH": str(bin_dir), "HOME": str(tmp_path),
                               "VENV": str(venv), **env})


@pytest.mark.skipif(not Path("/bin/bash").exists(), reason="needs bash")
def test_a_python_older_than_3_11_is_refused_by_name(tmp_path: Path) -> None:
    done = _run(tmp_path, {"python3": 'case "$1" in -V) echo "Python 3.10.12";; *) exit 1;; '
                                      "esac"})
    assert done.returncode == 1
    assert done.stderr.strip() == (".ci/test.sh: Python 3.10.12 is too old: starcoder-router "
                                   "needs Python 3.11 or newer (set PYTHON=)")


@pytest.mark.skipif(not Path("/bin/bash").exists(), reason="needs bash")
def test_no_python_at_all_says_so(tmp_path: Path) -> None:
    done = _run(tmp_path, {}, PYTHON="python3.99")
    assert done.returncode == 1
    assert "no python3.99 on PATH: install Python 3.11 or newer" in done.stderr


@pytest.mark.skipif(not Path("/bin/bash").exists(), reason="needs bash")
def test_missing_tools_without_root_stop_at_once_naming_each(tmp_path: Path) -> None:
    snap_stub = ('echo "Command \'/usr/bin/chromium\' requires the chromium snap to be '
                 'installed."; echo "Please install it with: snap install chromium"; exit 1')
    done = _run(tmp_path, {"id": "echo 1000", "sudo": "exit 1", "chromium": snap_stub,
                           "apt-get": "echo apt-get ran >&2; exit 1"})
    assert done.returncode == 1
    assert "apt-get ran" not in done.stderr  # not root, no sudo: nothing is tried
    missing = done.stderr.split("missing: ", 1)[1].split(".", 1)[0].split()
    # Ubuntu's snap stub is not a Chromium: it is missing too
    assert {"cmake", "g++", "redis-server", "redis-tools", "chromium"} <= set(missing)
    assert f"apt-get install {' '.join(missing)}" in done.stderr
    assert not (tmp_path / "venv" / "lib").exists()


@pytest.mark.skipif(not Path("/bin/bash").exists(), reason="needs bash")
def test_without_the_servers_only_python_is_checked(tmp_path: Path) -> None:
    # SERVERS=0 (the second Python's pass) needs no cmake, Redis or Chromium; here it gets as
    # far as pip, which the stub venv's python answers, then pytest, which it also answers
    done = _run(tmp_path, {"id": "echo 1000", "sudo": "exit 1"}, SERVERS="0")
    assert "missing:" not in done.stderr
    assert done.returncode == 0, done.stderr


def test_the_script_is_what_the_readme_runs() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "```bash\nbash .ci/test.sh\n```" in readme
    assert os.access(ROOT / ".ci" / "test.sh", os.R_OK)
