"""Fireworks AI: OpenAI-compatible `/completions` at api.fireworks.ai/inference/v1.

Quirks handled here:
* `context_length_exceeded_behavior` defaults to "truncate", which silently lowers `max_tokens`;
  we always send "error", so an overflow is a `ContextLengthError`, never a shortened answer.
* `response_format` takes `json_object` with an optional `schema`, `json_schema`, or a GBNF
  `grammar`.
* Token counts also arrive as `fireworks-prompt-tokens` / `fireworks-completion-tokens` headers,
  used when the body has no usage.
* Rate limits come as `x-ratelimit-*` headers, 429 above the limit and 503 when load is shed.
"""

from __future__ import annotations

from typing import Any, ClassVar

from .._request import ResponseFormat
from ._base import Provider
from ._wire import Call, ProviderResult, WireResponse

__all__ = ["Fireworks"]


class Fireworks(Provider):
    name: ClassVar[str] = "fireworks"
    default_base_url: ClassVar[str] = "https://api.fireworks.ai/inference/v1"
    key_envs: ClassVar[tuple[str, ...]] = ("FIREWORKS_API_KEY", "FIREWORKS_AI_API_KEY")
    key_required: ClassVar[bool] = True
    local: ClassVar[bool] = False

    def completion_body(self, call: Call) -> dict[str, Any]:
        body = super().completion_body(call)
        body["context_length_exceeded_behavior"] = "error"
        return body

    def response_format_fields(self, call: Call, fmt: ResponseFormat) -> dict[str, Any]:
        if fmt.type == "grammar":
            return {"response_format": {"type": "grammar", "grammar": fmt.grammar}}
        if fmt.json_schema is not None:
            return {"response_format": {"type": "json_object", "schema": fmt.json_schema}}
        return {"response_format": {"type": "json_object"}}

    def parse(self, call: Call, response: WireResponse) -> ProviderResult:
        result = super().parse(call, response)
        headers = response.headers
        if result.prompt_tokens is None and "fireworks-prompt-tokens" in headers:
            result.prompt_tokens = int(headers["fireworks-prompt-tokens"])
        if result.completion_tokens is None and "fireworks-completion-tokens" in headers:
            result.completion_tokens = int(headers["fireworks-completion-tokens"])
        return result
