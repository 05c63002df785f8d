"""A raw prompt that carries StarCoder 2's FIM sentinels is a fill-in-the-middle request, in
every protocol: it goes only to FIM-capable deployments and gets the FIM stops."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from starcoder_router import CostPolicy

FIM = "<fim_prefix>def add(a, b):\n    <fim_suffix>\n<fim_middle>"
FIM_STOPS = {"<file_sep>", "<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<|endoftext|>"}

REQUESTS: dict[str, tuple[str, dict[str, Any]]] = {
    "tgi": ("/generate", {"inputs": FIM, "parameters": {"max_new_tokens": 8}}),
    "tgi-stream": ("/generate_stream", {"inputs": FIM, "parameters": {"max_new_tokens": 8}}),
    "openai": ("/v1/completions", {"model": "starcoder2", "prompt": FIM, "max_tokens": 8}),
    "ollama": ("/api/generate", {"model": "starcoder2", "prompt": FIM, "raw": True,
                                 "stream": False, "options": {"num_predict": 8}}),
}


@pytest.fixture
def cheap_instruct(serve: Any, catalog_of: Any) -> Any:
    # The instruct deployment takes raw completions too, and is the cheapest: without the FIM
    # check, a FIM prompt would land on it.
    catalog = catalog_of("starcoder2-7b", "starcoder2-15b-instruct")
    deployments = tuple(
        d.model_copy(update={"capabilities": d.capabilities | {"completion"},
                             "input_usd_per_mtok": 0.01, "output_usd_per_mtok": 0.01})
        if "instruct" in d.variant else d for d in catalog.deployments)
    return serve(catalog=catalog.model_copy(update={"deployments": deployments}),
                 policy=CostPolicy(objective="cheapest"))


@pytest.mark.parametrize("protocol", sorted(REQUESTS))
def test_raw_fim_prompt_needs_a_fim_deployment(cheap_instruct: Any, upstream: Any,
                                               protocol: str) -> None:
    path, body = REQUESTS[protocol]
    r = httpx.post(cheap_instruct.url + path, json=body, timeout=10)
    assert r.status_code == 200, r.text
    sent = upstream.bodies[-1]
    assert sent["model"] == "mock-starcoder2-7b"
    assert sent["prompt"] == FIM
    assert set(sent["stop"]) >= FIM_STOPS


@pytest.mark.parametrize("protocol", ["tgi", "openai", "ollama"])
def test_plain_raw_prompt_may_use_any_completion_deployment(cheap_instruct: Any,
                                                            upstream: Any,
                                                            protocol: str) -> None:
    path, body = REQUESTS[protocol]
    plain = {k: ("def add(a, b):" if v == FIM else v) for k, v in body.items()}
    r = httpx.post(cheap_instruct.url + path, json=plain, timeout=10)
    assert r.status_code == 200, r.text
    sent = upstream.bodies[-1]
    assert sent["model"] == "mock-starcoder2-15b-instruct"
    assert "<fim_middle>" not in sent["stop"]
