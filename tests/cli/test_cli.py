"""The command line: offline catalog and routing, spend reports."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest

from starcoder_router import LedgerEntry, SQLiteStore
from starcoder_router._cli import main


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_catalog_lists_the_default_deployments(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "catalog")
    assert code == 0
    for line in ("fireworks/starcoder2-3b", "accounts/fireworks/models/starcoder2-7b",
                 "deepinfra/starcoder2-15b"):
        assert line in out
    assert "0.60" in out and "provisioned" in out


def test_catalog_variants(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "catalog", "--variants")
    assert code == 0
    assert "starcoder2-15b-instruct" in out and "humaneval 72.6" in out


def test_route_explains_offline_without_keys(capsys: pytest.CaptureFixture[str],
                                             tokenizer_path: Path) -> None:
    code, out, _ = run(capsys, "route", "def fib(n):", "--max-tokens", "64",
                       "--tokenizer", str(tokenizer_path))
    assert code == 0
    assert "chosen" in out and "fireworks/starcoder2-3b" in out.splitlines()[3]
    assert "token counts: proven bounds" in out


def test_route_with_policy_flags(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    before = tmp_path / "before.py"
    after = tmp_path / "after.py"
    before.write_text("def add(a, b):\n    ")
    after.write_text("\n\nprint(add(1, 2))\n")
    code, out, _ = run(capsys, "route", "--prefix-file", str(before), "--suffix-file",
                       str(after), "--min-quality", "humaneval:40")
    assert code == 0
    assert "mode: fim" in out
    assert "deepinfra/starcoder2-15b" in out.splitlines()[3]
    assert "refused: humaneval 31.7 < 40" in out


def test_route_with_no_possible_route_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "route", "x", "--require-keys")
    assert code == 2
    assert "FIREWORKS_API_KEY" in err and "error:" in err


def test_spend_report_from_sqlite(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    db = tmp_path / "spend.db"
    store = SQLiteStore(str(db))
    when = dt.datetime(2026, 11, 26, 9, tzinfo=dt.UTC)
    for i, (tenant, cost) in enumerate([("acme", 1_500_000), ("acme", 500_000),
                                        ("globex", 250_000)]):
        store.record([], cost, LedgerEntry(
            request_id=f"r{i}", time=when, deployment="fireworks/starcoder2-3b",
            provider="fireworks", model="m", prompt_tokens=10, completion_tokens=5,
            cost_nano=cost, outcome="ok", tenant=tenant))
    store.close()
    code, out, _ = run(capsys, "spend", "--store", "sqlite", "--path", str(db), "--by", "tenant")
    assert code == 0
    assert "acme" in out and "globex" in out
    assert "0.002000" in out or "0.0020" in out


def test_console_script_is_installed() -> None:
    out = subprocess.run([sys.executable, "-m", "starcoder_router._cli", "catalog"],
                         capture_output=True, text=True, check=True)
    assert "deepinfra/starcoder2-15b" in out.stdout


def test_route_with_a_config_and_flags(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    db = tmp_path / "spend.db"
    config = tmp_path / "router.toml"
    config.write_text(
        "[[deployments]]\nprovider = 'ollama'\nvariant = 'starcoder2-15b'\nmodel = 'sc2:15b'\n"
        f"context_window = 16384\n\n[store]\nkind = 'sqlite'\npath = '{db}'\n")
    code, out, _ = run(capsys, "route", "def f():", "--config", str(config),
                       "--min-quality", "humaneval:40")
    assert code == 0
    # The flag tightened the file's policy and the file's deployment is still there.
    assert "ollama/starcoder2-15b" in out.splitlines()[3]
    assert "refused: humaneval 31.7 < 40" in out
    assert not db.exists()  # routing opened no spend store
