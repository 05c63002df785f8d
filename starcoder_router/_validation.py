"""The base of every validated value object: frozen pydantic models whose errors join our tree."""

from __future__ import annotations

import contextvars
import re
import tomllib
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from ._errors import ConfigError, StarcoderRouterError, toml_key

__all__ = [
    "FrozenModel",
    "config_error",
    "describe_validation_error",
    "read_toml",
    "validate_config",
    "validation_error_of",
]

_M = TypeVar("_M", bound=BaseModel)


class FrozenModel(BaseModel):
    """Immutable, strict about unknown fields, and built lazily to keep import time low.

    Invalid input raises the class's `_error` (a `StarcoderRouterError`), not pydantic's own
    error, so callers catch one exception tree. Floats must be finite: an infinite price, limit
    or timeout would pass every range check here and overflow later, far from its cause.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True, allow_inf_nan=False)
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


def read_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError("file not found", source=path) from None
    except IsADirectoryError:
        raise ConfigError("is a directory, not a TOML file", source=path) from None
    except OSError as exc:
        raise ConfigError(f"cannot read it: {exc.strerror or exc}", source=path) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"invalid TOML: not UTF-8 ({exc.reason})", source=path) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", source=path) from None
    except (UnicodeEncodeError, ValueError):  # a lone surrogate or a NUL in the name
        raise ConfigError("not a valid file name", source=repr(path)) from None


def validate_config(model: type[_M], data: Any, *, source: str, prefix: str = "") -> _M:
    try:
        return model.model_validate(data)
    except (ValidationError, ConfigError) as raised:
        exc = validation_error_of(raised)
        if exc is None:
            raise
        raise config_error(exc, source=source, prefix=prefix) from None


def config_error(exc: ValidationError, *, source: str, prefix: str = "") -> ConfigError:
    """One ConfigError naming the file and, for every problem, its TOML table and key."""
    problems = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if isinstance(p, (str, int)))
        field = ".".join(p for p in (prefix, loc) if p) or None
        problems.append((field, _toml_message(err["msg"])))
    if len(problems) == 1:
        field, message = problems[0]
        return ConfigError(message, source=source, field=field)
    listed = "\n".join(f"  {toml_key(f)}: {m}" if f else f"  {m}" for f, m in problems)
    error = ConfigError(f"{len(problems)} problems:\n{listed}", source=source)
    error.field = problems[0][0]
    return error


def _toml_message(msg: str) -> str:
    """pydantic's wording in TOML's terms: a dict is a table; no class names."""
    msg = msg.removeprefix("Value error, ")
    msg = re.sub(r"a valid dictionary or instance of \w+", "a table", msg)
    msg = msg.replace("a valid dictionary", "a table").replace("a valid list", "an array")
    return {"Field required": "missing (required)",
            "Extra inputs are not permitted": "unknown key"}.get(msg, msg)
