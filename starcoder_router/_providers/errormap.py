"""Provider error answers → our exception tree, once, at the provider boundary.

Every provider words its errors differently (see docs on each adapter); this module knows the
common shapes of error bodies and the many ways of saying "the prompt is too long", so adapters
only add what is peculiar to them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from .._errors import (
    AuthenticationError,
    BadRequestError,
    ContextLengthError,
    InvalidResponseError,
    NotFoundError,
    ProviderConnectionError,
    ProviderError,
    ProviderServerError,
    ProviderTimeoutError,
    RateLimitError,
)
from .._secrets import Secret, redact
from .call import Call, parse_retry_after

__all__ = [
    "UNREADABLE",
    "error_for",
    "error_from_response",
    "extract_message",
    "in_context",
    "is_context_overflow",
    "request_id_of",
    "unreadable_reply",
    "with_context",
]

# How providers say "prompt + max_tokens is more than I can hold" (vLLM, OpenAI-style servers,
# Fireworks, llama.cpp, TGI, Ollama, llama-cpp-python).
_OVERFLOW = re.compile(
    r"maximum context length|context length|context size|context window|prompt is too long"
    r"|exceed_context_size|context_length_exceeded|must be <=|is longer than the context"
    r"|too many tokens|input is too long|exceeds the max",
    re.IGNORECASE,
)
_WINDOW = (
    re.compile(r"maximum context length is (\d+)", re.I),
    re.compile(r"model maximum context length:? (\d+)", re.I),
    re.compile(r"available context size \((\d+) tokens?\)", re.I),
    re.compile(r"must be <= (\d+)", re.I),
    # LM Studio: "the model is loaded with (a) context length of only 4096 tokens".
    re.compile(r"context length of (?:only )?(\d+)", re.I),
)
_PROMPT = (
    # "(16000 in the messages, 1000 in the completion)" (vLLM, OpenAI) comes before the
    # "you requested N tokens" total, which counts the completion too.
    re.compile(r"\((\d+) (?:tokens )?in (?:the|your) (?:messages|prompt)", re.I),
    re.compile(r"Given: (\d+) .inputs. tokens", re.I),
    re.compile(r"prompt is too long:? (\d+)", re.I),
    re.compile(r"request \((\d+) tokens?\)", re.I),
    re.compile(r"has (\d+) input tokens", re.I),
    re.compile(r"you requested (\d+) tokens", re.I),
    re.compile(r"keep the first (\d+) tokens", re.I),
)


def extract_message(body: bytes) -> tuple[str, dict[str, Any]]:
    """The provider's message and the parsed error object, from any of the shapes seen:
    `{"error": {"message": ...}}`, `{"error": "..."}`, `{"detail": [...]}`, `{"message": ...}`,
    or plain text."""
    text = body.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text) if text else None
    except ValueError:
        return text[:2000], {}
    if not isinstance(data, dict):
        return text[:2000], {}
    err = data.get("error")
    if isinstance(err, dict):
        msg = err.get("message") or err.get("msg") or json.dumps(err)
        return str(msg), {**data, **err}
    if isinstance(err, str):
        return err, data
    detail = data.get("detail")
    if isinstance(detail, list) and detail:
        parts = [f"{'.'.join(map(str, d.get('loc', ())))}: {d.get('msg', '')}"
                 if isinstance(d, dict) else str(d) for d in detail]
        return "; ".join(parts), data
    if isinstance(detail, str):
        return detail, data
    if "message" in data:
        return str(data["message"]), data
    return text[:2000], data


def is_context_overflow(message: str, fields: Mapping[str, Any]) -> bool:
    kind = str(fields.get("type", "")) + " " + str(fields.get("code", ""))
    return bool(_OVERFLOW.search(message) or _OVERFLOW.search(kind))


def request_id_of(headers: Mapping[str, str],
                  fields: Mapping[str, Any] | None = None) -> str | None:
    for name in ("x-request-id", "request-id", "x-fireworks-request-id", "cf-ray"):
        if name in headers:
            return headers[name]
    if fields:
        rid = fields.get("request_id") or fields.get("id")
        if isinstance(rid, str):
            return rid
    return None


def _first_int(patterns: tuple[re.Pattern[str], ...], text: str) -> int | None:
    for p in patterns:
        m = p.search(text)
        if m:
            return int(m.group(1))
    return None


def error_from_response(call: Call, status: int, headers: Mapping[str, str],
                        body: bytes) -> ProviderError:
    """The right error class for an error status, with the provider's message (redacted)."""
    dep = call.deployment
    return error_for(status, headers, body, provider=dep.provider, model=dep.model,
                     deployment=dep.name, api_key=call.endpoint.api_key)


