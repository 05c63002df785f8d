"""The TGI protocol, driven by Hugging Face's `InferenceClient.text_generation` as llm-vscode's
users configure it (a URL as the model), and by raw requests in llm-ls's shape."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from huggingface_hub import InferenceClient
from huggingface_hub.errors import ValidationError

FIM = "<fim_prefix>def add(a, b):\n    <fim_suffix>\n<fim_middle>"


def test_generate(serve: Any, upstream: Any) -> None:
    gw = serve()
    client = InferenceClient(model=gw.url + "/generate", timeout=10)
    text = client.text_generation(FIM, max_new_tokens=8, stop=["\n\n"])
    assert text == "return a + b"
    body = upstream.bodies[-1]
    assert body["prompt"] == FIM  # llm-ls writes the FIM sentinels itself
    assert body["max_tokens"] == 8
    assert body["stop"][0] == "\n\n"
    assert body["temperature"] == 0.0  # TGI is greedy unless do_sample


def test_generate_with_details(serve: Any) -> None:
    gw = serve()
    out = InferenceClient(model=gw.url + "/generate", timeout=10).text_generation(
        "def f():", max_new_tokens=2, details=True)
    assert out.generated_text == "return a"
    assert out.details is not None
    assert out.details.finish_reason == "eos_token"
    assert out.details.generated_tokens == 2


def test_generate_stream(serve: Any, upstream: Any) -> None:
    gw = serve()
    client = InferenceClient(model=gw.url + "/generate_stream", timeout=10)
    tokens = list(client.text_generation(FIM, max_new_tokens=8, stream=True))
    assert "".join(tokens) == "return a + b"
    events = list(client.text_generation(FIM, max_new_tokens=8, stream=True, details=True))
    assert events[-1].generated_text == "return a + b"
    assert events[-1].details is not None
    assert events[-1].details.generated_tokens == 4
    assert upstream.bodies[-1]["stream"] is True


def test_llm_ls_request_shape(serve: Any, upstream: Any) -> None:
    # What llm-ls sends to a TGI backend: inputs with the sentinels, parameters, stream false.
    gw = serve()
    r = httpx.post(gw.url + "/generate", json={
        "inputs": FIM, "parameters": {"max_new_tokens": 60, "temperature": 0.2,
                                      "do_sample": True, "top_p": 0.95},
    }, timeout=10)
    assert r.status_code == 200
    assert r.json() == {"generated_text": "return a + b"}
    assert r.headers["x-starcoder-router-deployment"] == "mock/starcoder2-3b"
    body = upstream.bodies[-1]
    assert (body["temperature"], body["top_p"], body["max_tokens"]) == (0.2, 0.95, 60)


def test_errors_are_tgi_shaped(serve: Any) -> None:
    gw = serve()
    r = httpx.post(gw.url + "/generate", json={"inputs": 3}, timeout=10)
    assert r.status_code == 400
    assert r.json()["error_type"] == "validation"
    # the client reads error_type and raises its own class for it
    with pytest.raises(ValidationError, match="maximum context length is 2048 tokens"):
        InferenceClient(model=gw.url + "/generate", timeout=10).text_generation(
            "x = 1\n" * 3000, max_new_tokens=8)
