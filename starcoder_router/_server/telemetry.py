"""OpenTelemetry traces: one span per attempt, with the GenAI semantic conventions
(https://opentelemetry.io/docs/specs/semconv/gen-ai/gen-ai-spans/). Works with any router, in
the gateway or not; needs the `otel` extra.

Example::

    from starcoder_router import Router, otel_hooks

    router = Router(hooks=otel_hooks())          # spans go to the global tracer provider

Each span starts when its attempt started (the hook runs when the attempt ends) and is a child
of whatever span is current, so a caller's own request span holds the attempts it caused.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from .._errors import MissingDependencyError
from .._running.hooks import Hooks
from .context import current_call

if TYPE_CHECKING:
    from .._running.results import Attempt

__all__ = ["attempt_attributes", "otel_hooks"]

OPERATION = "text_completion"


def attempt_attributes(attempt: Attempt, requested_model: str | None) -> dict[str, Any]:
    """The span attributes of one attempt (pure, so they are tested without a tracer)."""
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": OPERATION,
        "gen_ai.system": "starcoder-router",
        "gen_ai.request.model": requested_model or attempt.deployment,
        "gen_ai.response.model": attempt.deployment,
        "starcoder_router.deployment": attempt.deployment,
        "starcoder_router.outcome": attempt.outcome,
        "starcoder_router.retry": attempt.retry,
        "starcoder_router.cost_usd": attempt.cost_usd,
    }
    if attempt.usage is not None:
        attrs["gen_ai.usage.input_tokens"] = attempt.usage.prompt_tokens
        attrs["gen_ai.usage.output_tokens"] = attempt.usage.completion_tokens
    if attempt.ttft_s is not None:
        attrs["starcoder_router.time_to_first_token_s"] = attempt.ttft_s
    if attempt.error is not None:
        attrs["error.type"] = type(attempt.error).__name__
        if attempt.error.status_code is not None:
            attrs["http.response.status_code"] = attempt.error.status_code
    return attrs


def otel_hooks(tracer_provider: Any = None) -> Hooks:
    """Hooks that record every attempt as a span (on `tracer_provider`, or the global one)."""
    try:
        from opentelemetry import trace
    except ImportError as exc:
        raise MissingDependencyError("OpenTelemetry tracing", "opentelemetry-api",
                                     "otel") from exc
    tracer = trace.get_tracer("starcoder_router", tracer_provider=tracer_provider)

    def on_attempt(attempt: Attempt) -> None:
        ctx = current_call.get()
        attrs = attempt_attributes(attempt, ctx.model if ctx else None)
        if ctx is not None:
            attrs["starcoder_router.request_id"] = ctx.request_id
            if ctx.tenant:
                attrs["starcoder_router.tenant"] = ctx.tenant
        end = time.time_ns()
        start = end - int(attempt.latency_s * 1e9)
        span = tracer.start_span(f"{OPERATION} {attrs['gen_ai.request.model']}",
                                 kind=trace.SpanKind.CLIENT, start_time=start,
                                 attributes=attrs)
        if attempt.outcome in ("error", "interrupted"):
            span.set_status(trace.Status(trace.StatusCode.ERROR, attrs.get("error.type")))
        span.end(end_time=end)

    return Hooks(on_attempt=[on_attempt])
