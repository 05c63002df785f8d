"""End to end: the official clients → the gateway → a real llama-server (a tiny StarCoder 2
model with the real vocabulary, whose every token is " x"), with exact token counts."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import ollama
import openai
import pytest

from starcoder_router import Catalog, Deployment, RetryPolicy, TokenizerCounter

pytestmark = pytest.mark.integration

LLAMA_DIR = Path(__file__).resolve().parents[1] / "real_servers"


def _llama_fixtures() -> Any:
    # The llama-server fixtures live in tests/real_servers/conftest.py: reused, not copied.
    name = "server_tests_llama_fixtures"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, LLAMA_DIR / "conftest.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


_fixtures = _llama_fixtures()
llama_server_bin = _fixtures.llama_server_bin
start_llama_server = _fixtures.start_llama_server
tiny_gguf_constant = _fixtures.tiny_gguf_constant
llama_server_constant = _fixtures.llama_server_constant

PREFIX, SUFFIX = "def add(a, b):\n    ", "\n\nprint(add(1, 2))\n"


@pytest.fixture
def llama_gateway(serve: Any, llama_server_constant: Any, exact_counter: TokenizerCounter) -> Any:
    dep = Deployment(provider="llamacpp", variant="starcoder2-3b",
                     model=llama_server_constant.model_id,
                     context_window=llama_server_constant.n_ctx,
                     base_url=llama_server_constant.base_url,
                     capabilities=frozenset({"completion", "fim", "streaming"}))
    catalog = Catalog(variants=Catalog.default().variants, deployments=(dep,))
    return serve(catalog=catalog, tokenizer=exact_counter, retry=RetryPolicy(max_retries=0))


def test_openai_client_through_the_gateway_to_llama_server(
        llama_gateway: Any, exact_counter: TokenizerCounter) -> None:
    with openai.OpenAI(base_url=llama_gateway.url + "/v1", api_key="x", max_retries=0,
                       timeout=30) as client:
        raw = client.completions.with_raw_response.create(
            model="starcoder2", prompt=PREFIX, suffix=SUFFIX, max_tokens=5)
        c = raw.parse()
        assert c.choices[0].text == " x" * 5
        assert c.choices[0].finish_reason == "length"
        assert c.usage is not None
        psm = f"<fim_prefix>{PREFIX}<fim_suffix>{SUFFIX}<fim_middle>"
        assert c.usage.prompt_tokens == exact_counter.count(psm)  # the server's own count
        assert raw.headers["x-starcoder-router-deployment"] == "llamacpp/starcoder2-3b"
        chunks = list(client.completions.create(
            model="starcoder2-3b", prompt="def f():", max_tokens=4, stream=True,
            stream_options={"include_usage": True}))
        assert "".join(ch.choices[0].text for ch in chunks if ch.choices) == " x" * 4
        assert chunks[-1].usage is not None
        assert chunks[-1].usage.completion_tokens == 4


def test_ollama_client_through_the_gateway_to_llama_server(llama_gateway: Any) -> None:
    client = ollama.Client(host=llama_gateway.url, timeout=30)
    try:
        parts = list(client.generate(model="starcoder2", prompt=PREFIX, suffix=SUFFIX,
                                     stream=True, options={"num_predict": 3}))
        assert "".join(p.response for p in parts) == " x" * 3
        assert parts[-1].done_reason == "length"
    finally:
        client._client.close()
