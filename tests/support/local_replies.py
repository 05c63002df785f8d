"""Helpers for the Ollama and llama.cpp adapter tests: deployments, routers and canned replies.

Ollama replies are written from its documented shapes (Ollama's docs/api.md: no Ollama server can
run here); llama.cpp replies are the bodies recorded from a real llama-server in
tests/local_servers/fixtures/llamacpp.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import httpx

from starcoder_router import (
    Catalog,
    Deployment,
    FakeClock,
    RetryPolicy,
    Router,
    TokenCounter,
)

OLLAMA = "http://localhost:11434"
LLAMA = "http://localhost:8080"
FIXTURES = Path(__file__).resolve().parents[1] / "local_servers" / "fixtures" / "llamacpp"

FIM_STOPS = ["<file_sep>", "<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<|endoftext|>"]
PROMPT_STOPS = ["<file_sep>", "<|endoftext|>"]

Api = Literal["openai", "native"] | None


def ollama_dep(api: Api = None, window: int = 16384) -> Deployment:
    return Deployment(provider="ollama", variant="starcoder2-3b", model="starcoder2:3b",
                      context_window=window, api=api)


def llama_dep(api: Api = None, window: int = 16384) -> Deployment:
    return Deployment(provider="llamacpp", variant="starcoder2-3b", model="starcoder2-3b",
                      context_window=window, api=api,
                      capabilities=frozenset({"completion", "fim", "streaming",
                                              "structured_output"}))


def structured(dep: Deployment) -> Deployment:
    return dep.model_copy(update={"capabilities": dep.capabilities | {"structured_output"}})


def catalog(*deps: Deployment) -> Catalog:
    return Catalog.default().with_deployments(*deps)


def router_options(*deps: Deployment, counter: TokenCounter | None = None,
                   env: dict[str, str] | None = None, retries: int = 0) -> dict[str, Any]:
    """What `Router` and `AsyncRouter` take for these deployments: an explicit `env`, no
    retries, a fake clock and no tokenizer unless `counter` is given."""
    return {"catalog": catalog(*deps), "env": env or {}, "retry": RetryPolicy(max_retries=retries),
            "tokenizer": counter if counter is not None else False, "clock": FakeClock()}


def sync_router(*deps: Deployment, counter: TokenCounter | None = None,
                env: dict[str, str] | None = None, retries: int = 0) -> Router:
    return Router(**router_options(*deps, counter=counter, env=env, retries=retries))


def body_of(route: Any) -> Any:
    """The JSON body of the last request a respx route received."""
    return json.loads(route.calls.last.request.content)


# -- Ollama --------------------------------------------------------------------------------------


def ollama_done(text: str = "return a + b", *, prompt_eval: int | None = 12, evals: int = 4,
                reason: str | None = "stop") -> dict[str, Any]:
    """The final (or only) `/api/generate` object, as Ollama's docs show it."""
    done: dict[str, Any] = {
        "model": "starcoder2:3b", "created_at": "2026-11-26T06:00:00.000000Z",
        "response": text, "done": True,
        "total_duration": 5_043_500_667, "load_duration": 5_025_959,
        "prompt_eval_duration": 325_953_000, "eval_count": evals,
        "eval_duration": 4_709_213_000,
    }
    if prompt_eval is not None:
        done["prompt_eval_count"] = prompt_eval
    if reason is not None:
        done["done_reason"] = reason
    return done


def ollama_reply(text: str = "return a + b", **kw: Any) -> httpx.Response:
    return httpx.Response(200, json=ollama_done(text, **kw))


def ndjson(*lines: dict[str, Any]) -> httpx.Response:
    body = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    return httpx.Response(200, content=body, headers={"content-type": "application/x-ndjson"})


def ollama_stream(*texts: str, prompt_eval: int = 12, reason: str = "stop") -> httpx.Response:
    parts = [{"model": "starcoder2:3b", "created_at": "2026-11-26T06:00:00Z", "response": t,
              "done": False} for t in texts]
    return ndjson(*parts, ollama_done("", prompt_eval=prompt_eval, evals=len(texts),
                                      reason=reason))


def ollama_error(status: int, message: str) -> httpx.Response:
    return httpx.Response(status, json={"error": message})


# -- llama.cpp -----------------------------------------------------------------------------------


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def llama_json(name: str) -> httpx.Response:
    status = 400 if name.startswith("error") else 200
    return httpx.Response(status, content=fixture(name),
                          headers={"content-type": "application/json"})


def llama_sse(name: str) -> httpx.Response:
    return httpx.Response(200, content=fixture(name), headers={"content-type": "text/event-stream"})


def llama_error(status: int, kind: str, message: str, **extra: Any) -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": status, "message": message,
                                                  "type": kind, **extra}})


def infill_reply(echo: str, text: str = " x x") -> httpx.Response:
    """An `/infill` answer echoing `echo` as the prompt the server built."""
    data = json.loads(fixture("infill.json"))
    data.update(content=text, prompt=echo)
    return httpx.Response(200, json=data)
