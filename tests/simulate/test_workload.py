"""Workload files: valid lines run, invalid ones are reported with their line number, and token
counts become synthetic text that the router counts, fits and trims to exactly those sizes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from starcoder_router import EstimatingCounter
from starcoder_router._errors import InvalidRequestError
from starcoder_router._routing.fit import PromptCounts, fit_prompt
from starcoder_router._routing.render import render
from starcoder_router._simulate.synthetic import SyntheticCounter, synthetic_lines
from starcoder_router._simulate.workload import WorkloadRequest, parse_lines, read_workload

COUNTER = SyntheticCounter(EstimatingCounter())


def test_invalid_lines_are_reported_by_number_and_the_rest_still_run(tmp_path: Any) -> None:
    lines = [
        '{"timestamp": 5, "kind": "fim", "prefix_tokens": 100, "suffix_tokens": 20}',
        "{not json",
        "[1, 2]",
        "",
        '{"timestamp": 1, "kind": "completion"}',
        '{"timestamp": 2, "kind": "completion", "prompt": "x", "prompt_tokens": 3}',
        '{"timestamp": 3, "kind": "fim", "prompt_tokens": 3}',
        '{"timestamp": 4, "kind": "teleport", "prompt_tokens": 3}',
        '{"timestamp": -1, "kind": "completion", "prompt_tokens": 3}',
        '{"timestamp": 0, "kind": "chat", "prompt": "explain", "tenant": "a", "tags": ["x"]}',
        '{"timestamp": 0.5, "kind": "completion", "prompt_tokens": 3, "colour": "red"}',
        '{"timestamp": 0.5, "kind": "structured", "prompt_tokens": 30, "output_tokens": 7}',
        '{"timestamp": NaN, "kind": "completion", "prompt_tokens": 3}',
        '{"timestamp": Infinity, "kind": "completion", "prompt_tokens": 3}',
    ]
    path = tmp_path / "w.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    workload = read_workload(path)
    assert [e.line for e in workload.errors] == [2, 3, 5, 6, 7, 8, 9, 11, 13, 14]
    assert "not JSON" in workload.errors[0].message
    assert "prompt or prompt_tokens" in workload.errors[2].message
    assert "exactly one" in workload.errors[3].message
    assert "colour" in workload.errors[7].message
    # In arrival order, not file order.
    assert [r.timestamp for r in workload.requests] == [0, 0.5, 5]
    assert [r.kind for r in workload.requests] == ["chat", "structured", "fim"]
    assert workload.requests[1].output_tokens == 7


@pytest.mark.parametrize("tokens", [0, 1, 11, 12, 13, 100, 8191, 20_000])
@pytest.mark.parametrize("cursor", [True, False])
def test_synthetic_text_counts_exactly(tokens: int, cursor: bool) -> None:
    text = synthetic_lines(tokens, cursor=cursor)
    assert COUNTER.count(text) == tokens
    assert sum(COUNTER.count_many(text.splitlines(keepends=True))) == tokens


def test_a_counts_request_renders_to_its_sizes_plus_the_format() -> None:
    plain = WorkloadRequest(timestamp=0, kind="fim", prefix_tokens=700, suffix_tokens=50)
    with_files = plain.model_copy(update={"file_tokens": (300, 200)})
    n_plain = COUNTER.count(render(plain.to_request()).prompt)
    n_files = COUNTER.count(render(with_files.to_request()).prompt)
    # FIM frame: <fim_prefix>, <fim_suffix>, <fim_middle>; each file adds <file_sep>, its path
    # and a newline; with files the current file's path opens the prefix.
    assert n_plain == 750 + 3
    assert 3 + 3 < n_files - (750 + 500) <= 30
    prompt = WorkloadRequest(timestamp=0, kind="completion", prompt_tokens=321)
    assert COUNTER.count(render(prompt.to_request()).prompt) == 321


def test_trimming_a_counts_request_lands_on_the_window() -> None:
    req = WorkloadRequest(timestamp=0, kind="fim", prefix_tokens=9000, suffix_tokens=2000,
                          file_tokens=(1500,), max_tokens=128).to_request()
    fit = fit_prompt(render(req), window=8192, max_tokens=128, counts=PromptCounts(COUNTER))
    assert fit.trimmed is not None  # type: ignore[union-attr]
    assert fit.trimmed.dropped_files == ("f0.py",)  # type: ignore[union-attr]
    assert 8192 - 128 - 40 <= fit.prompt_tokens <= 8192 - 128  # whole lines of 12 go
    assert COUNTER.count(fit.rendered.prompt) == fit.prompt_tokens  # type: ignore[union-attr]


def test_text_lines_are_checked_as_the_router_would() -> None:
    workload = parse_lines([
        json.dumps({"timestamp": 0, "kind": "fim", "prefix": "def f(", "suffix": ")\n",
                    "files": [{"path": "util.py", "text": "X = 1\n"}]}),
        json.dumps({"timestamp": 0, "kind": "completion", "prompt": "x", "max_tokens": 0}),
    ])
    assert len(workload.requests) == 1
    req = workload.requests[0].to_request()
    assert req.kind == "fim" and req.files[0].path == "util.py"
    assert [e.line for e in workload.errors] == [2]
    with pytest.raises(InvalidRequestError):
        WorkloadRequest(timestamp=0, kind="fim", prefix_tokens=1, file_tokens=(-1,))


_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=20), st.lists(st.integers(-3, 50), max_size=3))
_KEYS = st.sampled_from(["timestamp", "kind", "prompt", "prefix", "suffix", "files",
                         "prompt_tokens", "prefix_tokens", "suffix_tokens", "file_tokens",
                         "max_tokens", "tenant", "tags", "output_tokens", "other"])
_KINDS = st.sampled_from(["completion", "fim", "chat", "structured", "x"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(
    st.text(max_size=40),
    st.dictionaries(_KEYS, _VALUES, max_size=6).map(json.dumps),
    st.fixed_dictionaries({"timestamp": st.floats(0, 1e6), "kind": _KINDS},
                          optional={"prompt_tokens": st.integers(0, 40_000),
                                    "prefix_tokens": st.integers(0, 40_000),
                                    "suffix_tokens": st.integers(0, 5000),
                                    "max_tokens": st.integers(-1, 4096)}).map(json.dumps),
), max_size=8))
def test_any_input_is_a_request_or_a_numbered_error(lines: list[str]) -> None:
    workload = parse_lines(lines)
    numbered = {e.line for e in workload.errors}
    assert numbered <= set(range(1, len(lines) + 1))
    blank = sum(1 for line in lines if not line.strip())
    assert len(workload.requests) + len(workload.errors) == len(lines) - blank
    for r in workload.requests:
        req = r.to_request()
        if r.input_tokens is not None:
            assert COUNTER.count(render(req).prompt) >= r.input_tokens
