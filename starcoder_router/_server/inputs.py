"""What every protocol checks in a request before any work: the JSON body's shape and nesting,
the numbers' types and ranges, and the input caps (`_routing/limits.py`).

Numbers are strict, as OpenAI's and TGI's own validation is: `true` is not 1, and `5.5` is not
an integer. A token limit must be at least 1 (OpenAI and TGI answer 400/422 for 0 and below);
Ollama's `num_predict` keeps its meaning, -1 (no limit) and -2 (fill the context) asking for
as many tokens as this gateway allows (`[server] max_tokens`).

    body = load_json(raw, max_depth=64)            # 400 for bad JSON or deep nesting
    check_call(parsed.call, gateway.settings.limits)  # 400 naming the cap
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AllowInfNan, Strict

from .._routing.limits import (
    MAX_MODEL_CHARS,
    InputLimits,
    LimitExceeded,
    check_fields,
    check_json_depth,
)
from .._wire_json import loads
from .problems import GatewayError, Problem, invalid

if TYPE_CHECKING:
    from .gateway import Call, Gateway

__all__ = ["Float", "Int", "check_call", "check_max_tokens", "load_json", "ollama_max_tokens"]

# Field types of the protocol bodies: no bool-as-number, no float-as-integer, no NaN.
Int = Annotated[int, Strict()]
Float = Annotated[float, Strict(), AllowInfNan(False)]


def load_json(raw: bytes, max_depth: int) -> dict[str, Any]:
    """A body as a JSON object nested at most `max_depth` levels; 400 otherwise. Python's
    decoder recurses per level, so a deep body would otherwise end in a RecursionError."""
    try:
        body = loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise invalid(f"the body is not valid JSON: {str(exc)[:200]}") from None
    except RecursionError:
        body = None
    if body is None or _too_deep(body, max_depth):
        raise _limit(LimitExceeded(f"the body nests deeper than {max_depth} levels "
                                   "(max_json_depth)", cap="max_json_depth"))
    if not isinstance(body, dict):
        raise invalid("the body must be a JSON object")
    return body


def _too_deep(body: Any, max_depth: int) -> bool:
    try:
        check_json_depth(body, max_depth)
    except LimitExceeded:
        return True
    return False


def check_max_tokens(value: int | None, gateway: Gateway, param: str = "max_tokens") -> int:
    """The caller's token limit, or the gateway's default: 400 below 1 or above the cap."""
    settings = gateway.settings
    if value is None:
        return settings.default_max_tokens
    if value < 1:
        raise invalid(f"{param} must be at least 1, not {value}", param=param)
    if value > settings.max_tokens:
        raise invalid(f"{param} {value} is above this gateway's limit of "
                      f"{settings.max_tokens}", param=param)
    return value


def ollama_max_tokens(num_predict: int | None, gateway: Gateway) -> int:
    """Ollama's `num_predict`: -1 (no limit) and -2 (fill the context) become this gateway's
    cap (https://github.com/ollama/ollama/blob/main/docs/modelfile.md#valid-parameters-and-values)."""
    if num_predict in (-1, -2):
        return gateway.settings.max_tokens
    if num_predict is not None and num_predict < 1:
        raise invalid(f"num_predict must be at least 1, or -1 for no limit, not {num_predict}",
                      param="num_predict")
    return check_max_tokens(num_predict, gateway, "num_predict")


def check_call(call: Call, limits: InputLimits) -> None:
    """400 when the call's fields go over an input cap."""
    if call.model is not None and len(call.model) > MAX_MODEL_CHARS:
        raise _limit(LimitExceeded(f"the model name is longer than {MAX_MODEL_CHARS} "
                                   "characters", cap="model name", param="model"))
    try:
        check_fields(call.fields, limits)
    except LimitExceeded as exc:
        raise _limit(exc) from None


def _limit(exc: LimitExceeded) -> GatewayError:
    return GatewayError(Problem(400, "invalid_request_error", "limit_exceeded", str(exc),
                                param=exc.param))
