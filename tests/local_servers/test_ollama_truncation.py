"""The truncation check on its own: when Ollama's `prompt_eval_count` proves (or strongly
suggests) the prompt was cut, and when it must stay quiet because our count is not exact."""

from __future__ import annotations

import json

import pytest

from starcoder_router import CompletionRequest
from starcoder_router._providers.call import Call, Endpoint, WireResponse
from starcoder_router._providers.ollama import Ollama, truncation_warning
from starcoder_router._routing.render import render
from starcoder_router._routing.tokens import CountKind
from support.local_replies import OLLAMA, ollama_dep, ollama_done


def call(sent: int | None, kind: CountKind | None, *, api: str | None = None,
         window: int = 4096) -> Call:
    request = CompletionRequest(prompt="def f():\n    return 1\n", max_tokens=8)
    return Call(ollama_dep(api=api, window=window), request, render(request),  # type: ignore[arg-type]
                Endpoint("ollama", OLLAMA), sent, kind)


@pytest.mark.parametrize(
    ("sent", "kind", "evaluated", "warns"),
    [
        (1000, "exact", 1000, False),
        (1000, "exact", 990, False),   # within 1%: tokenizer drift, not proof
        (1000, "exact", 989, True),
        (50, "exact", 49, True),       # 1% of 50 rounds down to nothing
        (1000, "exact", 1001, False),  # a BOS token the server added
        (1000, "bound", 300, False),   # a byte bound is usually 3x the true count
        (1000, "estimate", 500, False),
        (1000, None, 500, False),
        (None, None, 500, False),
        (1000, "exact", None, False),
    ],
)
def test_only_an_exact_count_proves_a_shortfall(sent: int | None, kind: CountKind | None,
                                                evaluated: int | None, warns: bool) -> None:
    assert (truncation_warning(call(sent, kind), evaluated, num_ctx=16384) is not None) is warns


@pytest.mark.parametrize("kind", ["exact", "bound", "estimate", None])
def test_a_full_window_warns_whatever_the_count(kind: CountKind | None) -> None:
    msg = truncation_warning(call(100, kind), 4096, num_ctx=4096)
    assert msg is not None and "4096" in msg


@pytest.mark.parametrize(("sent", "warns"), [(3000, True), (2050, False), (2000, False)])
def test_half_window_cut_needs_a_larger_count(sent: int, warns: bool) -> None:
    # 4 + (4096 - 4) // 2 = 2050: a legitimate 2,050-token prompt must not be flagged.
    msg = truncation_warning(call(sent, "bound"), 2050, num_ctx=4096)
    assert (msg is not None) is warns


def test_openai_api_has_no_window_to_compare() -> None:
    assert truncation_warning(call(100, "bound"), 4096, num_ctx=None) is None
    assert truncation_warning(call(100, "exact"), 50, num_ctx=None) is not None


def test_parse_adds_the_warning_to_the_result() -> None:
    body = json.dumps(ollama_done("x", prompt_eval=700)).encode()
    result = Ollama().parse(call(1000, "exact"), WireResponse(200, {}, body))
    [warning] = result.warnings
    assert "evaluated 700 of the prompt's 1000 tokens" in warning


def test_openai_api_parse_checks_exact_counts_too() -> None:
    body = json.dumps({"choices": [{"text": "x", "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": 700, "completion_tokens": 1}}).encode()
    result = Ollama().parse(call(1000, "exact", api="openai"), WireResponse(200, {}, body))
    assert len(result.warnings) == 1
