"""Checking structured output: the text must be JSON, an object, and match the schema if given."""

from __future__ import annotations

import json
from typing import Any

from .._errors import MissingDependencyError
from .request import ResponseFormat

__all__ = ["require_schema_support", "validate_structured"]


def require_schema_support(fmt: ResponseFormat | None) -> None:
    """Fail before spending anything when a schema check will need `jsonschema`: without it the
    schema itself cannot be checked either, so it could be invalid and still be paid for."""
    if fmt is not None and fmt.json_schema is not None:
        try:
            import jsonschema  # noqa: F401
        except ImportError as exc:
            raise MissingDependencyError("checking a JSON schema and the output against it",
                                         "jsonschema", "schema") from exc


def validate_structured(text: str, fmt: ResponseFormat) -> str | None:
    """None when `text` satisfies `fmt`, else what is wrong."""
    if fmt.type == "grammar":
        return None  # the server enforced the grammar; there is nothing we can re-check
    try:
        value: Any = json.loads(text)
    except ValueError as exc:
        return f"not valid JSON ({exc})"
    if fmt.json_schema is None:
        return None if isinstance(value, dict) else "not a JSON object"
    import jsonschema

    validator_cls = jsonschema.validators.validator_for(fmt.json_schema)
    errors = sorted(validator_cls(fmt.json_schema).iter_errors(value), key=lambda e: e.path)
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.path) or "(root)"
        return f"does not match the schema at {where}: {first.message}"
    return None
