"""Whatever the command line holds, `starcoder-router` answers with a status and a message,
never a traceback: argparse's usage errors exit 2, everything else is caught by `main`."""

from __future__ import annotations

import io
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from starcoder_router._cli import main

# Offline commands only: `discover` probes ports, and a hub-id `--tokenizer` would download.
COMMANDS = ["catalog", "route", "complete", "spend"]
VALUED = ["--prompt-file", "--prefix-file", "--suffix-file", "--max-tokens", "--objective",
          "--min-quality", "--max-cost", "--config", "--tenant", "--temperature", "--store",
          "--path", "--url", "--by", "--period"]
SWITCHES = ["--prefer-local", "--structured", "--stream", "--json", "--require-keys",
            "--variants"]
VALUES = ["humaneval:35", "humaneval", "humaneval:abc", "humanevl:3", "0", "-1", "nan", "1e400",
          "quality", "/nonexistent", ".", "", " ", "\ud800", "x", "def f():", "sqlite", "tenant"]
values = st.one_of(st.sampled_from(VALUES), st.text(max_size=8).filter(
    lambda t: not t.startswith("-")))
# Mostly well-formed lines (a flag and its value), so the commands get past argparse.
options = st.lists(st.one_of(st.tuples(st.sampled_from(VALUED), values),
                             st.tuples(st.sampled_from(SWITCHES))), max_size=4).map(
    lambda pairs: [token for pair in pairs for token in pair])
prompts = st.one_of(st.just([]), values.map(lambda v: [v]))


@settings(max_examples=200, database=None, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(COMMANDS), prompts, options)
def test_any_command_line_ends_with_a_status(monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str],
                                             command: str, prompt: list[str],
                                             args: list[str]) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("def f():"))
    # As Python's own stderr does: arguments the OS could not decode arrive as surrogates
    # (PEP 383), and messages quoting them must still print.
    monkeypatch.setattr(sys, "stderr", io.TextIOWrapper(io.BytesIO(), encoding="utf-8",
                                                        errors="backslashreplace"))
    try:
        code = main([command, *prompt, *args])
    except SystemExit as exc:  # argparse: --version, or a usage error
        code = exc.code
    finally:
        capsys.readouterr()
    assert code in (0, 1, 2)
