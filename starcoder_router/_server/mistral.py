"""Mistral's fill-in-the-middle route, `POST /v1/fim/completions`, as Codestral's API serves it
and Continue's adapters (`@continuedev/openai-adapters`, `fimStream`) call it.

`prompt` is the code before the cursor and `suffix` the code after it; the gateway renders them
in StarCoder 2's FIM format. The answer is shaped like a chat completion (`choices[].message
.content`); `stream: true` sends chat-completion chunks as server-sent events ending in
`data: [DONE]` (https://docs.mistral.ai/api/#tag/fim). Errors are the OpenAI protocol's.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from .._ids import new_id
from .gateway import Call, Gateway
from .http import Parsed, handle, parse_body
from .inputs import Float, Int, check_max_tokens
from .openai import OpenAIDialect, OpenAIMeta

__all__ = ["add_routes"]


class FimBody(BaseModel):
    # Fields we do not use (metadata, frequency_penalty...) are accepted and ignored.
    model_config = ConfigDict(extra="ignore", frozen=True)

    model: str | None = None
    prompt: str
    suffix: str | None = None
    max_tokens: Int | None = None
    # Continue's adapters send OpenAI's newer name beside max_tokens.
    max_completion_tokens: Int | None = None
    min_tokens: Int | None = Field(default=None, ge=0)  # accepted; no deployment enforces it
    stop: str | list[str] | None = None
    temperature: Float | None = Field(default=None, ge=0, le=2)
    top_p: Float | None = Field(default=None, gt=0, le=1)
    stream: bool = False
    random_seed: Int | None = None  # range checked with the other caps (check_call)


def parse_fim(request: web.Request, raw: dict[str, Any], gateway: Gateway) -> Parsed:
    body = parse_body(FimBody, raw)
    fields: dict[str, Any] = {
        "prefix": body.prompt, "suffix": body.suffix or "",
        "max_tokens": check_max_tokens(
            body.max_tokens if body.max_tokens is not None else body.max_completion_tokens,
            gateway, "max_tokens" if body.max_tokens is not None else "max_completion_tokens"),
    }
    if body.temperature is not None:
        fields["temperature"] = body.temperature
    if body.top_p is not None:
        fields["top_p"] = body.top_p
    if body.stop:
        fields["stop"] = [body.stop] if isinstance(body.stop, str) else body.stop
    if body.random_seed is not None:
        fields["seed"] = body.random_seed
    meta = OpenAIMeta("cmpl-" + new_id()[:24], int(time.time()), body.model or "starcoder2",
                      chat=True, include_usage=False)
    return Parsed(Call(body.model, fields, protocol="openai"), body.stream, meta)


def add_routes(app: web.Application) -> None:
    dialect = OpenAIDialect()

    async def fim(request: web.Request) -> web.StreamResponse:
        return await handle(request, dialect, parse_fim)

    app.router.add_post("/v1/fim/completions", fim)
