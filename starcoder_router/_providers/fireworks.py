"""Fireworks AI: OpenAI-compatible `/completions` at api.fireworks.ai/inference/v1.

Quirks handled here:
* `context_length_exceeded_behavior` defaults to "truncate", which silently lowers `max_tokens`;
  we always send "error", so an overflow is a `ContextLengthError` ("The prompt is too long:
  40177, model maximum context length: 32767"), never a shortened answer.
* `response_format` takes `json_object` with an optional `schema`, `json_schema`, or a GBNF
  `grammar`: each request goes in the form it names.
* Token counts also arrive as `fireworks-prompt-tokens` / `fireworks-completion-tokens` headers,
  used when the body has no usage. The completion parameters have no `stream_options`
  (fireworks-ai SDK, completion_create_params.py), so it is not sent: a stream may still end
  with a usage-only chunk (`choices: []`), which is read, or report no usage at all, and the
  router then counts.
* `stop` takes at most 4 sequences (same source); the rest are enforced on our side.
* 429 above the account's adaptive limit, 503 "Service Overloaded" when load is shed even below
  it (a retryable server error). The `x-ratelimit-*` headers give limits in tokens per second,
  not a reset time, so they go into the error message rather than into `retry_after`.
* Retired serverless models answer 404 `NOT_FOUND` (a `NotFoundError`, so the router moves on).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from .._errors import ProviderError, RateLimitError
from .._routing.request import ResponseFormat
from .._transports.base import WireResponse
from .base import Provider
from .call import Call, ProviderResult
from .validate import checked

__all__ = ["Fireworks"]

# Header → what to call it in an error message. Newer names first, then the older documented set.
_LIMIT_HEADERS = (
    ("x-ratelimit-limit-tokens-prompt", "prompt tokens/s"),
    ("x-ratelimit-limit-tokens-cache-adjusted-prompt", "cache-adjusted prompt tokens/s"),
    ("x-ratelimit-limit-tokens-generated", "generated tokens/s"),
    ("x-ratelimit-limit-requests", "requests"),
)


class Fireworks(Provider):
    name: ClassVar[str] = "fireworks"
    default_base_url: ClassVar[str] = "https://api.fireworks.ai/inference/v1"
    # FIREWORKS_API_KEY is what Fireworks documents; LiteLLM users have FIREWORKS_AI_API_KEY.
    key_envs: ClassVar[tuple[str, ...]] = ("FIREWORKS_API_KEY", "FIREWORKS_AI_API_KEY")
    key_required: ClassVar[bool] = True
    local: ClassVar[bool] = False
    max_stop: ClassVar[int | None] = 4

    def completion_body(self, call: Call) -> dict[str, Any]:
        body = super().completion_body(call)
        body.pop("stream_options", None)
        body["context_length_exceeded_behavior"] = "error"
        return body

    def response_format_fields(self, call: Call, fmt: ResponseFormat) -> dict[str, Any]:
        if fmt.type == "grammar":
            return {"response_format": {"type": "grammar", "grammar": fmt.grammar}}
        if fmt.type == "json_schema":
            return {"response_format": {
                "type": "json_schema",
                "json_schema": {"name": fmt.name, "schema": fmt.json_schema},
            }}
        if fmt.json_schema is not None:
            return {"response_format": {"type": "json_object", "schema": fmt.json_schema}}
        return {"response_format": {"type": "json_object"}}

    def parse(self, call: Call, response: WireResponse) -> ProviderResult:
        result = super().parse(call, response)
        if result.prompt_tokens is None:
            result.prompt_tokens = _int_header(response.headers, "fireworks-prompt-tokens")
        if result.completion_tokens is None:
            result.completion_tokens = _int_header(response.headers,
                                                   "fireworks-completion-tokens")
        return checked(call, result)  # the headers are checked like the body

    def error(self, call: Call, response: WireResponse) -> ProviderError:
        err = super().error(call, response)
        if isinstance(err, RateLimitError):
            limits = [f"{label} {response.headers[h]}" for h, label in _LIMIT_HEADERS
                      if h in response.headers]
            if response.headers.get("x-ratelimit-over-limit", "").lower() == "yes":
                limits.append("over limit")
            if limits:
                err.message = f"{err.message} [rate limits: {', '.join(limits)}]"
                err.args = (err.message,)
        return err


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    try:
        return int(headers[name])
    except (KeyError, ValueError):
        return None
