"""The TGI protocol as llm-vscode (llm-ls) and Hugging Face's clients send it: `POST /generate`,
`POST /generate_stream`, and `POST /` (TGI's compatibility route, streaming when the body says
`"stream": true`).

`inputs` goes as written: llm-ls puts the FIM sentinels in it itself. `parameters` carries
`max_new_tokens`, `temperature`, `top_p`, `stop`, `seed` and a JSON-schema `grammar`; the rest
of TGI's sampling knobs are accepted and ignored. Streams are server-sent events, one token
object each, the last with `generated_text` and `details`
(https://huggingface.github.io/text-generation-inference/).
Errors are `{"error": "...", "error_type": "..."}`.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from .gateway import Call, Gateway
from .http import GATEWAY_KEY, Parsed, handle, parse_body
from .inputs import Float, Int, check_max_tokens
from .models import BASE_NAME
from .problems import Problem, invalid

if TYPE_CHECKING:
    from .._running.results import Completion, StreamChunk

__all__ = ["add_routes"]

_ERROR_TYPES = {400: "validation", 401: "authentication", 404: "validation",
                413: "validation", 422: "validation", 429: "overloaded", 503: "overloaded"}


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _Grammar(_Body):
    type: Literal["json", "json_object", "regex"]
    value: Any


class _Parameters(_Body):
    max_new_tokens: Int | None = None
    temperature: Float | None = Field(default=None, gt=0, le=2)
    top_p: Float | None = Field(default=None, gt=0, lt=1)
    stop: list[str] = []
    seed: Int | None = None
    do_sample: bool = False
    details: bool = False
    return_full_text: bool = False
    grammar: _Grammar | None = None


class GenerateBody(_Body):
    inputs: str
    parameters: _Parameters = _Parameters()
    stream: bool = False
    model: str | None = None


class _Meta(NamedTuple):
    details: bool
    prefix: str
    # TGI's compatibility route `/` answers a list of one generation (its `compat_generate`).
    listed: bool
    # Per stream: the tokens sent so far, and the latest chunk's text, held back because TGI
    # puts the last token on the final event (with generated_text and details).
    sent: list[int]
    last: list[str]


def _parse(raw: dict[str, Any], gateway: Gateway, *, stream: bool | None,
           listed: bool = False) -> Parsed:
    body = parse_body(GenerateBody, raw)
    p = body.parameters
    fields: dict[str, Any] = {"prompt": body.inputs,
                              "max_tokens": check_max_tokens(p.max_new_tokens, gateway,
                                                            "max_new_tokens")}
    if p.stop:
        fields["stop"] = p.stop
    if p.do_sample or p.temperature is not None:
        fields["temperature"] = p.temperature if p.temperature is not None else 1.0
    else:
        fields["temperature"] = 0.0  # TGI decodes greedily unless asked to sample
    if p.top_p is not None:
        fields["top_p"] = p.top_p
    if p.seed is not None:
        fields["seed"] = p.seed
    if p.grammar is not None:
        fields["response_format"] = _response_format(p.grammar)
    # TGI serves one model, so its clients name none: the model is the gateway's default.
    call = Call(body.model or BASE_NAME, fields, protocol="tgi")
    meta = _Meta(p.details, body.inputs if p.return_full_text else "", listed, [0], [""])
    return Parsed(call, body.stream if stream is None else stream, meta)


def _response_format(grammar: _Grammar) -> dict[str, Any]:
    """TGI's `grammar`: a JSON schema (checked like any other: no fetching, RE2 patterns)."""
    if grammar.type == "regex":
        raise invalid("regex grammars are not supported; use a JSON schema",
                      param="parameters.grammar")
    if not isinstance(grammar.value, dict):
        raise invalid("a json grammar's value must be a JSON schema object",
                      param="parameters.grammar")
    return {"type": "json_schema", "json_schema": grammar.value}


def _finish(reason: str | None) -> str:
    return "length" if reason == "length" else "eos_token"


def _details(completion: Completion | None) -> dict[str, Any]:
    """`Details` without its token lists, which is also `StreamDetails` minus `input_length`
    (https://github.com/huggingface/text-generation-inference/blob/main/docs/openapi.json)."""
    if completion is None:
        return {"finish_reason": "eos_token", "generated_tokens": 0, "seed": None}
    return {"finish_reason": _finish(completion.finish_reason),
            "generated_tokens": completion.usage.completion_tokens, "seed": None}


