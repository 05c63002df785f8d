"""Checks on a provider's reply before anything is computed from it.

A reply is data from outside: a broken or hostile server can send a `text` that is a number, a
choice that is `true`, a finish reason that is a list, or usage of `-3`, `"12"`, `1e308`, `NaN`
or 10^30 tokens. Everything the router later costs, books and returns passes through here:

* the text and the finish reason must be strings (a finish reason may be absent): otherwise the
  reply is unusable and raises `InvalidResponseError`, which falls back like any provider error;
* the id and the model name are kept only when they are strings;
* each token count must be a whole number from 0 up to a ceiling set by the request: prompt
  tokens at most `PROMPT_FACTOR` times our own count plus `PROMPT_SLACK` when our count is
  exact (else up to the deployment's window too, since an estimate can be wrong and a server
  that evaluated its whole window is a truncation signal, not a lie), completion tokens at most
  `max_tokens` plus `COMPLETION_SLACK`. A count that breaks these is logged with the raw
  values, noted in `warnings`, and dropped, so the router costs the reply with its own count::

      result = checked(call, result)   # in every adapter, before its quirk checks
"""

from __future__ import annotations

import logging
from typing import Any

from .._errors import InvalidResponseError
from .call import Call, ProviderResult

__all__ = [
    "COMPLETION_SLACK",
    "PROMPT_FACTOR",
    "PROMPT_SLACK",
    "checked",
    "checked_count",
    "invalid",
    "optional_str",
    "text_or_none",
]

logger = logging.getLogger("starcoder_router")

# Our prompt count is exact, an upper bound (UTF-8 bytes) or meant to over-estimate, so a true
# count is at most about ours; twice ours plus a template's worth of tokens is generous.
PROMPT_FACTOR = 2
PROMPT_SLACK = 32
# Servers may count the end-of-sequence token or a stop sequence's tokens beyond `max_tokens`.
COMPLETION_SLACK = 16

_PREVIEW = 80


def invalid(call: Call, message: str) -> InvalidResponseError:
    dep = call.deployment
    return InvalidResponseError(f"{dep.provider}: {message}", provider=dep.provider,
                                model=dep.model, deployment=dep.name)


def text_or_none(call: Call, value: Any, what: str) -> str | None:
    """`value` when it is a string, None when absent; anything else makes the reply unusable."""
    if value is None or isinstance(value, str):
        return value
    raise invalid(call, f"the reply's {what} is a {type(value).__name__}, not a string")


def optional_str(value: Any) -> str | None:
    """Descriptive fields (an id, a model name): kept when they are strings, else dropped."""
    return value if isinstance(value, str) else None


def checked_count(value: Any, ceiling: int) -> int | None:
    """`value` as a token count, or None when it is not a whole number in [0, ceiling]."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= ceiling:
        return value
    return None


def prompt_ceiling(call: Call) -> int:
    window = call.deployment.context_window + PROMPT_SLACK
    if call.prompt_tokens is None:
        return window
    ours = PROMPT_FACTOR * call.prompt_tokens + PROMPT_SLACK
    return ours if call.prompt_count_kind == "exact" else max(ours, window)


def completion_ceiling(call: Call) -> int:
    return call.request.max_tokens + COMPLETION_SLACK


def checked(call: Call, result: ProviderResult) -> ProviderResult:
    """`result` with its types checked and implausible counts dropped (see the module doc)."""
    if not isinstance(result.text, str):
        raise invalid(call, f"the reply's text is a {type(result.text).__name__}, not a string")
    result.raw_finish_reason = text_or_none(call, result.raw_finish_reason, "finish reason")
    result.request_id = optional_str(result.request_id)
    result.model = optional_str(result.model)
    raw = (result.prompt_tokens, result.completion_tokens)
    prompt = checked_count(raw[0], prompt_ceiling(call))
    completion = checked_count(raw[1], completion_ceiling(call))
    if (prompt, completion) != raw:
        dep = call.deployment
        shown = ", ".join(f"{name}={_preview(value)}" for name, value, kept in
                          (("prompt_tokens", raw[0], prompt),
                           ("completion_tokens", raw[1], completion)) if kept != value)
        msg = (f"{dep.provider} reported implausible usage ({shown}; we counted "
               f"{call.prompt_tokens} prompt tokens, max_tokens {call.request.max_tokens}): "
               "costed with our own count")
        logger.warning("%s: %s", dep.name, msg)
        if msg not in result.warnings:
            result.warnings.append(msg)
        result.prompt_tokens, result.completion_tokens = prompt, completion
    return result


def _preview(value: Any) -> str:
    try:
        text = repr(value)
    except RecursionError:
        text = f"<a deeply nested {type(value).__name__}>"
    return text if len(text) <= _PREVIEW else text[:_PREVIEW] + "..."
