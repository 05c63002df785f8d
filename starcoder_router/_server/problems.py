"""One description of what went wrong, whatever protocol the client speaks.

`problem_for(exc)` turns any error of the router (or of the gateway itself) into a `Problem`:
the HTTP status, an OpenAI-style `type` and `code`, a message safe to show the caller, and a
`Retry-After` when waiting helps. Each protocol module renders a `Problem` in its own shape.
The statuses follow what OpenAI's clients expect: 400 (`context_length_exceeded` when the
prompt fits no deployment, `unsupported_request` when no deployment has what the request needs),
401, 404 for an unknown model, 413 for a huge body, 429 with `Retry-After` for rate limits and
exhausted budgets, 503 when deployments that could serve failed or the store is down.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import NamedTuple

from .._errors import (
    BudgetExceededError,
    ContextLengthError,
    InvalidRequestError,
    NoRouteError,
    ProviderError,
    RateLimitError,
    StarcoderRouterError,
    StoreError,
)
from .models import UnknownModelError

__all__ = ["GatewayError", "Problem", "problem_for"]


class Problem(NamedTuple):
    status: int
    type: str
    code: str | None
    message: str
    retry_after: float | None = None
    param: str | None = None


class GatewayError(Exception):
    """Raised by the gateway itself (bad body, missing key, rate limit): already a `Problem`."""

    def __init__(self, problem: Problem):
        self.problem = problem
        super().__init__(problem.message)


def invalid(message: str, *, param: str | None = None) -> GatewayError:
    return GatewayError(Problem(400, "invalid_request_error", None, message, param=param))


def problem_for(exc: BaseException, *, now: dt.datetime | None = None) -> Problem:
    """The `Problem` for any exception; anything unexpected is a 500 that names no detail."""
    if isinstance(exc, GatewayError):
        return exc.problem
    if isinstance(exc, UnknownModelError):
        return Problem(404, "invalid_request_error", "model_not_found", str(exc), param="model")
    if isinstance(exc, InvalidRequestError):
        return Problem(400, "invalid_request_error", None, str(exc))
    if isinstance(exc, NoRouteError):
        return _no_route(exc)
    if isinstance(exc, BudgetExceededError):
        return _budget(exc, now or dt.datetime.now(dt.UTC))
    if isinstance(exc, ContextLengthError):
        return _provider_overflow(exc)
    if isinstance(exc, RateLimitError):
        return Problem(429, "rate_limit_error", "rate_limit_exceeded",
                       "every deployment is rate-limited; try again later",
                       retry_after=exc.retry_after if exc.retry_after is not None else 1.0)
    if isinstance(exc, ProviderError):
        kind = type(exc).__name__
        return Problem(503, "service_unavailable", "upstream_failed",
                       f"no deployment could serve the request (last error: {kind})")
    if isinstance(exc, StoreError):
        return Problem(503, "service_unavailable", "store_unavailable",
                       "the spend store is unavailable")
    if isinstance(exc, StarcoderRouterError):
        return Problem(400, "invalid_request_error", None, str(exc))
    return Problem(500, "server_error", None, "internal error")


def overflow_message(window: int, prompt_tokens: int, completion_tokens: int) -> str:
    """Context overflow in the words of OpenAI and vLLM: clients such as LiteLLM recognise it by
    this text alone (litellm/litellm_core_utils/exception_mapping_utils.py), and openai-python
    puts only the message in the exception's text."""
    return (f"This model's maximum context length is {window} tokens. However, you requested "
            f"{prompt_tokens + completion_tokens} tokens ({prompt_tokens} in the messages, "
            f"{completion_tokens} in the completion). Please reduce the length of the messages "
            f"or completion.")


def _overflow(message: str) -> Problem:
    return Problem(400, "invalid_request_error", "context_length_exceeded", message,
                   param="messages")


def _provider_overflow(exc: ContextLengthError) -> Problem:
    if "maximum context length is" in exc.message:
        return _overflow(exc.message)
    window = f" {exc.context_window} tokens" if exc.context_window else " exceeded"
    return _overflow(f"This model's maximum context length is{window}: {exc.message}. "
                     "Please reduce the length of the messages or completion.")


def _no_route(exc: NoRouteError) -> Problem:
    # Static refusals (provider not configured, missing capability) come before fitting, so a
    # window reason means a deployment that could otherwise serve was too small. Every refusal
    # but the budget's lasts as long as the config does: a 4xx that says why, not a 503.
    decision = exc.decision
    reasons = [r for c in decision.candidates for r in c.reasons]
    if any("remaining budget" in r or "budget exhausted" in r for r in reasons):
        return Problem(429, "insufficient_quota", "insufficient_quota",
                       "the budget left cannot cover this request", retry_after=60.0)
    if exc.skipped or decision.ranked:
        # Deployments that could serve are cooling down after failures: that passes.
        return Problem(503, "service_unavailable", "no_deployment",
                       "every deployment that could serve is cooling down after failures; "
                       "try again later", retry_after=1.0)
    too_small = [c for c in decision.candidates
                 if c.prompt_tokens is not None and any("window" in r for r in c.reasons)]
    if too_small:
        # The largest window tried is the one the caller would have to fit.
        best = max(too_small, key=lambda c: c.deployment.context_window)
        assert best.prompt_tokens is not None
        return _overflow(overflow_message(best.deployment.context_window, best.prompt_tokens,
                                          decision.request.max_tokens))
    why = "; ".join(dict.fromkeys(reasons)) or "the model has no deployment"
    return Problem(400, "invalid_request_error", "unsupported_request",
                   f"no deployment of this model can serve this request: {why}",
                   param="model")


def _budget(exc: BudgetExceededError, now: dt.datetime) -> Problem:
    resets = exc.status.resets_at
    wait = max(1.0, math.ceil((resets - now).total_seconds())) if resets else None
    return Problem(429, "insufficient_quota", "insufficient_quota",
                   f"budget {exc.status.name!r} is exhausted", retry_after=wait)
