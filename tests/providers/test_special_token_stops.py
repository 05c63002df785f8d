"""Special-token stops (`<file_sep>`, `<|endoftext|>`, the FIM sentinels) on every backend: the
exact request each one gets, so the stop fires on the server and not only on our side.

Each test runs through `Router` and `AsyncRouter(transport="httpx")` (the `drive` fixture).
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import respx

from starcoder_router import Deployment
from starcoder_router._routing.render import SPECIAL_TOKEN_IDS, SPECIAL_TOKENS
from support.provider_replies import (
    COMPLETIONS_URL,
    DEPLOYMENTS,
    FIM_STOPS,
    ProviderDriver,
    body_of,
)

REPO_FIM = {"prefix": "def f(", "suffix": ")\n", "files": [{"path": "a.py", "text": "x = 1\n"}],
            "path": "b.py", "max_tokens": 16}
REPLY = {"id": "c", "model": "m", "choices": [{"index": 0, "text": "a", "finish_reason": "stop"}],
         "usage": {"prompt_tokens": 20, "completion_tokens": 1, "total_tokens": 21}}
LLAMA = Deployment(provider="llamacpp", variant="starcoder2-3b", model="starcoder2-3b",
                   context_window=4096, base_url="http://localhost:8080",
                   capabilities=frozenset({"completion", "fim", "streaming"}))
OLLAMA = Deployment(provider="ollama", variant="starcoder2-3b", model="starcoder2:3b",
                    context_window=4096, capabilities=frozenset({"completion", "fim"}))


def test_special_token_ids_are_starcoder2s() -> None:
    # Fixed by the vocabulary (tokenizer.json `added_tokens`, ids 0-37), checked against it.
    assert SPECIAL_TOKEN_IDS["<|endoftext|>"] == 0
    assert SPECIAL_TOKEN_IDS["<file_sep>"] == 6
    assert [SPECIAL_TOKEN_IDS[t] for t in SPECIAL_TOKENS] == list(range(38))


def test_special_token_ids_match_the_tokenizer(tokenizer_path: Path) -> None:
    tokenizers = pytest.importorskip("tokenizers")
    tok = tokenizers.Tokenizer.from_file(str(tokenizer_path))
    assert {t: tok.token_to_id(t) for t in SPECIAL_TOKENS} == SPECIAL_TOKEN_IDS


async def test_vllm_gets_special_stops_as_token_ids(drive: ProviderDriver,
                                                    mock: respx.MockRouter) -> None:
    route = mock.post(COMPLETIONS_URL["vllm"]).respond(200, json=REPLY)
    router = drive.router("vllm")

    await drive.complete(router, **REPO_FIM, stop=["\n\n"])

    body = body_of(route)
    # vLLM matches stop strings on text decoded without special tokens: ids are what fire.
    assert body["stop_token_ids"] == [6, 1, 2, 3, 0]
    assert body["stop"] == ["\n\n"]
    assert "skip_special_tokens" not in body


V1_SSE = ('data: {"id":"c","model":"m","choices":[{"index":0,"text":"a","finish_reason":"stop"}],'
          '"usage":{"prompt_tokens":20,"completion_tokens":1,"total_tokens":21}}\n\n'
          'data: [DONE]\n\n')
NATIVE = {"content": "a", "stop": True, "stop_type": "word", "stopping_word": "<file_sep>",
          "tokens_evaluated": 20, "tokens_predicted": 1, "model": "starcoder2-3b"}


def llama_reply(path: str, stream: bool) -> httpx.Response:
    if not stream:
        return httpx.Response(200, json=REPLY if path.startswith("/v1") else NATIVE)
    body = V1_SSE if path.startswith("/v1") else f"data: {json.dumps(NATIVE)}\n\n"
    return httpx.Response(200, content=body.encode(),
                          headers={"content-type": "text/event-stream"})


@pytest.mark.parametrize(("api", "path", "stream"), [
    (None, "/v1/completions", False), (None, "/v1/completions", True),
    ("native", "/infill", False), ("native", "/infill", True),
])
async def test_llamacpp_is_asked_to_render_the_special_stops(
        drive: ProviderDriver, mock: respx.MockRouter, api: str | None, path: str,
        stream: bool) -> None:
    route = mock.post("http://localhost:8080" + path).mock(return_value=llama_reply(path, stream))
    router = drive.router("llamacpp", deployment=LLAMA.model_copy(update={"api": api}),
                          env={})

    if stream:
        _, completion = await drive.stream(router, **REPO_FIM, stream=True)
    else:
        completion = await drive.complete(router, **REPO_FIM)

    body = body_of(route)
    # Without `preserved_tokens` llama.cpp renders no control token into the text its stop
    # strings are matched on, and a `<file_sep>` stop never fires.
    assert body["stop"] == FIM_STOPS
    assert body["preserved_tokens"] == FIM_STOPS
    assert (completion.text, completion.finish_reason) == ("a", "stop")


async def test_tgi_gets_the_special_stops_as_strings_four_at_most(
        drive: ProviderDriver, mock: respx.MockRouter) -> None:
    route = mock.post(COMPLETIONS_URL["tgi"]).respond(200, json=REPLY)
    router = drive.router("tgi")

    await drive.complete(router, **REPO_FIM)

    # TGI decodes special tokens into the text it matches stops on (its stream's last chunk
    # carries them), so strings fire; `--max-stop-sequences` defaults to 4.
    assert body_of(route)["stop"] == FIM_STOPS[:4]


async def test_lmstudio_gets_every_stop_as_a_string(drive: ProviderDriver,
                                                    mock: respx.MockRouter) -> None:
    route = mock.post(COMPLETIONS_URL["lmstudio"]).respond(200, json=REPLY)
    router = drive.router("lmstudio", deployment=DEPLOYMENTS["lmstudio"])

    await drive.complete(router, **REPO_FIM)

    assert body_of(route)["stop"] == FIM_STOPS


async def test_ollama_gets_every_stop_in_its_options(drive: ProviderDriver,
                                                     mock: respx.MockRouter) -> None:
    route = mock.post("http://localhost:11434/api/generate").respond(200, json={
        "model": "starcoder2:3b", "response": "a", "done": True, "done_reason": "stop",
        "prompt_eval_count": 20, "eval_count": 1})
    router = drive.router("ollama", deployment=OLLAMA, env={})

    await drive.complete(router, **REPO_FIM)

    assert body_of(route)["options"]["stop"] == FIM_STOPS