def _stream_details(completion: Completion | None) -> dict[str, Any]:
    prompt = completion.usage.prompt_tokens if completion is not None else 0
    return {**_details(completion), "input_length": prompt}


def _sse(payload: Any) -> bytes:
    return b"data:" + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def _error(problem: Problem) -> dict[str, Any]:
    return {"error": problem.message, "error_type": _ERROR_TYPES.get(problem.status, "generation")}


class TGIDialect:
    name = "tgi"
    stream_content_type = "text/event-stream"

    def error_body(self, problem: Problem) -> dict[str, Any] | None:
        # TGI answers a bad key with a bare 401: huggingface_hub raises its HTTP error for it,
        # where an `error_type` it does not know would become `UnknownError`.
        return None if problem.status == 401 else _error(problem)

    def completion_body(self, completion: Completion, parsed: Parsed) -> Any:
        meta: _Meta = parsed.meta
        out: dict[str, Any] = {"generated_text": meta.prefix + completion.text}
        if meta.details:
            out["details"] = {**_details(completion), "prefill": [], "tokens": []}
        return [out] if meta.listed else out

    def stream_chunk(self, chunk: StreamChunk, parsed: Parsed) -> bytes:
        # TGI's final event is the last token's, so each text waits for the next one (or the
        # end); the router's closing chunk carries no text and sends nothing.
        meta: _Meta = parsed.meta
        if not chunk.text:
            return b""
        held, meta.last[0] = meta.last[0], chunk.text
        if not held:
            return b""
        meta.sent[0] += 1
        token = {"id": 0, "text": held, "logprob": 0.0, "special": False}
        return _sse({"index": meta.sent[0], "token": token, "generated_text": None,
                     "details": None})

    def stream_end(self, completion: Completion | None, parsed: Parsed) -> bytes:
        meta: _Meta = parsed.meta
        text = meta.prefix + (completion.text if completion is not None else "")
        token = {"id": 0, "text": meta.last[0], "logprob": 0.0, "special": False}
        return _sse({"index": meta.sent[0] + 1, "token": token, "generated_text": text,
                     "details": _stream_details(completion)})

    def stream_error(self, problem: Problem, parsed: Parsed) -> bytes:
        meta: _Meta = parsed.meta
        held, meta.last[0] = meta.last[0], ""
        if not held:
            return _sse(_error(problem))
        meta.sent[0] += 1  # the text held back still reaches the client, before the error
        token = {"id": 0, "text": held, "logprob": 0.0, "special": False}
        return _sse({"index": meta.sent[0], "token": token, "generated_text": None,
                     "details": None}) + _sse(_error(problem))


async def _info(request: web.Request) -> web.Response:
    # Every field TGI's `Info` schema requires; the window is the largest one served.
    gateway = request.app[GATEWAY_KEY]
    window = gateway.window(None)
    return web.json_response({
        "model_id": BASE_NAME, "model_sha": None, "model_pipeline_tag": "text-generation",
        "max_concurrent_requests": 128, "max_best_of": 1, "max_stop_sequences": 4,
        "max_input_tokens": max(0, window - 1), "max_total_tokens": window,
        "validation_workers": 1, "max_client_batch_size": 1,
        "router": "starcoder-router", "version": _version(), "sha": None, "docker_label": None,
    })


def _version() -> str:
    from .. import __version__

    return __version__


def add_routes(app: web.Application) -> None:
    dialect = TGIDialect()

    def parser(stream: bool | None, listed: bool = False) -> Any:
        def parse(request: web.Request, raw: dict[str, Any], gateway: Gateway) -> Parsed:
            return _parse(raw, gateway, stream=stream, listed=listed)
        return parse

    streamed, either, compat = parser(True), parser(None), parser(None, listed=True)

    async def generate(request: web.Request) -> web.StreamResponse:
        return await handle(request, dialect, either)

    async def compat_generate(request: web.Request) -> web.StreamResponse:
        return await handle(request, dialect, compat)

    async def generate_stream(request: web.Request) -> web.StreamResponse:
        return await handle(request, dialect, streamed)

    app.router.add_post("/generate", generate)
    app.router.add_post("/generate_stream", generate_stream)
    app.router.add_post("/", compat_generate)
    app.router.add_get("/info", _info)
