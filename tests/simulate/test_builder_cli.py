"""`workload from-code` and `simulate` on the command line: real code, the real tokenizer, a fixed
seed; counts that match the code they came from; a JSON summary with the API's numbers."""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from starcoder_router import ConfigError, MissingDependencyError, TokenizerCounter
from starcoder_router._cli import main
from starcoder_router._simulate.builder import build_from_code
from starcoder_router._simulate.cli import _Progress, _tenants
from starcoder_router._simulate.runner import simulate
from starcoder_router._simulate.workload import parse_lines, read_workload

STDLIB = Path(os.__file__).parent


@pytest.fixture(scope="module")
def code(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small project: a few real standard-library modules in two folders."""
    root = tmp_path_factory.mktemp("project")
    for folder, names in {"pkg": ("textwrap.py", "bisect.py", "heapq.py"),
                          "tools": ("shlex.py", "fnmatch.py")}.items():
        (root / folder).mkdir()
        for name in names:
            (root / folder / name).write_text((STDLIB / name).read_text(encoding="utf-8"),
                                              encoding="utf-8")
    (root / "notes.txt").write_text("not code", encoding="utf-8")
    return root


def test_counts_match_the_code_they_were_taken_from(code: Path,
                                                    exact_counter: TokenizerCounter) -> None:
    counts = list(build_from_code(code, requests=60, counter=exact_counter, seed=7))
    texts = list(build_from_code(code, requests=60, counter=exact_counter, seed=7,
                                 keep_text=True))
    assert counts == list(build_from_code(code, requests=60, counter=exact_counter, seed=7))
    assert counts != list(build_from_code(code, requests=60, counter=exact_counter, seed=8))
    kinds = set()
    for c_line, t_line in zip(counts, texts, strict=True):
        c, t = json.loads(c_line), json.loads(t_line)
        kinds.add((c["kind"], bool(c.get("file_tokens"))))
        assert (c["timestamp"], c["tenant"], c["max_tokens"]) == \
               (t["timestamp"], t["tenant"], t["max_tokens"])
        if "prompt_tokens" in c:
            assert c["prompt_tokens"] == exact_counter.count(t["prompt"])
        else:
            assert c["prefix_tokens"] == exact_counter.count(t["prefix"])
            assert c["suffix_tokens"] == exact_counter.count(t["suffix"])
            assert c.get("file_tokens", []) == [exact_counter.count(f["text"])
                                                for f in t.get("files", [])]
            # The cursor sits in a real file: prefix + suffix are a slice of one of them.
            joined = t["prefix"] + t["suffix"]
            assert any(joined in p.read_text(encoding="utf-8") for p in code.rglob("*.py"))
    assert {("fim", False), ("fim", True), ("completion", False),
            ("structured", False)} <= kinds
    source = "".join(p.read_text(encoding="utf-8") for p in code.rglob("*.py"))
    assert "def " in source and "def " not in "".join(counts)  # no code kept
    assert not parse_lines(counts).errors and not parse_lines(texts).errors


def test_arrivals_follow_the_rate_and_tenants_the_mix(code: Path) -> None:
    from starcoder_router import EstimatingCounter

    lines = [json.loads(x) for x in build_from_code(
        code, requests=2000, counter=EstimatingCounter(), seed=1, rate=4.0,
        tenants={"a": 3, "b": 1})]
    assert 2000 / 4.0 * 0.9 < lines[-1]["timestamp"] < 2000 / 4.0 * 1.1
    share = sum(1 for x in lines if x["tenant"] == "a") / len(lines)
    assert 0.7 < share < 0.8


def test_the_commands_end_to_end(code: Path, tmp_path: Path, tokenizer_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    workload = tmp_path / "w.jsonl"
    assert main(["workload", "from-code", str(code), "--requests", "200", "--seed", "3",
                 "--rate", "2", "--tokenizer", str(tokenizer_path), "-o", str(workload)]) == 0
    with workload.open("a", encoding="utf-8") as f:
        f.write('{"timestamp": 1, "kind": "fim"}\n')
    report = tmp_path / "report.html"
    assert main(["simulate", str(workload), "--json", "--report", str(report)]) == 0
    out, err = capsys.readouterr()
    data = json.loads(out)
    assert "w.jsonl:201: skipped:" in err and "\r" not in err  # no progress bar when piped
    assert data["requests"] == 200 and data["invalid_lines"][0]["line"] == 201
    assert [p["name"] for p in data["policies"]] == ["configured", "largest", "7b",
                                                     "cheapest-summed", "no-trim"]
    api = simulate(read_workload(workload).requests)
    for got, want in zip(data["policies"], api.summaries, strict=True):
        assert got["cost_usd"] == want.cost_usd
        assert got["requests_by_deployment"] == want.requests_by_deployment
        assert got["refused"] == want.refused
    assert report.stat().st_size > 1_000_000 and "Plotly.newPlot" in report.read_text()

    assert main(["simulate", str(workload), "--policy", "largest", "--policy", "7b"]) == 0
    out, _ = capsys.readouterr()
    assert "largest" in out and "7b" in out and "configured" not in out


def test_the_progress_bar_shows_only_on_a_terminal() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty, pipe = Tty(), io.StringIO()
    for out in (tty, pipe):
        bar = _Progress(out, 4000)
        bar.update("configured", 1000)
        bar.update("configured", 4000)
        bar.close()
    assert "[#######" in tty.getvalue() and "4000/4000" in tty.getvalue()
    assert pipe.getvalue() == ""


def test_the_report_names_its_extra_when_plotly_is_missing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from starcoder_router._simulate.report import render_report

    monkeypatch.setitem(sys.modules, "plotly.graph_objects", None)
    result = simulate(parse_lines(['{"timestamp": 0, "kind": "completion", '
                                   '"prompt_tokens": 10}']).requests)
    with pytest.raises(MissingDependencyError, match=r"starcoder-router\[report\]"):
        render_report(result, workload_name="w")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_any_tenant_mix_is_weights_or_a_config_error(spec: str) -> None:
    try:
        weights = _tenants(spec)
    except ConfigError:
        return
    assert weights and all(name and 0 < w < float("inf") for name, w in weights.items())


@pytest.mark.parametrize("spec", ["a=nan", "a=inf", "a=-1", "a=0", "=1", "a=1,,b=2", ""])
def test_bad_tenant_mixes_are_refused(spec: str) -> None:
    with pytest.raises(ConfigError):
        _tenants(spec)


def test_a_folder_without_code_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("x", encoding="utf-8")
    assert main(["workload", "from-code", str(tmp_path), "--requests", "3"]) == 2
    assert main(["workload", "from-code", str(tmp_path / "missing")]) == 2
    assert main(["workload", "from-code", str(tmp_path), "--tenants", "a=x"]) == 2
    (tmp_path / "a.py").write_text("x = 1\n", encoding="utf-8")
    with pytest.raises(SystemExit) as exc:  # a usage error, before anything is built
        main(["workload", "from-code", str(tmp_path), "--rate", "nan"])
    assert exc.value.code == 2


@pytest.mark.parametrize("folder", ["missing", "empty"])
def test_a_failed_build_leaves_the_output_file_as_it_was(tmp_path: Path, folder: str,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    (tmp_path / "empty").mkdir()
    out = tmp_path / "workload.jsonl"
    out.write_text('{"an": "earlier workload"}\n', encoding="utf-8")
    assert main(["workload", "from-code", str(tmp_path / folder), "-o", str(out)]) == 2
    assert "error: " in capsys.readouterr().err
    assert out.read_text(encoding="utf-8") == '{"an": "earlier workload"}\n'
    fresh = tmp_path / "new.jsonl"
    assert main(["workload", "from-code", str(tmp_path / folder), "-o", str(fresh)]) == 2
    assert not fresh.exists()
