"""The gateway through Python clients people put in front of it: LiteLLM (its OpenAI-compatible
provider), LangChain's OpenAI and Ollama integrations. openai, ollama and huggingface_hub have
their own files (test_openai_protocol.py, test_ollama_protocol.py, test_tgi_protocol.py)."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

# LiteLLM fetches its price map from the network when imported unless told to use its own copy.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm
from langchain_ollama import OllamaLLM
from langchain_openai import ChatOpenAI, OpenAI

LONG = "x = 1\n" * 3000


@pytest.fixture(scope="module", autouse=True)
def _litellm_leaves_nothing_open() -> Iterator[None]:
    """LiteLLM keeps its clients in a module cache and sets an event loop on the calling
    thread, for its process exit to clean up; close them here, or their sockets and the loop
    warn (as errors) in whichever test the garbage collector happens to run."""
    # LiteLLM prints its own DEBUG lines (the gateway tests run every logger at DEBUG for the
    # log scan): its records still reach the scan, its own handlers print only warnings.
    for handler in logging.getLogger("LiteLLM").handlers:
        handler.setLevel(logging.WARNING)
    yield
    cache = litellm.in_memory_llm_clients_cache
    try:
        loop = asyncio.get_event_loop_policy().get_event_loop()
    except RuntimeError:  # a later test cleared this thread's loop: close the clients on a new one
        loop = asyncio.new_event_loop()
    loop.run_until_complete(litellm.close_litellm_async_clients())
    for client in list(cache.cache_dict.values()):
        close = getattr(client, "close", None)
        if callable(close) and not asyncio.iscoroutinefunction(close):
            close()
    cache.flush_cache()
    loop.close()
    asyncio.set_event_loop(None)


def test_litellm_completion_and_stream(serve: Any, upstream: Any) -> None:
    gw = serve()
    common = {"model": "openai/starcoder2-3b", "api_base": gw.url + "/v1", "api_key": "unused",
              "max_tokens": 8, "num_retries": 0}
    out = litellm.text_completion(prompt="def add(a, b):", **common)
    assert out.choices[0].text == "return a + b"
    assert upstream.bodies[-1]["prompt"] == "def add(a, b):"
    chat = litellm.completion(messages=[{"role": "user", "content": "add two numbers"}],
                              **{**common, "model": "openai/starcoder2-15b-instruct"})
    assert chat.choices[0].message.content == "return a + b"
    parts = litellm.completion(messages=[{"role": "user", "content": "add"}], stream=True,
                               **{**common, "model": "openai/starcoder2-15b-instruct"})
    assert "".join(p.choices[0].delta.content or "" for p in parts) == "return a + b"


def test_litellm_context_window_exceeded(serve: Any) -> None:
    # LiteLLM's context-window fallbacks key on this exception, which it picks by message text
    gw = serve()
    with pytest.raises(litellm.ContextWindowExceededError):
        litellm.completion(model="openai/starcoder2", api_base=gw.url + "/v1", api_key="unused",
                           messages=[{"role": "user", "content": LONG}], max_tokens=16,
                           num_retries=0)


def test_langchain_openai(serve: Any, upstream: Any) -> None:
    gw = serve()
    with httpx.Client(timeout=10) as http:  # closed here: LangChain never closes its own
        llm = OpenAI(model="starcoder2-3b", base_url=gw.url + "/v1", api_key="unused",
                     max_tokens=8, max_retries=0, http_client=http)
        assert llm.invoke("def add(a, b):") == "return a + b"
        assert "".join(llm.stream("def add(a, b):")) == "return a + b"
        chat = ChatOpenAI(model="starcoder2-15b-instruct", base_url=gw.url + "/v1",
                          api_key="unused", max_tokens=8, max_retries=0, http_client=http)
        assert chat.invoke("add two numbers").content == "return a + b"
        assert "".join(str(c.content) for c in chat.stream("add")) == "return a + b"
    assert "### Instruction\nadd" in upstream.bodies[-1]["prompt"]  # the instruct template


def test_langchain_ollama(serve: Any, upstream: Any) -> None:
    gw = serve()
    llm = OllamaLLM(model="starcoder2:3b", base_url=gw.url, num_predict=8)
    try:
        assert llm.invoke("def add(a, b):") == "return a + b"
        assert "".join(llm.stream("def add(a, b):")) == "return a + b"
    finally:
        llm._client._client.close()  # its httpx pool would warn when collected
    assert upstream.bodies[-1]["model"] == "mock-starcoder2-3b"
