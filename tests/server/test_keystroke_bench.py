"""A smoke run of `benchmarks/bench_keystrokes.py`: one short typing session (llm-vscode-like),
with the autocomplete features off and on, through real gateways to the benchmark's stand-in. It
checks the harness works end to end (every keystroke replayed, requests answered, the
upstream's books kept), not the figures, which BENCHMARKS.md reports from full runs."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _bench() -> Any:
    name = "bench_keystrokes"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.mark.timeout(60)
def test_a_short_replay_runs_through_the_gateway() -> None:
    result = _bench().measure(quick=True, sessions=1, keys=6, accuracies=(0.3,), slow=False,
                              clients=("llm-vscode",), out=lambda _: None)
    runs = {r["run"]: r for r in result["results"]}
    assert set(runs) == {"llm-vscode-off-30", "llm-vscode-on-30"}
    for r in runs.values():
        assert r["keystrokes"] == 6 and r["errors"] == 0, r
    off = runs["llm-vscode-off-30"]
    assert off["editor_requests"] > 0 and off["upstream_per_1k"] > 0
    assert off["tokens_in_per_1k"] > 0 and off["usd_per_1k"] > 0
    assert "## Editor keystroke replay" in _bench().section(result)
