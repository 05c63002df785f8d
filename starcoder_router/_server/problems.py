"""One description of what went wrong, whatever protocol the client speaks.

`problem_for(exc)` turns any error of the router (or of the gateway itself) into a `Problem`:
the HTTP status, an OpenAI-style `type` and `code`, a message safe to show the caller, and a
`Retry-After` when waiting helps. Each protocol module renders a `Problem` in its own shape.
The statuses follow what OpenAI's clients expect: 400 (`context_length_exceeded` when the
prompt fits no deployment), 401, 404 for an unknown model, 413 for a huge body, 429 with
`Retry-After` for rate limits and exhausted budgets, 503 when no deployment can serve.
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
        return Problem(400, "invalid_request_error", "context_length_exceeded", exc.message,
                       param="prompt")
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


def _no_route(exc: NoRouteError) -> Problem:
    # Static refusals (provider not configured, missing capability) come before fitting, so a
    # window reason means a deployment that could otherwise serve was too small.
    reasons = [r for c in exc.decision.candidates for r in c.reasons]
    if any("remaining budget" in r for r in reasons):
        return Problem(429, "insufficient_quota", "insufficient_quota",
                       "the budget left cannot cover this request", retry_after=60.0)
    if any("> window" in r for r in reasons):
        return Problem(400, "invalid_request_error", "context_length_exceeded",
                       "the prompt plus max_tokens fits no deployment's context window",
                       param="prompt")
    return Problem(503, "service_unavailable", "no_deployment",
                   "no deployment can serve this request now", retry_after=1.0)


def _budget(exc: BudgetExceededError, now: dt.datetime) -> Problem:
    resets = exc.status.resets_at
    wait = max(1.0, math.ceil((resets - now).total_seconds())) if resets else None
    return Problem(429, "insufficient_quota", "insufficient_quota",
                   f"budget {exc.status.name!r} is exhausted", retry_after=wait)
