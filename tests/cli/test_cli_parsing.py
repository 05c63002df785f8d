"""How the command line reads its arguments and presents itself: no prefix matching, defaults in
`--help`, a fast `--help` and `--version`, and each error said once."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from starcoder_router._cli import _parser, main


def _parsers(p: argparse.ArgumentParser, name: str = "starcoder-router",
             ) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield name, p
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {sub_name}")


ALL_PARSERS = list(_parsers(_parser()))


@pytest.mark.parametrize(("name", "parser"), ALL_PARSERS, ids=[n for n, _ in ALL_PARSERS])
def test_no_parser_accepts_an_abbreviated_option(name: str,
                                                 parser: argparse.ArgumentParser) -> None:
    assert parser.allow_abbrev is False, name


def test_an_abbreviated_option_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["route", "x", "--max-token", "5"])
    assert exc.value.code == 2
    assert "unrecognized arguments: --max-token" in capsys.readouterr().err


@pytest.mark.parametrize(("name", "parser"), ALL_PARSERS, ids=[n for n, _ in ALL_PARSERS])
def test_help_shows_every_default(name: str, parser: argparse.ArgumentParser) -> None:
    text = " ".join(parser.format_help().split())
    for action in parser._actions:
        if (action.default is None or action.default is False
                or action.default in ([], argparse.SUPPRESS) or not action.option_strings):
            continue
        assert f"(default: {action.default})" in text, (name, action.option_strings)


def test_workload_from_code_help_shows_its_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["workload", "from-code", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for shown in ("(default: 1000)", "(default: 0)", "(default: 1.0)",
                  "(default: ide=0.6,review-bot=0.3,batch=0.1)"):
        assert shown in out
    assert "(default: None)" not in out and "(default: False)" not in out


@pytest.mark.parametrize("flag", ["--help", "--version"])
def test_help_and_version_load_no_heavy_module(flag: str) -> None:
    """`--help` must not pay for pydantic, httpx or aiohttp (it took most of a second)."""
    code = ("import sys\nfrom starcoder_router._cli import main\n"
            f"try:\n    main([{flag!r}])\nexcept SystemExit:\n    pass\n"
            "heavy = sorted({m.split('.')[0] for m in sys.modules} & "
            "{'pydantic', 'aiohttp', 'httpx', 'sqlite3', 'tomllib', 'multidict', 'asyncio',"
            " 'socket', 'multiprocessing'})\n"
            "print('HEAVY', heavy, file=sys.stderr)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    assert "HEAVY []" in done.stderr


def test_a_command_help_loads_no_heavy_module_either() -> None:
    code = ("import sys\nfrom starcoder_router._cli import main\n"
            "try:\n    main(['simulate', '--help'])\nexcept SystemExit:\n    pass\n"
            "print('HEAVY', sorted({m.split('.')[0] for m in sys.modules} & "
            "{'pydantic', 'aiohttp', 'httpx'}), file=sys.stderr)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    assert "HEAVY []" in done.stderr


def test_no_route_gives_each_reason_once(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["route", "x", "--min-quality", "humaneval:99"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("humaneval 31.7 < 99") == 1
    assert "error: no deployment can serve this request" in err


def test_the_tokenizer_notice_is_for_the_command_line_and_said_once(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    monkeypatch.delenv("STARCODER_ROUTER_TOKENIZER", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    assert main(["route", "def f():"]) == 0
    out, err = capsys.readouterr()
    assert "tokenizer" not in err  # a short prompt fits by its byte length: nothing estimated
    assert "token counts: proven bounds" in out
    prompt = tmp_path / "long.py"
    prompt.write_text("x = 1\n" * 2000, encoding="utf-8")
    assert main(["route", "--prompt-file", str(prompt)]) == 0
    out, err = capsys.readouterr()
    assert err.count("no StarCoder 2 tokenizer found") == 1
    assert "--tokenizer PATH" in err and "tokenizer=<path" not in err
    assert "pip install" not in err  # the extra is installed here
    assert "token counts: estimated" in out and "no StarCoder 2 tokenizer" not in out


# Every numeric option with a value it cannot take: the command must stop at parsing, naming
# the flag, before it prints, opens, truncates or binds anything.
_NUMBER_COMMANDS = {
    ("route",): ["x"], ("complete",): ["x"], ("discover",): [], ("fake-server",): [],
    ("workload", "from-code"): ["."], ("serve",): [],
}
_BAD_NUMBERS = ["nan", "inf", "-1", "abc"]
_NUMERIC = [
    (cmd, action.option_strings[-1])
    for name, parser in ALL_PARSERS
    for cmd in [tuple(name.split()[1:])] if cmd in _NUMBER_COMMANDS
    for action in parser._actions
    if action.option_strings and action.type is not None
    and action.option_strings[-1] not in ("--min-quality", "--seed")
]


def test_the_numeric_options_are_all_checked() -> None:
    assert {flag for _, flag in _NUMERIC} >= {
        "--max-tokens", "--max-cost", "--temperature", "--timeout", "--port", "--latency",
        "--requests", "--rate", "--workers"}


@pytest.mark.parametrize(("cmd", "flag"), _NUMERIC, ids=[" ".join((*c, f)) for c, f in _NUMERIC])
@pytest.mark.parametrize("value", _BAD_NUMBERS)
def test_a_numeric_option_refuses_a_value_it_cannot_take(
        capsys: pytest.CaptureFixture[str], cmd: tuple[str, ...], flag: str,
        value: str) -> None:
    if value == "-1" and flag == "--latency":
        value = "-0.5"
    with pytest.raises(SystemExit) as exc:
        main([*cmd, *_NUMBER_COMMANDS[cmd], f"{flag}={value}"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: want " in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize(("cmd", "value"), [(("serve",), "65536"), (("fake-server",), "70000")])
def test_a_port_past_65535_is_a_usage_error(capsys: pytest.CaptureFixture[str],
                                            cmd: tuple[str, ...], value: str) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*cmd, "--port", value])
    assert exc.value.code == 2
    assert "argument --port: want a port number from 0 to 65535" in capsys.readouterr().err


def test_temperature_past_2_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["complete", "x", "--temperature", "2.5"])
    assert "argument --temperature: want a number from 0 to 2" in capsys.readouterr().err


def test_python_dash_m_runs_the_command_line() -> None:
    """`python -m starcoder_router` is the console script, for a venv whose bin is not on PATH."""
    from starcoder_router import __version__

    done = subprocess.run([sys.executable, "-m", "starcoder_router", "--version"],
                          capture_output=True, text=True, timeout=60, check=False,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"starcoder-router {__version__}\n"
