"""User mistakes on the command line: one line on stderr, a non-zero status, no traceback."""

from __future__ import annotations

import io
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from starcoder_router import __version__
from starcoder_router._cli import main

CLI = [sys.executable, "-m", "starcoder_router._cli"]


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse's own usage errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_a_missing_prompt_file_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "route", "--prompt-file", "/nonexistent/prompt.py")
    assert code == 2
    assert err == "error: cannot read /nonexistent/prompt.py: No such file or directory\n"


def test_a_directory_as_prefix_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "route", "--prefix-file", str(tmp_path))
    assert code == 2
    assert err.startswith(f"error: cannot read {tmp_path}") and "Traceback" not in err


@pytest.mark.parametrize("flag", ["humaneval:abc", "humaneval", "humaneval:", ":35",
                                  "humaneval:nan"])
def test_a_malformed_min_quality_is_a_usage_error(capsys: pytest.CaptureFixture[str],
                                                  flag: str) -> None:
    code, _, err = run(capsys, "route", "x", "--min-quality", flag)
    assert code == 2
    assert "--min-quality: want BENCHMARK:SCORE" in err and "Traceback" not in err


def test_an_unknown_benchmark_lists_the_known_ones(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "route", "x", "--min-quality", "humanevl:30")
    assert code == 2
    assert "unknown benchmark 'humanevl'" in err and "humaneval" in err


@pytest.mark.parametrize("args", [
    ("route", "x", "--prefix-file", "f.py"),
    ("route", "x", "--prompt-file", "p.txt"),
    ("route", "--prompt-file", "p.txt", "--suffix-file", "s.py"),
    ("complete", "x", "--prefix-file", "f.py"),
])
def test_a_prompt_is_never_dropped_silently(capsys: pytest.CaptureFixture[str],
                                            args: tuple[str, ...]) -> None:
    code, out, err = run(capsys, *args)
    assert code == 2 and out == ""
    assert "give one of a prompt argument, --prompt-file or --prefix-file/--suffix-file" in err


def test_reading_stdin_on_a_terminal_says_so(capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdin", Terminal("def fib(n):"))
    code, out, err = run(capsys, "route")
    assert code == 0 and "chosen" in out
    assert "reading the prompt from stdin" in err


def test_piped_stdin_is_read_quietly() -> None:
    done = subprocess.run([*CLI, "route"], input="def fib(n):", capture_output=True, text=True,
                          check=False, timeout=60)
    assert done.returncode == 0 and "chosen" in done.stdout
    # No notice about stdin (the one-time hint on estimated counts may be there).
    assert "stdin" not in done.stderr and "Traceback" not in done.stderr


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out == f"starcoder-router {__version__}\n"


def test_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    # Enough output to fill the pipe, so the write fails once the reader has gone.
    config = tmp_path / "big.toml"
    config.write_text("".join(
        f"[[deployments]]\nprovider = 'ollama'\nvariant = 'starcoder2-3b'\nname = 'o/{i}'\n"
        f"model = 'starcoder2:3b-{i:04d}-{'x' * 60}'\ncontext_window = 4096\n\n"
        for i in range(1500)))
    proc = subprocess.Popen([*CLI, "catalog", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline().startswith(b"deployment")
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=60) == 141
    assert err == ""


def test_discover_honours_the_base_url_variables_and_lists_probes(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    ports = []
    for _ in range(5):
        with socket.socket() as s:  # bound then closed: nothing listens there
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    for name, port in zip(["OLLAMA", "VLLM", "LLAMACPP", "TGI", "LMSTUDIO"], ports, strict=True):
        monkeypatch.setenv(f"STARCODER_ROUTER_{name}_BASE_URL", f"http://127.0.0.1:{port}")
    code, out, err = run(capsys, "discover", "--verbose", "--timeout", "0.3")
    assert code == 1 and "no local StarCoder 2 servers found" in out
    for port in ports:
        assert f"http://127.0.0.1:{port}/" in err
    assert "no answer" in err
    assert "localhost:11434" not in err  # the usual ports were not probed
    code, _, err = run(capsys, "discover", "--timeout", "0.3")
    assert err == ""  # quiet without --verbose


def test_discover_at_a_named_address_says_what_happened(
        capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, out, err = run(capsys, "discover", "--address", f"llamacpp=http://127.0.0.1:{port}/v1",
                         "--timeout", "0.3")
    assert code == 1 and "no local StarCoder 2 servers found" in out
    assert f"nothing answers at http://127.0.0.1:{port} (llamacpp)" in err
    code, _, err = run(capsys, "discover", "--address", "fireworks=http://127.0.0.1:1")
    assert code == 2 and "fireworks cannot be discovered" in err


def test_route_plans_with_a_configured_key_variable(capsys: pytest.CaptureFixture[str],
                                                    tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FIREWORKS_API_KEY", raising=False)
    monkeypatch.delenv("MY_FW_KEY", raising=False)
    config = tmp_path / "router.toml"
    config.write_text("[providers.fireworks]\napi_key_env = 'MY_FW_KEY'\n", encoding="utf-8")
    code, out, _ = run(capsys, "route", "x", "--config", str(config))
    assert code == 0 and "fireworks/starcoder2-3b" in out.splitlines()[3]
    assert "chosen" in out.splitlines()[3]
    code, _, err = run(capsys, "route", "x", "--config", str(config), "--require-keys")
    assert code == 2 and "set MY_FW_KEY" in err


@pytest.mark.parametrize(("args", "said"), [
    (("spend", "--path", "/nonexistent/spend.db"), "error: --path: no spend database at"),
    (("spend", "--store", "redis"), "error: --url: a redis store needs a url"),
    (("route", "x", "--min-quality", "humanevl:30"), "error: --min-quality: unknown benchmark"),
    (("route", "x", "--max-cost", "-1"), "argument --max-cost: want a positive number"),
])
def test_errors_name_the_flag_not_the_field(capsys: pytest.CaptureFixture[str],
                                            args: tuple[str, ...], said: str) -> None:
    code, _, err = run(capsys, *args)
    assert code == 2 and said in err
    for internal in ("field '", "store.path", "policy.", "CostPolicy", "max_cost_per_request"):
        assert internal not in err
