"""Find and run a real llama.cpp ``llama-server`` for integration tests and fixture capture.

::

    binary = find_llama_server()
    with running_llama_server(binary, model, log_path=tmp / "server.log") as server:
        httpx.post(server.base_url + "/completion", json={"prompt": "def", "n_predict": 4})
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from support.ports import free_port
from support.processes import stop

BIN_ENV = "LLAMA_SERVER_BIN"
REQUIRE_ENV = "REQUIRE_LLAMA_SERVER"

PROJECT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = PROJECT / ".ci" / "build-llama-server.sh"

# Two threads fight over the two cores of a CI machine and make latency erratic, so one each.
DEFAULT_ARGS = ("-np", "1", "-t", "1", "-tb", "1", "--seed", "42")


class LlamaServerNotFoundError(RuntimeError):
    """No llama-server binary in any of the places we look."""


class LlamaServerStartError(RuntimeError):
    """The binary exists but the server did not come up; the message ends with its log."""


@dataclass(frozen=True)
class LlamaServer:
    """A running server and what it reports about itself."""

    base_url: str
    model_id: str  # what /v1/models reports: the -m path exactly as given
    n_ctx: int
    log_path: Path
    pid: int

    def log_tail(self, lines: int = 80) -> str:
        return _tail(self.log_path, lines)


def build_script_default(variable: str) -> str:
    # The build script owns the version and optimisation level. Reading its defaults keeps this
    # lookup pointed at the same directory after a version bump, and never runs the script, which
    # would start a multi-minute build when the cache is empty.
    text = BUILD_SCRIPT.read_text(encoding="utf-8")
    match = re.search(r"\$\{" + variable + r":-(.*?)\}", text)
    if match is None:
        raise LlamaServerNotFoundError(f"cannot read the default of {variable} from {BUILD_SCRIPT}")
    return match.group(1)


def cached_build_path() -> Path:
    """Where ``.ci/build-llama-server.sh`` puts (or would put) the binary."""
    cache = os.environ.get("LLAMA_SERVER_CACHE")
    if not cache:
        version = os.environ.get("LLAMA_CPP_PYTHON_VERSION") or build_script_default(
            "LLAMA_CPP_PYTHON_VERSION"
        )
        opt = os.environ.get("LLAMA_SERVER_OPT") or build_script_default("LLAMA_SERVER_OPT")
        root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        cache = str(Path(root) / "starcoder-router" / f"llama-server-{version}{opt}")
    return Path(cache) / "llama-server"


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def find_llama_server() -> Path:
    """``$LLAMA_SERVER_BIN``, else ``llama-server`` on PATH, else the build script's cache."""
    if explicit := os.environ.get(BIN_ENV):
        path = Path(explicit)
        if _is_executable(path):
            return path
        raise LlamaServerNotFoundError(f"{BIN_ENV}={explicit} is not an executable file")
    if on_path := shutil.which("llama-server"):
        return Path(on_path)
    cached = cached_build_path()
    if _is_executable(cached):
        return cached
    raise LlamaServerNotFoundError(
        f"llama-server not found: {BIN_ENV} is unset, it is not on PATH, and {cached} does not "
        f"exist. Build it once with `bash {BUILD_SCRIPT.relative_to(PROJECT)}`."
    )


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _server_env() -> dict[str, str]:
    # llama-server reads LLAMA_ARG_* and LLAMA_API_KEY as defaults for its flags; a developer's
    # shell settings must not change what the tests observe.
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("LLAMA_ARG_") and k != "LLAMA_API_KEY"
    }


def _wait_healthy(process: subprocess.Popen[bytes], base_url: str, deadline: float) -> bool | None:
    """True once /health answers 200, False if the process died, None on timeout."""
    with httpx.Client(base_url=base_url, timeout=1.0) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return False
            try:
                if client.get("/health").status_code == 200:
                    return True
            except httpx.TransportError:
                pass  # not listening yet
            time.sleep(0.05)
    return None


@contextmanager
def running_llama_server(
    binary: Path,
    model: Path,
    *,
    log_path: Path,
    ctx: int = 2048,
    extra_args: Sequence[str] = (),
    cwd: Path | None = None,
    startup_timeout: float = 30.0,
    attempts: int = 3,
) -> Iterator[LlamaServer]:
    """Run ``llama-server -m model`` on a free localhost port until the block exits.

    The server reports ``model`` exactly as given, so a relative path (with ``cwd``) gives a
    reply that does not depend on where the file happens to live.

    The port is chosen before the server binds it, so another process can take it in between;
    the server then exits at once and we try again on a new port.
    """
    for attempt in range(1, attempts + 1):
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        argv = [str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(port)]
        argv += ["-c", str(ctx), *DEFAULT_ARGS, *extra_args]
        with log_path.open("ab") as log:
            log.write(f"$ {' '.join(argv)}\n".encode())
            log.flush()
            process = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=_server_env(),
                cwd=cwd,
            )
        try:
            healthy = _wait_healthy(process, base_url, time.monotonic() + startup_timeout)
            if healthy is False and attempt < attempts:
                continue
            if not healthy:
                why = "exited early" if healthy is False else f"not healthy in {startup_timeout} s"
                raise LlamaServerStartError(
                    f"llama-server {why}; log {log_path}:\n{_tail(log_path, 60)}"
                )
            models = httpx.get(base_url + "/v1/models", timeout=10).json()["data"][0]
            yield LlamaServer(
                base_url=base_url,
                model_id=models["id"],
                n_ctx=models["meta"]["n_ctx"],
                log_path=log_path,
                pid=process.pid,
            )
            return
        finally:
            stop(process)
