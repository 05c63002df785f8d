"""The OpenAI protocol: `POST /v1/completions`, `POST /v1/chat/completions`, `GET /v1/models`.

`prompt` alone is a left-to-right prompt, sent as written (a prompt that already carries FIM
sentinels passes through untouched); `prompt` + `suffix` is fill-in-the-middle, rendered in
StarCoder 2's own format. Streams are server-sent events ending in `data: [DONE]`, with a last
usage chunk when `stream_options.include_usage` is set, as the OpenAI API does
(https://platform.openai.com/docs/api-reference/completions/create). Errors are
`{"error": {"message", "type", "param", "code"}}`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from .._ids import new_id
from .gateway import Call, Gateway
from .http import GATEWAY_KEY, Parsed, handle, json_body, parse_body
from .inputs import Float, Int, check_max_tokens
from .models import UnknownModelError
from .problems import Problem, invalid

if TYPE_CHECKING:
    from .._running.results import Completion, StreamChunk

__all__ = ["OpenAIDialect", "OpenAIMeta", "add_routes"]


class _Body(BaseModel):
    # Clients send many fields we do not use (user, logprobs, presence_penalty...): ignore them.
    model_config = ConfigDict(extra="ignore", frozen=True)


class _StreamOptions(_Body):
    include_usage: bool = False


class _Sampling(_Body):
    model: str | None = None
    max_tokens: Int | None = None
    temperature: Float | None = Field(default=None, ge=0, le=2)
    top_p: Float | None = Field(default=None, gt=0, le=1)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: _StreamOptions | None = None
    seed: Int | None = None
    n: Int = 1
    best_of: Int | None = None
    presence_penalty: Float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: Float | None = Field(default=None, ge=-2, le=2)


class CompletionBody(_Sampling):
    prompt: str | list[str]
    suffix: str | None = None
    echo: bool = False


class _Part(_Body):
    type: str
    text: str = ""


class _Message(_Body):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[_Part]


class ChatBody(_Sampling):
    messages: list[_Message] = Field(min_length=1)
    max_completion_tokens: Int | None = None
    response_format: dict[str, Any] | None = None


class _Meta(NamedTuple):
    id: str
    created: int
    model: str
    chat: bool
    include_usage: bool


# What the dialect needs to shape an answer; Mistral's FIM route (mistral.py) shares it.
OpenAIMeta = _Meta


def _sampling(body: _Sampling, gateway: Gateway, max_tokens: int | None) -> dict[str, Any]:
    if body.n != 1:
        raise invalid("only n=1 is supported", param="n")
    if body.best_of not in (None, 1):
        raise invalid("only best_of=1 is supported", param="best_of")
    fields: dict[str, Any] = {"max_tokens": check_max_tokens(max_tokens, gateway)}
    if body.temperature is not None:
        fields["temperature"] = body.temperature
    if body.top_p is not None:
        fields["top_p"] = body.top_p
    if body.stop:
        fields["stop"] = [body.stop] if isinstance(body.stop, str) else body.stop
    if body.seed is not None:
        fields["seed"] = body.seed
    return fields


def _meta(body: _Sampling, chat: bool) -> _Meta:
    include = bool(body.stream_options and body.stream_options.include_usage)
    prefix = "chatcmpl-" if chat else "cmpl-"
    return _Meta(prefix + new_id()[:24], int(time.time()), body.model or "starcoder2", chat,
                 include)


def parse_completion(request: web.Request, raw: dict[str, Any], gateway: Gateway) -> Parsed:
    body = parse_body(CompletionBody, raw)
    if body.echo:
        raise invalid("echo is not supported", param="echo")
    prompt = body.prompt
    if isinstance(prompt, list):
        if len(prompt) != 1:
            raise invalid("send one prompt per request", param="prompt")
        prompt = prompt[0]
    fields = _sampling(body, gateway, body.max_tokens)
    if body.suffix is not None:
        fields.update(prefix=prompt, suffix=body.suffix)
    else:
        fields["prompt"] = prompt
    return Parsed(Call(body.model, fields, protocol="openai"), body.stream, _meta(body, False))


def parse_chat(request: web.Request, raw: dict[str, Any], gateway: Gateway) -> Parsed:
    body = parse_body(ChatBody, raw)
    fields = _sampling(body, gateway, body.max_tokens if body.max_completion_tokens is None
                       else body.max_completion_tokens)
    fields["messages"] = [
        {"role": "system" if m.role == "developer" else m.role,
         "content": m.content if isinstance(m.content, str)
         else "".join(p.text for p in m.content if p.type == "text")}
        for m in body.messages
    ]
    if body.response_format and body.response_format.get("type") != "text":
        fields["response_format"] = body.response_format
    return Parsed(Call(body.model, fields, protocol="openai"), body.stream, _meta(body, True))


def _usage(completion: Completion) -> dict[str, int]:
    u = completion.usage
    return {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
            "total_tokens": u.total_tokens}


def _finish(reason: str | None) -> str | None:
    return None if reason is None else ("length" if reason == "length" else "stop")


def _sse(payload: Any) -> bytes:
    return b"data: " + json_body(payload) + b"\n\n"


class OpenAIDialect:
    name = "openai"
    stream_content_type = "text/event-stream"

    def error_body(self, problem: Problem) -> dict[str, Any]:
        return {"error": {"message": problem.message, "type": problem.type,
                          "param": problem.param, "code": problem.code}}

    def completion_body(self, completion: Completion, parsed: Parsed) -> Any:
        meta: _Meta = parsed.meta
        choice: dict[str, Any] = {"index": 0, "finish_reason": _finish(completion.finish_reason)}
        if meta.chat:
            choice["message"] = {"role": "assistant", "content": completion.text}
        else:
            choice.update(text=completion.text, logprobs=None)
        return {"id": meta.id, "object": "chat.completion" if meta.chat else "text_completion",
                "created": meta.created, "model": meta.model, "choices": [choice],
                "usage": _usage(completion)}

    def _event(self, meta: _Meta, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {"id": meta.id,
                "object": "chat.completion.chunk" if meta.chat else "text_completion",
                "created": meta.created, "model": meta.model, "choices": choices}

    def stream_chunk(self, chunk: StreamChunk, parsed: Parsed) -> bytes:
        meta: _Meta = parsed.meta
        choice: dict[str, Any] = {"index": 0, "finish_reason": _finish(chunk.finish_reason)}
        if meta.chat:
            delta = {"content": chunk.text}
            if chunk.index == 0:
                delta["role"] = "assistant"
            choice["delta"] = delta
        else:
            choice.update(text=chunk.text, logprobs=None)
        return _sse(self._event(meta, [choice]))

    def stream_end(self, completion: Completion | None, parsed: Parsed) -> bytes:
        meta: _Meta = parsed.meta
        out = b""
        if meta.include_usage and completion is not None:
            event = self._event(meta, [])
            event["usage"] = _usage(completion)
            # Where the answer came from and what it cost: headers were sent before we knew.
            event["starcoder_router"] = {"deployment": completion.deployment.name,
                                         "cost_usd": completion.total_cost_usd,
                                         "attempts": len(completion.attempts)}
            out = _sse(event)
        return out + b"data: [DONE]\n\n"

    def stream_error(self, problem: Problem, parsed: Parsed) -> bytes:
        return _sse(self.error_body(problem))


async def _models(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY_KEY]
    created = int(time.time())
    data = [{"id": name, "object": "model", "created": created, "owned_by": "starcoder-router"}
            for name in gateway.model_names]
    return web.json_response({"object": "list", "data": data})


async def _model(request: web.Request) -> web.Response:
    # `models.retrieve()`: one entry of the list, or the same 404 an unknown model gets.
    gateway = request.app[GATEWAY_KEY]
    name = request.match_info["model"]
    gateway.resolve(name)  # raises UnknownModelError, which the middleware answers
    if name not in gateway.model_names:  # an alias such as "starcoder2:latest"
        raise UnknownModelError(name, gateway.model_names)
    return web.json_response({"id": name, "object": "model", "created": int(time.time()),
                              "owned_by": "starcoder-router"})


def add_routes(app: web.Application) -> None:
    dialect = OpenAIDialect()

    async def completions(request: web.Request) -> web.StreamResponse:
        return await handle(request, dialect, parse_completion)

    async def chat(request: web.Request) -> web.StreamResponse:
        return await handle(request, dialect, parse_chat)

    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/chat/completions",
                        chat)
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/v1/models/{model}", _model)
