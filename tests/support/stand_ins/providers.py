"""One stand-in per provider: its paths, its reply shapes and its error wordings, over the shared
core. Wordings are the ones the providers document or send (see each adapter's docstring in
starcoder_router/_providers/).

    with stand_in("fireworks", window=4096) as fw:
        ... point providers.fireworks.base_url at fw.url ...
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from .core import TOKEN_PATTERN, Behaviour, StandIn, count, generate, ndjson, sse

ErrorReply = tuple[int, dict[str, Any]]

# The default behaviour of each provider: its stop limit and what it does with special tokens.
DEFAULTS: dict[str, Behaviour] = {
    "fireworks": Behaviour(model="accounts/fireworks/models/starcoder2-7b", window=8192,
                           max_stop=4, retry_after="1"),
    "deepinfra": Behaviour(model="bigcode/starcoder2-15b", window=16384, max_stop=4,
                           cost_per_mtok=(0.20, 0.60)),
    "ollama": Behaviour(model="starcoder2:3b", window=16384),
    "vllm": Behaviour(model="bigcode/starcoder2-3b", window=16384, specials="hidden"),
    "llamacpp": Behaviour(model="starcoder2-3b.gguf", window=4096, specials="hidden",
                          bos_tokens=0),
    "tgi": Behaviour(model="bigcode/starcoder2-3b", window=4096, max_stop=4),
    "lmstudio": Behaviour(model="starcoder2-3b", window=4096),
    "openai-compatible": Behaviour(model="starcoder2-3b", window=8192),
}

# Where each provider's base URL points, under the stand-in's root.
BASE_PATHS = {"fireworks": "/inference/v1", "deepinfra": "/v1/openai", "ollama": "",
              "vllm": "/v1", "llamacpp": "", "tgi": "/v1", "lmstudio": "/v1",
              "openai-compatible": "/v1"}


def _overflow(provider: str, prompt: int, max_tokens: int, window: int) -> ErrorReply:
    total = prompt + max_tokens
    if provider == "fireworks":
        return 400, {"error": {"object": "error", "type": "invalid_request_error",
                               "message": f"The prompt is too long: {prompt}, model maximum "
                                          f"context length: {window}"}}
    if provider == "llamacpp":
        return 400, {"error": {"code": 400, "type": "exceed_context_size_error",
                               "message": "the request exceeds the available context size, "
                                          "try increasing it",
                               "n_prompt_tokens": prompt, "n_ctx": window}}
    if provider == "tgi":
        return 422, {"error": f"`inputs` tokens + `max_new_tokens` must be <= {window}. "
                              f"Given: {prompt} `inputs` tokens and {max_tokens} "
                              "`max_new_tokens`", "error_type": "validation"}
    if provider == "lmstudio":
        return 400, {"error": f"Trying to keep the first {prompt} tokens when context the "
                              f"overflows. However, the model is loaded with context length "
                              f"of only {window} tokens, which is not enough."}
    if provider == "vllm":
        return 400, {"error": {"message": f"You passed {prompt} input tokens and requested "
                                          f"{max_tokens} output tokens. However, the model's "
                                          f"context length is only {window} tokens.",
                               "type": "BadRequestError", "code": 400}}
    # DeepInfra and generic OpenAI-compatible servers: the older vLLM wording, without a number
    # for the openai-compatible one (some servers say only that much).
    if provider == "openai-compatible":
        return 400, {"error": {"message": "prompt is longer than the context window"}}
    return 400, {"error": {"message": f"This model's maximum context length is {window} tokens. "
                                      f"However, you requested {total} tokens ({prompt} in the "
                                      f"messages, {max_tokens} in the completion)."}}


def _too_many_stops(provider: str, given: int, limit: int) -> ErrorReply:
    if provider == "deepinfra":
        return 422, {"detail": [{"loc": ["body", "stop"], "type": "value_error",
                                 "msg": f"ensure this value has at most {limit} items"}]}
    if provider == "tgi":
        return 422, {"error": f"`stop` supports up to {limit} stop sequences. Given: {given}",
                     "error_type": "validation"}
    return 400, {"error": {"message": f"stop: at most {limit} sequences are allowed"}}


def _pieces(text: str) -> list[str]:
    return TOKEN_PATTERN.findall(text) or ([text] if text else [])


def _cost(b: Behaviour, prompt: int, completion: int) -> float | None:
    if b.cost_per_mtok is None:
        return None
    return (prompt * b.cost_per_mtok[0] + completion * b.cost_per_mtok[1]) / 1e6


def _check(si: StandIn, stops: list[str], prompt: int, max_tokens: int,
           room: Callable[[int, int], bool]) -> tuple[web.Response | None, int]:
    """A refusal for too many stops or an overflow, else None and the prompt count read."""
    b = si.behaviour
    if b.max_stop is not None and len(stops) > b.max_stop:
        status, body = _too_many_stops(si.provider, len(stops), b.max_stop)
        return web.json_response(body, status=status), prompt
    if not room(prompt, max_tokens):
        if b.truncates:
            return None, b.window - 1
        status, body = _overflow(si.provider, prompt, max_tokens, b.window)
        return web.json_response(body, status=status), prompt
    return None, prompt


# Streams that end with a usage chunk only when `stream_options.include_usage` asks for one, as
# OpenAI's completions API defines it (platform.openai.com/docs/api-reference/completions) and
# vLLM implements it (vllm/entrypoints/openai/serving_completion.py).
USAGE_WHEN_ASKED = {"vllm", "deepinfra", "lmstudio", "openai-compatible"}


def _fits(window: int, provider: str) -> Callable[[int, int], bool]:
    if provider in ("llamacpp", "ollama"):
        return lambda prompt, _: prompt < window  # the prompt must leave room for a token
    return lambda prompt, max_tokens: prompt + max_tokens <= window


async def openai(si: StandIn, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    b = si.behaviour
    stops = body.get("stop") or []
    stops = [stops] if isinstance(stops, str) else list(stops)
    max_tokens = int(body.get("max_tokens") or 16)
    prompt = count(str(body.get("prompt", "")), b) + b.bos_tokens
    if si.provider == "fireworks" and body.get("context_length_exceeded_behavior") != "error" \
            and prompt < b.window:
        # Its default, "truncate", lowers max_tokens to what the window leaves (the
        # `context_length_exceeded_behavior` parameter, docs.fireworks.ai/api-reference).
        max_tokens = min(max_tokens, b.window - prompt)
    refusal, prompt = _check(si, stops, prompt, max_tokens, _fits(b.window, si.provider))
    if refusal is not None:
        return refusal
    structured = b.structured and any(k in body for k in ("response_format", "json_schema",
                                                            "grammar"))
    gen = generate(b, max_tokens, stops=stops, stop_ids=body.get("stop_token_ids") or (),
                   preserved=body.get("preserved_tokens") or (), structured=structured)
    si.answered.append((prompt, len(gen.tokens)))
    usage: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": len(gen.tokens),
                             "total_tokens": prompt + len(gen.tokens)}
    if (cost := _cost(b, prompt, len(gen.tokens))) is not None:
        usage["estimated_cost"] = cost
    head = {"id": f"cmpl-{si.completions}", "object": "text_completion",
            "created": int(time.time()), "model": b.model}
    if not body.get("stream"):
        reply = {**head, "choices": [{"index": 0, "text": gen.text,
                                      "finish_reason": gen.finish}]}
        if b.usage_plain:
            reply["usage"] = usage
        return web.json_response(reply)
    pieces = _pieces(gen.text)
    events: list[dict[str, Any]] = [
        {**head, "choices": [{"index": 0, "text": p, "finish_reason": None}]} for p in pieces]
    events.append({**head, "choices": [{"index": 0, "text": "", "finish_reason": gen.finish}]})
    asked = (body.get("stream_options") or {}).get("include_usage") is True
    if b.usage_stream and (asked or si.provider not in USAGE_WHEN_ASKED):
        events.append({**head, "choices": [], "usage": usage})
    return await sse(request, events, delay=b.token_delay_s, first=b.first_token_delay_s)


async def ollama(si: StandIn, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    b = si.behaviour
    options = body.get("options") or {}
    window = min(int(options.get("num_ctx") or 2048), b.window)
    max_tokens = int(options.get("num_predict") or 128)
    stops = list(options.get("stop") or [])
    prompt = count(str(body.get("prompt", "")), b) + b.bos_tokens
    if prompt >= window:
        if body.get("truncate") is False and not b.truncates:
            return web.json_response(
                {"error": "the input length exceeds the context length"}, status=400)
        prompt = window - 1  # what older servers do: drop the prompt's middle, say nothing
    gen = generate(b, max_tokens, stops=stops, structured=b.structured and "format" in body)
    si.answered.append((prompt, len(gen.tokens)))
    done: dict[str, Any] = {"model": b.model, "created_at": "2026-12-07T00:00:00Z",
                            "response": "", "done": True, "done_reason": gen.finish}
    if b.usage_plain:
        done |= {"prompt_eval_count": prompt, "eval_count": len(gen.tokens)}
    if body.get("stream") is False:
        return web.json_response({**done, "response": gen.text})
    lines: list[dict[str, Any]] = [
        {"model": b.model, "created_at": done["created_at"], "response": p, "done": False}
        for p in _pieces(gen.text)]
    return await ndjson(request, [*lines, done], delay=b.token_delay_s,
                        first=b.first_token_delay_s)


async def tgi_native(si: StandIn, request: web.Request, body: dict[str, Any]
                     ) -> web.StreamResponse:
    b = si.behaviour
    params = body.get("parameters") or {}
    grammar = params.get("grammar") or {}
    if b.refuses_control_regex and grammar.get("type") == "regex" \
            and "\\x00-\\x1f" in str(grammar.get("value")):
        return web.json_response({"error": "Grammar compilation failed: unsupported character "
                                           "class", "error_type": "validation"}, status=422)
    max_tokens = int(params.get("max_new_tokens") or 16)
    stops = list(params.get("stop") or [])
    prompt = count(str(body.get("inputs", "")), b)
    refusal, prompt = _check(si, stops, prompt, max_tokens, _fits(b.window, "tgi"))
    if refusal is not None:
        return refusal
    gen = generate(b, max_tokens, stops=stops, structured=b.structured and bool(grammar))
    si.answered.append((prompt, len(gen.tokens)))
    finish = {"stop": "eos_token", "length": "length"}[gen.finish]
    if gen.stop_hit:
        finish = "stop_sequence"
    return web.json_response(
        {"generated_text": gen.text, "details": {"finish_reason": finish,
                                                 "generated_tokens": len(gen.tokens)}},
        headers={"x-prompt-tokens": str(prompt)})


def stand_in(provider: str, **changes: Any) -> StandIn:
    """A stand-in for `provider` with its documented behaviour, changed by `changes`."""
    behaviour = DEFAULTS[provider].but(**changes)
    routes: dict[str, Any]
    if provider == "ollama":
        routes = {"/api/generate": ollama}
    elif provider == "tgi":
        routes = {"/v1/completions": openai, "/generate": tgi_native}
    else:
        routes = {"/completions": openai}
    return StandIn(provider, behaviour, routes)


def base_url(si: StandIn) -> str:
    """The base URL to configure for `si`'s provider."""
    return si.base + BASE_PATHS[si.provider]
