"""Ending the server processes that tests start (redis-server, llama-server)."""

from __future__ import annotations

import subprocess


def stop(process: subprocess.Popen[bytes], *, grace_s: float = 10.0) -> None:
    """Terminate `process` and reap it, killing it if it outlives `grace_s`; a process that has
    already exited is only reaped."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
