"""Context overflow in OpenAI's and vLLM's words on every protocol, with the real numbers:
LiteLLM recognises it by this text alone (litellm/litellm_core_utils/
exception_mapping_utils.py), and openai 3.x puts only the message in the exception's text."""

from __future__ import annotations

import re
from typing import Any

import httpx
import openai
import pytest
from upstream import Reply

from starcoder_router import RetryPolicy

LONG = "x = 1\n" * 3000
PATTERN = re.compile(
    r"This model's maximum context length is (\d+) tokens\. However, you requested (\d+) "
    r"tokens \((\d+) in the messages, (\d+) in the completion\)\. Please reduce the length of "
    r"the messages or completion\.")


def _numbers(message: str, completion: int) -> None:
    found = PATTERN.fullmatch(message)
    assert found, message
    window, total, prompt, out = map(int, found.groups())
    assert window == 2048  # the largest window of the deployments tried
    assert out == completion
    assert total == prompt + out
    assert prompt + out > window
    assert prompt > 0


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions",
                                  "/v1/fim/completions", "/api/generate", "/generate"])
def test_every_protocol_words_it_alike(serve: Any, path: str) -> None:
    gw = serve()
    body: dict[str, Any] = {
        "/v1/completions": {"model": "starcoder2", "prompt": LONG, "max_tokens": 16},
        "/v1/chat/completions": {"model": "starcoder2", "max_tokens": 16,
                                 "messages": [{"role": "user", "content": LONG}]},
        # FIM trims its context to fit; what cannot fit is max_tokens itself
        "/v1/fim/completions": {"model": "starcoder2", "prompt": "def f(", "suffix": "",
                                "max_tokens": 4000},
        "/api/generate": {"model": "starcoder2", "prompt": LONG, "stream": False,
                          "options": {"num_predict": 16}},
        "/generate": {"inputs": LONG, "parameters": {"max_new_tokens": 16}},
    }[path]
    r = httpx.post(gw.url + path, json=body, timeout=10)
    assert r.status_code == 400
    error = r.json()["error"]
    if isinstance(error, dict):  # the OpenAI shape keeps its code
        assert error["code"] == "context_length_exceeded"
        error = error["message"]
    _numbers(error, 4000 if "fim" in path else 16)


def test_openai_client_exception_text(serve: Any) -> None:
    gw = serve()
    c = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0, timeout=10)
    with c, pytest.raises(openai.BadRequestError) as info:
        c.completions.create(model="starcoder2", prompt=LONG, max_tokens=16)
    assert info.value.code == "context_length_exceeded"
    assert "This model's maximum context length is 2048 tokens." in str(info.value)


def test_upstream_overflow_keeps_the_words(serve: Any, upstream: Any) -> None:
    # the deployment's own error (as llama.cpp words it): the gateway's message still says
    # "maximum context length is", which clients match
    gw = serve(retry=RetryPolicy(max_retries=0))
    upstream.script(*[Reply(status=400, error="the request exceeds the available context size, "
                            "try increasing it")] * 6)
    r = httpx.post(gw.url + "/v1/completions",
                   json={"model": "starcoder2-3b", "prompt": "x", "max_tokens": 4}, timeout=10)
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "context_length_exceeded"
    assert error["message"].startswith("This model's maximum context length is")
