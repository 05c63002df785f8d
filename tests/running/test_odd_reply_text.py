"""Reply text that is not valid Unicode (a lone surrogate, which JSON's "\\udfff" decodes to) is
costed like any other text, in every mode, and never leaves a budget hold behind."""

from __future__ import annotations

import json

import httpx
import pytest
import respx
from faults.fault_support import TrackingStore, budget_policy

from starcoder_router import Catalog, Deployment
from support.router_driver import Driver

BASE = "http://127.0.0.1:9/v1"
DEP = Deployment(name="odd/local", provider="openai-compatible", variant="starcoder2-3b",
                 model="m", context_window=8192, base_url=BASE, input_usd_per_mtok=1.0,
                 output_usd_per_mtok=2.0)
TEXT = "ab\\udfffcd"  # as JSON writes it: a lone low surrogate between ab and cd


def _sse(*events: str) -> httpx.Response:
    body = "".join(f"data: {e}\n\n" for e in (*events, "[DONE]"))
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)


def _chunk(text: str, finish: str | None) -> str:
    return ('{"id": "c", "model": "m", "choices": [{"index": 0, "text": "' + text
            + '", "finish_reason": ' + json.dumps(finish) + "}]}")


@pytest.mark.parametrize("usage", [False, True])
async def test_a_lone_surrogate_in_a_stream_is_costed_and_frees_its_hold(
        drive: Driver, usage: bool) -> None:
    store = TrackingStore()
    events = [_chunk(TEXT, None), _chunk("", "stop")]
    if usage:
        events.append('{"id": "c", "choices": [], "usage": {"prompt_tokens": 3, '
                      '"completion_tokens": 4, "total_tokens": 7}}')
    with respx.mock(assert_all_called=False) as mock:
        mock.post(f"{BASE}/completions").mock(side_effect=lambda _: _sse(*events))
        router = drive.new_router(catalog=Catalog.default().with_deployments(DEP),
                                  policy=budget_policy("openai-compatible"), store=store,
                                  env={}, tokenizer=False)
        chunks, completion = await drive.stream(router, prompt="def f():", max_tokens=16)
        assert "".join(c.text for c in chunks) == "ab\udfffcd"
        assert completion.finish_reason == "stop" and completion.cost_nano > 0
        mock.post(f"{BASE}/completions").mock(return_value=httpx.Response(200, content=(
            '{"id": "c", "model": "m", "choices": [{"index": 0, "text": "' + TEXT
            + '", "finish_reason": "stop"}]}').encode()))
        plain = await drive.complete(router, prompt="def f():", max_tokens=16)
        assert plain.text == "ab\udfffcd" and plain.cost_nano > 0
    store.assert_balanced()


@pytest.mark.parametrize("stream", [False, True])
async def test_a_failure_to_cost_a_reply_still_frees_its_hold(
        drive: Driver, monkeypatch: pytest.MonkeyPatch, stream: bool) -> None:
    """Whatever goes wrong while a reply is costed (here: every costing step fails), the hold
    is released, not left reserved until its time-to-live."""
    from starcoder_router._running.run import RequestRun

    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("costing failed")

    monkeypatch.setattr(RequestRun, "succeeded", broken)
    monkeypatch.setattr(RequestRun, "partial_cost", broken)
    store = TrackingStore()
    with respx.mock(assert_all_called=False) as mock:
        mock.post(f"{BASE}/completions").mock(side_effect=lambda _: _sse(
            _chunk("pass", None), _chunk("", "stop")) if stream else httpx.Response(
                200, json={"id": "c", "model": "m", "choices": [
                    {"index": 0, "text": "pass", "finish_reason": "stop"}]}))
        router = drive.new_router(catalog=Catalog.default().with_deployments(DEP),
                                  policy=budget_policy("openai-compatible"), store=store,
                                  env={}, tokenizer=False)
        with pytest.raises(RuntimeError, match="costing failed"):
            if stream:
                await drive.stream(router, prompt="def f():", max_tokens=16)
            else:
                await drive.complete(router, prompt="def f():", max_tokens=16)
    assert not store.open, store.open_holds()
