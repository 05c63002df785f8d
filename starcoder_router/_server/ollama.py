"""The Ollama protocol: `POST /api/generate` and the metadata calls editor plugins make first
(`GET /api/tags`, `POST /api/show`, `GET /api/version`).

`suffix` makes the request fill-in-the-middle; without it `prompt` goes as written (`raw` or
not: StarCoder 2 base models have no chat template to apply). `options.num_predict` is
max_tokens; `stop` may sit in `options` or at the top. Streaming is the default, as NDJSON: one
JSON object per line, the last with `done: true`, the reason and the token counts
(https://github.com/ollama/ollama/blob/main/docs/api.md). Errors are `{"error": "..."}`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from typing import TYPE_CHECKING, Any, NamedTuple

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from .gateway import Call, Gateway
from .http import (
    GATEWAY_KEY,
    Parsed,
    error_response,
    handle,
    parse_body,
    read_json,
    request_id,
)
from .inputs import Float, Int, ollama_max_tokens
from .models import UnknownModelError
from .problems import Problem, problem_for

if TYPE_CHECKING:
    from .._running.results import Completion, StreamChunk

__all__ = ["add_routes"]

# The Ollama API version we speak (the /api/generate fields used here exist since 0.3).
OLLAMA_VERSION = "0.6.0"


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _Options(_Body):
    num_predict: Int | None = None
    temperature: Float | None = Field(default=None, ge=0, le=2)
    top_p: Float | None = Field(default=None, gt=0, le=1)
    stop: list[str] | None = None
    seed: Int | None = None


class GenerateBody(_Body):
    model: str = Field(min_length=1)
    prompt: str = ""
    suffix: str | None = None
    raw: bool = False
    stream: bool = True
    format: str | dict[str, Any] | None = None
    options: _Options = _Options()
    stop: list[str] | None = None


class ShowBody(_Body):
    model: str | None = None
    name: str | None = None  # older clients send `name`


class _Meta(NamedTuple):
    model: str
    started: float


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")


def parse_generate(request: web.Request, raw: dict[str, Any], gateway: Gateway) -> Parsed:
    body = parse_body(GenerateBody, raw)
    opts = body.options
    fields: dict[str, Any] = {"max_tokens": ollama_max_tokens(opts.num_predict, gateway)}
    if body.suffix is not None:
        fields.update(prefix=body.prompt, suffix=body.suffix)
    else:
        fields["prompt"] = body.prompt
    stop = (opts.stop or []) + (body.stop or [])
    if stop:
        fields["stop"] = stop
    for name in ("temperature", "top_p", "seed"):
        if (value := getattr(opts, name)) is not None:
            fields[name] = value
    if body.format == "json":
        fields["response_format"] = {"type": "json_object"}
    elif isinstance(body.format, dict):
        fields["response_format"] = {"type": "json_schema", "json_schema": body.format}
    call = Call(body.model, fields, protocol="ollama")
    return Parsed(call, body.stream, _Meta(body.model, time.perf_counter()))


def _final(completion: Completion | None, meta: _Meta, text: str) -> dict[str, Any]:
    elapsed = int((time.perf_counter() - meta.started) * 1e9)
    out: dict[str, Any] = {"model": meta.model, "created_at": _now(), "response": text,
                           "done": True, "total_duration": elapsed, "load_duration": 0}
    if completion is not None:
        out.update(done_reason="length" if completion.finish_reason == "length" else "stop",
                   prompt_eval_count=completion.usage.prompt_tokens, prompt_eval_duration=0,
                   eval_count=completion.usage.completion_tokens, eval_duration=elapsed)
    return out


def _line(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode() + b"\n"


class OllamaDialect:
    name = "ollama"
    stream_content_type = "application/x-ndjson"

    def error_body(self, problem: Problem) -> dict[str, Any]:
        return {"error": problem.message}

    def completion_body(self, completion: Completion, parsed: Parsed) -> Any:
        return _final(completion, parsed.meta, completion.text)

    def stream_chunk(self, chunk: StreamChunk, parsed: Parsed) -> bytes:
        if not chunk.text:  # Ollama sends no empty parts; its final line has the reason
            return b""
        return _line({"model": parsed.meta.model, "created_at": _now(), "response": chunk.text,
                      "done": False})

    def stream_end(self, completion: Completion | None, parsed: Parsed) -> bytes:
        return _line(_final(completion, parsed.meta, ""))

    def stream_error(self, problem: Problem, parsed: Parsed) -> bytes:
        return _line(self.error_body(problem))


def _details(variant: str | None, gateway: Gateway) -> dict[str, Any]:
    size = ""
    if variant is not None:
        size = f"{gateway.catalog.variants[variant].parameters / 1e9:.0f}B"
    return {"parent_model": "", "format": "gguf", "family": "starcoder2",
            "families": ["starcoder2"], "parameter_size": size, "quantization_level": ""}


async def _tags(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY_KEY]
    models = []
    for name in gateway.model_names:
        choice = gateway.resolve(name)
        models.append({"name": name, "model": name, "modified_at": _now(), "size": 0,
                       "digest": hashlib.sha256(name.encode()).hexdigest(),
                       "details": _details(choice.variant, gateway)})
    return web.json_response({"models": models})


# StarCoder 2's fill-in-the-middle format in Ollama's Go template syntax. Ollama reports the
# `insert` capability only when the template uses `.Suffix`, and Continue sends suffixes only
# when `template` contains `.Suffix` (continuedev/continue core/llm/llms/Ollama.ts).
FIM_TEMPLATE = ("{{ if .Suffix }}<fim_prefix>{{ .Prompt }}<fim_suffix>{{ .Suffix }}<fim_middle>"
                "{{ else }}{{ .Prompt }}{{ end }}")


async def _show(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY_KEY]
    dialect = OllamaDialect()
    rid = request_id(request)
    try:
        body = parse_body(ShowBody, await read_json(request, gateway.settings.max_body_bytes))
        name = body.model or body.name or ""
        choice = gateway.resolve(name)
    except UnknownModelError as exc:
        problem = Problem(404, "not_found", "model_not_found", f"model '{exc.name}' not found")
        return error_response(dialect, problem, rid)
    except Exception as exc:
        return error_response(dialect, problem_for(exc), rid)
    variant = choice.variant
    deployments = [d for d in gateway.servable if variant is None or d.variant == variant]
    window = gateway.window(variant)
    fim = any("fim" in d.capabilities for d in deployments)
    capabilities = ["completion", "insert"] if fim else ["completion"]
    return web.json_response({
        "license": "", "modelfile": f"FROM {name}\n",
        "parameters": f"num_ctx                        {window}",
        "template": FIM_TEMPLATE if fim else "{{ .Prompt }}",
        "details": _details(variant, gateway),
        "model_info": {"general.architecture": "starcoder2",
                       "starcoder2.context_length": window},
        "capabilities": capabilities, "modified_at": _now(),
    })


async def _version(request: web.Request) -> web.Response:
    return web.json_response({"version": OLLAMA_VERSION})


def add_routes(app: web.Application) -> None:
    dialect = OllamaDialect()

    async def generate(request: web.Request) -> web.StreamResponse:
        return await handle(request, dialect, parse_generate)

    app.router.add_post("/api/generate", generate)
    app.router.add_get("/api/tags", _tags)
    app.router.add_post("/api/show", _show)
    app.router.add_get("/api/version", _version)