def error_for(status: int, headers: Mapping[str, str], body: bytes, *, provider: str,
              model: str = "", deployment: str = "", api_key: Secret | None = None,
              ) -> ProviderError:
    """`error_from_response` without a `Call`: for side requests such as `/tokenize` or
    discovery probes, which are not made for one deployment."""
    message, fields = extract_message(body)
    message = redact(message, api_key)
    ctx: dict[str, Any] = {
        "provider": provider,
        "model": model,
        "deployment": deployment,
        "status_code": status,
        "request_id": request_id_of(headers, fields),
        "provider_message": message,
    }
    head = f"{provider} answered {status}: {message}" if message else \
        f"{provider} answered {status}"
    if status in (400, 413, 422) or (status == 500 and "exceed_context" in str(fields.get("type"))):
        if is_context_overflow(message, fields):
            window = fields.get("n_ctx") if isinstance(fields.get("n_ctx"), int) else None
            prompt = fields.get("n_prompt_tokens") \
                if isinstance(fields.get("n_prompt_tokens"), int) else None
            return ContextLengthError(
                head,
                context_window=window or _first_int(_WINDOW, message),
                prompt_tokens=prompt or _first_int(_PROMPT, message),
                **ctx,
            )
        return BadRequestError(head, **ctx)
    if status in (401, 403):
        return AuthenticationError(head, **ctx)
    if status == 404:
        return NotFoundError(head, **ctx)
    if status == 408:
        return ProviderTimeoutError(head, **ctx)
    if status == 429:
        return RateLimitError(head, retry_after=parse_retry_after(headers), **ctx)
    if status == 499:
        return ProviderConnectionError(head, **ctx)
    if status == 501:
        return BadRequestError(head, **ctx)
    if status >= 500:
        return ProviderServerError(head, retry_after=parse_retry_after(headers), **ctx)
    return BadRequestError(head, **ctx)


def with_context(exc: ProviderError, call: Call) -> ProviderError:
    """The same error, naming the provider, model and deployment of `call`."""
    dep = call.deployment
    new = type(exc).__new__(type(exc))
    new.__dict__.update(exc.__dict__)
    new.provider, new.model, new.deployment = dep.provider, dep.model, dep.name
    if not new.message.startswith(dep.provider):
        new.message = f"{dep.provider}: {new.message}"
    Exception.__init__(new, new.message)
    return new


# What a hostile or broken reply can make an adapter raise (deep nesting, wrong types, absurd
# numbers, bad bytes). Caught where replies are read and turned into `InvalidResponseError`, so
# that such a reply falls back like any other provider failure instead of escaping the tree.
UNREADABLE = (ValueError, TypeError, AttributeError, KeyError, IndexError, RecursionError,
              OverflowError, UnicodeError)


def unreadable_reply(exc: BaseException, call: Call, status: int | None = None) -> ProviderError:
    """The `InvalidResponseError` for a reply the adapter could not read (`exc`)."""
    return with_context(InvalidResponseError(f"unreadable reply ({type(exc).__name__})",
                                             status_code=status), call)


def in_context(exc: ProviderError, call: Call) -> ProviderError:
    """`exc` if it already names its deployment, else a copy that names `call`'s."""
    return exc if exc.deployment else with_context(exc, call)
