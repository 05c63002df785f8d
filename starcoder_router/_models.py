"""The base of every validated value object: frozen pydantic models whose errors join our tree."""

from __future__ import annotations

import contextvars
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from ._errors import ConfigError, StarcoderRouterError

__all__ = ["FrozenModel", "describe_validation_error", "validation_error_of"]


class FrozenModel(BaseModel):
    """Immutable, strict about unknown fields, and built lazily to keep import time low.

    Invalid input raises the class's `_error` (a `StarcoderRouterError`), not pydantic's own
    error, so callers catch one exception tree.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)
    _error: ClassVar[type[StarcoderRouterError]] = ConfigError

    def __init__(self, /, **data: Any) -> None:
        if _VALIDATING.get():
            # Nested inside another model's validation: let pydantic collect the error with
            # its full location; the outermost model converts it.
            super().__init__(**data)
            return
        token = _VALIDATING.set(True)
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise self._error(describe_validation_error(exc, type(self).__name__)) from exc
        finally:
            _VALIDATING.reset(token)


_VALIDATING: contextvars.ContextVar[bool] = contextvars.ContextVar("_VALIDATING", default=False)


def validation_error_of(exc: BaseException) -> ValidationError | None:
    """The pydantic error behind one of ours (or `exc` itself), for callers that add context."""
    if isinstance(exc, ValidationError):
        return exc
    cause = exc.__cause__
    return cause if isinstance(cause, ValidationError) else None


def describe_validation_error(exc: ValidationError, what: str) -> str:
    """`"CompletionRequest: max_tokens: Input should be greater than 0"`, one line per problem."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{loc}: {msg}" if loc else msg)
    return f"{what}: " + "; ".join(lines)
