"""Checking structured output: the text must be JSON, an object, and match the schema if given."""

from __future__ import annotations

import json
from typing import Any

from .._errors import InvalidRequestError, MissingDependencyError
from .limits import check_json_depth
from .request import ResponseFormat
from .schema import safe_validator

__all__ = ["require_schema_support", "validate_structured"]

# A schema nests at most 64 levels (limits.SCHEMA_CEILING); an answer deeper than this cannot
# match one that is not recursive, and the validator's recursion stays far from the stack limit.
_OUTPUT_DEPTH = 128


def require_schema_support(fmt: ResponseFormat | None) -> None:
    """Fail before spending anything when a schema check will need `jsonschema`: without it the
    schema itself cannot be checked either, so it could be invalid and still be paid for."""
    if fmt is not None and fmt.json_schema is not None:
        for module, package in (("jsonschema", "jsonschema"), ("re2", "google-re2")):
            try:
                __import__(module)
            except ImportError as exc:
                raise MissingDependencyError("checking a JSON schema and the output against "
                                             "it", package, "schema") from exc


def validate_structured(text: str, fmt: ResponseFormat) -> str | None:
    """None when `text` satisfies `fmt`, else what is wrong."""
    if fmt.type == "grammar":
        return None  # the server enforced the grammar; there is nothing we can re-check
    try:
        value: Any = json.loads(text)
    except ValueError as exc:
        return f"not valid JSON ({exc})"
    except RecursionError:
        return "JSON nested too deep to check"
    if fmt.json_schema is None:
        return None if isinstance(value, dict) else "not a JSON object"
    try:
        # The model's output can be steered: bound its nesting before the validator recurses.
        check_json_depth(value, _OUTPUT_DEPTH, "the output", "output depth")
    except InvalidRequestError as exc:
        return str(exc)
    try:
        errors = sorted(safe_validator(fmt.json_schema).iter_errors(value),
                        key=lambda e: e.path)
    except RecursionError:  # a recursive schema ($ref "#") over a deep answer
        return "nested too deep to check against the schema"
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.path) or "(root)"
        return f"does not match the schema at {where}: {first.message}"
    return None
