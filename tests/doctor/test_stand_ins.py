"""The stand-ins themselves: the provider quirks they copy show to a client that does not do
what the router's adapters do (the doctor tests show the router's requests avoid them)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from support.stand_ins import StandIn, base_url, stand_in


@pytest.fixture
def fireworks() -> Iterator[StandIn]:
    with stand_in("fireworks", window=64) as si:
        yield si


def _post(si: StandIn, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(base_url(si) + "/completions", json=body, timeout=10)


def test_fireworks_lowers_max_tokens_unless_told_to_refuse(fireworks: StandIn) -> None:
    # Its default `context_length_exceeded_behavior` is "truncate": max_tokens is lowered to fit.
    body = {"model": "m", "prompt": " x" * 60, "max_tokens": 16}
    quiet = _post(fireworks, body)
    assert quiet.status_code == 200
    assert quiet.json()["usage"]["completion_tokens"] <= 4
    refused = _post(fireworks, {**body, "context_length_exceeded_behavior": "error"})
    assert refused.status_code == 400 and "model maximum context length: 64" in refused.text
    # A prompt over the window is refused either way.
    assert _post(fireworks, {**body, "prompt": " x" * 70}).status_code == 400


@pytest.mark.parametrize("provider", ["vllm", "deepinfra", "lmstudio", "openai-compatible"])
def test_a_stream_reports_usage_only_when_asked(provider: str) -> None:
    with stand_in(provider) as si:
        def final_usage(extra: dict[str, Any]) -> Any:
            body = {"model": si.behaviour.model, "prompt": "def", "max_tokens": 4,
                    "stream": True, **extra}
            with httpx.stream("POST", base_url(si) + "/completions", json=body,
                              timeout=10) as r:
                events = [json.loads(line[6:]) for line in r.iter_lines()
                          if line.startswith("data: {")]
            return events[-1].get("usage")

        assert final_usage({}) is None
        asked = final_usage({"stream_options": {"include_usage": True}})
        assert asked["prompt_tokens"] == 1
