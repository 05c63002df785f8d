"""llama.cpp discovery when a server lists several models (router mode): `/v1/models` gives only
`n_ctx_train`, so the served window of each comes from its own `/props?model=<id>`."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import respx

from starcoder_router import discover_local

LLAMA = "http://localhost:8080"
IDS = ("starcoder2-3b-Q8_0.gguf", "models/starcoder2-15b-Q4_K_M.gguf")


def entry(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "owned_by": "llamacpp",
            "meta": {"n_vocab": 49152, "n_ctx_train": 16384}}


def props(n_ctx: int) -> httpx.Response:
    return httpx.Response(200, json={"default_generation_settings": {"n_ctx": n_ctx},
                                     "total_slots": 1})


@pytest.fixture
def mock() -> Any:
    with respx.mock(assert_all_called=False) as router:
        yield router


def test_each_listed_model_gets_the_window_its_props_give(mock: respx.MockRouter) -> None:
    mock.get(f"{LLAMA}/v1/models").respond(200, json={"object": "list",
                                                      "data": [entry(i) for i in IDS]})
    mock.post(f"{LLAMA}/tokenize").respond(200, json={"tokens": [5, 6, 1]})
    per_model = {
        IDS[0]: mock.get(f"{LLAMA}/props", params={"model": IDS[0]}).mock(
            return_value=props(8192)),
        IDS[1]: mock.get(f"{LLAMA}/props", params={"model": IDS[1]}).mock(
            return_value=props(4096)),
    }
    mock.get(f"{LLAMA}/props").mock(return_value=props(2048))  # the router's own, no model

    found = discover_local(addresses={"llamacpp": LLAMA}, env={})

    assert {d.model: (d.variant, d.context_window) for d in found} == {
        IDS[0]: ("starcoder2-3b", 8192), IDS[1]: ("starcoder2-15b", 4096)}
    assert all(route.call_count == 1 for route in per_model.values())
    assert str(per_model[IDS[1]].calls.last.request.url) == \
        f"{LLAMA}/props?model=models%2Fstarcoder2-15b-Q4_K_M.gguf"


def test_a_model_whose_props_fail_is_left_out(mock: respx.MockRouter) -> None:
    mock.get(f"{LLAMA}/v1/models").respond(200, json={"object": "list",
                                                      "data": [entry(i) for i in IDS]})
    mock.post(f"{LLAMA}/tokenize").respond(200, json={"tokens": [5, 6, 1]})
    mock.get(f"{LLAMA}/props", params={"model": IDS[0]}).mock(return_value=props(8192))
    mock.get(f"{LLAMA}/props", params={"model": IDS[1]}).respond(503, json={"error": {
        "code": 503, "message": "Loading model", "type": "unavailable_error"}})
    mock.get(f"{LLAMA}/props").mock(return_value=props(2048))

    found = discover_local(addresses={"llamacpp": LLAMA}, env={})

    # Its training window (16384) is not the window it is served with: no guess.
    assert [(d.model, d.context_window) for d in found] == [(IDS[0], 8192)]
