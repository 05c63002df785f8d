"""The base of every validated value object: frozen pydantic models whose errors join our tree."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from ._errors import ConfigError, StarcoderRouterError

__all__ = ["FrozenModel", "describe_validation_error"]


class FrozenModel(BaseModel):
    """Immutable, strict about unknown fields, and built lazily to keep import time low.

    Invalid input raises the class's `_error` (a `StarcoderRouterError`), not pydantic's own
    error, so callers catch one exception tree.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)
    _error: ClassVar[type[StarcoderRouterError]] = ConfigError

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise self._error(describe_validation_error(exc, type(self).__name__)) from exc


def describe_validation_error(exc: ValidationError, what: str) -> str:
    """`"CompletionRequest: max_tokens: Input should be greater than 0"`, one line per problem."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{loc}: {msg}" if loc else msg)
    return f"{what}: " + "; ".join(lines)
