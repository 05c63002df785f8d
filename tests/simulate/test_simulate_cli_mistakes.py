"""`simulate` mistakes fail at once, before the simulation, with what to do; `--json` numbers
carry no float noise."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from starcoder_router._cli import main
from starcoder_router._simulate import simulate
from starcoder_router._simulate.workload import parse_lines

ONE_REQUEST = '{"timestamp": 0, "kind": "completion", "prompt_tokens": 10}\n'


def _no_simulation(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("the simulation ran before the mistake was reported")

    monkeypatch.setattr("starcoder_router._simulate.runner.simulate", refuse)


@pytest.mark.parametrize(("content", "why"), [
    ("", "it is empty"),
    ("\n\n", "it is empty"),
    ('{"kind": "fim"}\nnot json\n', "none of its 2 lines is a valid request"),
])
def test_a_workload_without_a_valid_request_is_an_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, why: str) -> None:
    path = tmp_path / "w.jsonl"
    path.write_text(content, encoding="utf-8")
    for extra in ([], ["--json"]):
        assert main(["simulate", str(path), *extra]) == 2
        err = capsys.readouterr().err
        assert f"error: nothing to simulate in {path}: {why}" in err


def test_an_unwritable_report_fails_before_simulating(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "w.jsonl"
    path.write_text(ONE_REQUEST, encoding="utf-8")
    _no_simulation(monkeypatch)
    report = tmp_path / "missing-folder" / "report.html"
    assert main(["simulate", str(path), "--report", str(report)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot write {report}: No such file or directory")
    assert "cannot read" not in err


def test_a_report_check_leaves_no_file_behind(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("", encoding="utf-8")
    report = tmp_path / "report.html"
    assert main(["simulate", str(path), "--report", str(report)]) == 2
    assert not report.exists()
    report.write_text("earlier report", encoding="utf-8")
    assert main(["simulate", str(path), "--report", str(report)]) == 2
    assert report.read_text(encoding="utf-8") == "earlier report"
    capsys.readouterr()


def test_a_report_without_plotly_fails_before_simulating(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "w.jsonl"
    path.write_text(ONE_REQUEST, encoding="utf-8")
    _no_simulation(monkeypatch)
    monkeypatch.setitem(sys.modules, "plotly.graph_objects", None)
    assert main(["simulate", str(path), "--report", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err
    assert "starcoder-router[report]" in err and "cannot read" not in err
    assert not os.path.exists(tmp_path / "r.html")


def test_an_unwritable_workload_output_says_write(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a.py").write_text("def f():\n    return 1\n" * 20, encoding="utf-8")
    out = tmp_path / "nowhere" / "w.jsonl"
    assert main(["workload", "from-code", str(tmp_path), "--requests", "3", "-o", str(out)]) == 2
    assert f"error: cannot write {out}" in capsys.readouterr().err


def _decimals(value: float) -> int:
    text = repr(value)
    return len(text.partition(".")[2]) if "e" not in text else 99


def test_json_numbers_carry_no_float_noise(capsys: pytest.CaptureFixture[str]) -> None:
    workload = Path(__file__).parents[2] / "examples" / "workload.jsonl"
    lines = workload.read_text(encoding="utf-8").splitlines()[:1500]
    result = simulate(parse_lines(lines).requests)
    for s in result.summaries:
        money = [s.cost_usd, *s.cost_by_tenant_usd.values()]
        assert all(_decimals(v) <= 9 for v in money), money
        for latency in (s.latency_p50_s, s.latency_p99_s):
            assert latency is None or _decimals(latency) <= 4
        assert s.quality is None or _decimals(s.quality) <= 2
        assert all(_decimals(at) <= 3 for at in s.budget_exhausted_at_s.values())
    assert main(["simulate", str(workload), "--json", "--policy", "configured"]) == 0
    data = json.loads(capsys.readouterr().out)
    for value in data["policies"][0].values():
        if isinstance(value, float):
            assert _decimals(value) <= 9, value
