"""Mistral's FIM route `POST /v1/fim/completions`, in the shapes of Codestral's API
(https://docs.mistral.ai/api/#tag/fim): a chat-completion-shaped answer, chat chunks when
streamed. Continue's adapters call it (tests/server/test_js_clients.py drives them)."""

from __future__ import annotations

import json
from typing import Any

import httpx

FIM_PROMPT = "<fim_prefix>def add(a, b):\n    <fim_suffix>\n<fim_middle>"


def test_fim_completion(serve: Any, upstream: Any) -> None:
    gw = serve()
    r = httpx.post(gw.url + "/v1/fim/completions", json={
        "model": "starcoder2-3b", "prompt": "def add(a, b):\n    ", "suffix": "\n",
        "max_tokens": 8, "min_tokens": 1, "stop": "\n\n", "temperature": 0.2, "top_p": 0.9,
        "random_seed": 7}, timeout=10)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["object"] == "chat.completion"
    assert out["model"] == "starcoder2-3b"
    assert out["choices"] == [{"index": 0, "finish_reason": "stop",
                               "message": {"role": "assistant", "content": "return a + b"}}]
    assert out["usage"]["completion_tokens"] == 4
    sent = upstream.bodies[-1]
    assert sent["prompt"] == FIM_PROMPT
    assert (sent["max_tokens"], sent["temperature"], sent["top_p"], sent["seed"]) == (
        8, 0.2, 0.9, 7)
    assert sent["stop"][0] == "\n\n"
    assert "<fim_middle>" in sent["stop"]


def test_fim_stream(serve: Any, upstream: Any) -> None:
    gw = serve()
    r = httpx.post(gw.url + "/v1/fim/completions", json={
        "model": "starcoder2", "prompt": "def add(a, b):\n    ", "suffix": "\n",
        "max_completion_tokens": 8, "stream": True}, timeout=10)
    assert r.headers["content-type"].startswith("text/event-stream")
    lines = [ln[6:] for ln in r.text.splitlines() if ln.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    chunks = [json.loads(ln) for ln in lines[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "return a + b"
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert upstream.bodies[-1]["max_tokens"] == 8
    assert upstream.bodies[-1]["prompt"] == FIM_PROMPT


def test_fim_without_suffix_and_errors(serve: Any, upstream: Any) -> None:
    gw = serve()
    r = httpx.post(gw.url + "/v1/fim/completions",
                   json={"model": "starcoder2", "prompt": "x = "}, timeout=10)
    assert r.status_code == 200
    assert upstream.bodies[-1]["prompt"] == "<fim_prefix>x = <fim_suffix><fim_middle>"
    r = httpx.post(gw.url + "/v1/fim/completions", json={"model": "starcoder2"}, timeout=10)
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "prompt"
    r = httpx.post(gw.url + "/v1/fim/completions", json={"model": "codestral", "prompt": "x"},
                   timeout=10)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "model_not_found"
