"""`starcoder-router complete`: the text on stdout, the deployment, tokens, cost and attempts on
stderr; FIM files, streaming and JSON; the spend lands in the config's ledger."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from starcoder_router import SQLiteStore
from starcoder_router._cli import main
from starcoder_router.testing import FakeServer, Reply


def test_complete_prints_the_text_then_a_summary(capsys: pytest.CaptureFixture[str],
                                                 server: FakeServer, fake_config: Path) -> None:
    server.script(Reply(text="    return 1\n"))
    code = main(["complete", "def f():", "--config", str(fake_config), "--max-tokens", "16"])
    out, err = capsys.readouterr()
    assert code == 0
    assert out == "    return 1\n"
    assert err.startswith("fake/local: ")
    assert "prompt +" in err and "completion tokens" in err and "$0.0000" in err
    assert "1 attempt(s)" in err
    assert server.requests[-1].body["max_tokens"] == 16
    store = SQLiteStore(str(fake_config.parent / "spend.db"))  # beside the config file
    try:
        [entry] = store.ledger()
    finally:
        store.close()
    assert entry.deployment == "fake/local" and entry.cost_nano > 0


def test_complete_fills_in_the_middle_from_files(capsys: pytest.CaptureFixture[str],
                                                 server: FakeServer, fake_config: Path,
                                                 tmp_path: Path) -> None:
    (tmp_path / "before.py").write_text("def add(a, b):\n    ")
    (tmp_path / "after.py").write_text("\n\nprint(add(1, 2))\n")
    code = main(["complete", "--prefix-file", str(tmp_path / "before.py"), "--suffix-file",
                 str(tmp_path / "after.py"), "--config", str(fake_config)])
    assert code == 0
    prompt = server.requests[-1].body["prompt"]
    assert prompt.startswith("<fim_prefix>def add(a, b):\n    <fim_suffix>")
    assert prompt.endswith("<fim_middle>")
    assert "fake/local" in capsys.readouterr().err


def test_complete_streams(capsys: pytest.CaptureFixture[str], server: FakeServer,
                          fake_config: Path) -> None:
    server.script(Reply(text="a b c d", chunks=4))
    code = main(["complete", "x", "--stream", "--config", str(fake_config)])
    out, err = capsys.readouterr()
    assert code == 0 and out == "a b c d\n"
    assert server.requests[-1].body["stream"] is True
    assert "fake/local" in err


def test_complete_as_json(capsys: pytest.CaptureFixture[str], server: FakeServer,
                          fake_config: Path) -> None:
    server.script(Reply(text="pass"))
    assert main(["complete", "x", "--json", "--tenant", "acme", "--config",
                 str(fake_config)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["text"] == "pass" and data["deployment"] == "fake/local"
    assert data["usage"]["completion_tokens"] >= 1 and data["cost_usd"] > 0
    assert [a["outcome"] for a in data["attempts"]] == ["ok"]


def test_complete_streams_json_lines(capsys: pytest.CaptureFixture[str], server: FakeServer,
                                     fake_config: Path) -> None:
    server.script(Reply(text="a b", chunks=2))
    assert main(["complete", "x", "--json", "--stream", "--config", str(fake_config)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert "".join(line["text"] for line in lines[:-1]) == "a b"
    assert lines[-1]["deployment"] == "fake/local" and lines[-1]["text"] == "a b"


@pytest.mark.parametrize("chunks", [1, 2, 5])
def test_streamed_json_lines_carry_no_empty_chunk(capsys: pytest.CaptureFixture[str],
                                                  server: FakeServer, fake_config: Path,
                                                  chunks: int) -> None:
    server.script(Reply(text="a b c d e", chunks=chunks))
    assert main(["complete", "x", "--json", "--stream", "--config", str(fake_config)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert all(line["text"] for line in lines[:-1])
    assert "".join(line["text"] for line in lines[:-1]) == "a b c d e"
    assert lines[-1]["finish_reason"] == "stop"


def test_a_failed_request_is_one_line_and_status_1(capsys: pytest.CaptureFixture[str],
                                                   server: FakeServer, fake_config: Path) -> None:
    server.script(*[Reply(status=401, error="bad key")] * 3)
    code = main(["complete", "x", "--config", str(fake_config)])
    out, err = capsys.readouterr()
    assert code == 1 and out == ""
    assert err.startswith("error: AuthenticationError:") and "Traceback" not in err


def test_a_library_logger_left_at_info_prints_nothing_more(
        capsys: pytest.CaptureFixture[str], server: FakeServer, fake_config: Path) -> None:
    # A host process (or an earlier command in it) may leave the library's logger at INFO:
    # a command still prints its warnings only, never each attempt.
    logger = logging.getLogger("starcoder_router")
    before = logger.level
    logger.setLevel(logging.INFO)
    try:
        server.script(*[Reply(status=401, error="bad key")] * 3)
        assert main(["complete", "x", "--config", str(fake_config)]) == 1
    finally:
        logger.setLevel(before)
    err = capsys.readouterr().err
    assert err.startswith("error: AuthenticationError:"), err


def test_complete_with_no_route_explains(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["complete", "x"])  # no keys in the test environment
    _, err = capsys.readouterr()
    assert code == 2 and "FIREWORKS_API_KEY" in err


def test_the_fake_server_command_is_a_stand_in_provider(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import signal
    import subprocess
    import sys

    from support.ports import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "starcoder_router._cli", "fake-server",
                             "--port", str(port)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        banner = "".join(iter(proc.stdout.readline, "Ctrl-C stops it.\n"))
        assert f"http://127.0.0.1:{port}/v1" in banner
        config = tmp_path / "router.toml"
        config.write_text(banner[banner.index("[policy]"):], encoding="utf-8")
        assert main(["complete", "def fib(n):", "--max-tokens", "16", "--config",
                     str(config)]) == 0
        out, err = capsys.readouterr()
        assert out.strip() and "fake/local" in err
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=30)
        assert proc.stdout is not None
        proc.stdout.close()
    assert code == 0
