"""JSON schema validators that cannot be turned against the process that runs them.

A schema comes from the caller, so three things jsonschema does by default are switched off:

* fetching: a `$ref` to a URL (or a relative one under an `$id` URL) would make jsonschema's
  default resolver download it, with no timeout, wherever validation runs. Here a `$ref`
  resolves within the schema (and the metaschemas jsonschema ships) or the schema is refused;
  the retriever refuses every URI (https://python-jsonschema.readthedocs.io/en/stable/referencing/);
* backtracking regexes: `pattern` and `patternProperties` run on RE2 (`google-re2`), whose
  matching time is linear in the text, instead of Python's `re`, which `^(a+)+$` takes
  exponential time on. A pattern RE2 cannot compile (backreferences, lookaround) is refused;
* quadratic checks: `uniqueItems` compares items pairwise in jsonschema; here one pass over
  hashable forms;
* unbounded shapes: depth, size and `$ref` count are capped first (`limits.check_schema_shape`).

    validator = safe_validator({"type": "object", "properties": {"n": {"pattern": "^[0-9]+$"}}})
    list(validator.iter_errors({"n": "12"}))  # []
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

from .._errors import InvalidRequestError, MissingDependencyError
from .limits import SCHEMA_CEILING, InputLimits, check_schema_shape

__all__ = ["SchemaRefused", "check_schema", "safe_validator"]


class SchemaRefused(InvalidRequestError):
    """The schema cannot be used safely (an unresolvable `$ref`, an unsupported pattern)."""


def _re2() -> Any:
    try:
        import re2
    except ImportError as exc:
        raise MissingDependencyError("checking a JSON schema's patterns in linear time",
                                     "google-re2", "schema") from exc
    return re2


@functools.lru_cache(maxsize=256)
def _compile(pattern: str) -> Any:
    re2 = _re2()
    options = re2.Options()
    options.log_errors = False  # a refused pattern is the caller's error, not ours to log
    try:
        return re2.compile(pattern, options)
    except Exception:  # re2.error, or a pattern too large for its memory budget
        shown = pattern if len(pattern) <= 40 else pattern[:40] + "..."
        raise SchemaRefused(
            f"json_schema: the pattern {shown!r} is not supported (patterns are RE2 syntax: "
            "no backreferences or lookaround, bounded repetition)") from None


def _refuse(uri: str) -> Any:
    from referencing.exceptions import NoSuchResource

    raise NoSuchResource(ref=uri)  # type: ignore[call-arg]  # attrs fields


def _keywords() -> dict[str, Any]:
    from jsonschema import ValidationError

    def pattern(validator: Any, patrn: str, instance: Any, schema: Any) -> Iterator[Any]:
        if validator.is_type(instance, "string") and not _compile(patrn).search(instance):
            yield ValidationError(f"{instance!r:.60} does not match {patrn!r:.60}")

    def pattern_properties(validator: Any, props: dict[str, Any], instance: Any,
                           schema: Any) -> Iterator[Any]:
        if not validator.is_type(instance, "object"):
            return
        for patrn, subschema in props.items():
            compiled = _compile(patrn)
            for key, value in instance.items():
                if compiled.search(key):
                    yield from validator.descend(value, subschema, path=key,
                                                 schema_path=patrn)

    def unique_items(validator: Any, unique: Any, instance: Any,
                     schema: Any) -> Iterator[Any]:
        if not unique or not validator.is_type(instance, "array"):
            return
        seen: set[Any] = set()
        for item in instance:
            key = _canonical(item)
            if key in seen:
                yield ValidationError(f"{instance!r:.60} has non-unique elements")
                return
            seen.add(key)

    return {"pattern": pattern, "patternProperties": pattern_properties,
            "uniqueItems": unique_items}


def _canonical(value: Any) -> Any:
    """A hashable form of a JSON value, equal where jsonschema's equality holds (1 == 1.0,
    but true != 1), so `uniqueItems` costs one pass instead of jsonschema's pairwise
    comparison of unsortable items (1,000 distinct objects took 3 s, 4,000 took 26 s). The
    value's depth is bounded before validation."""
    if isinstance(value, bool) or value is None:
        return ("b", value)
    if isinstance(value, (int, float, str)):
        return value
    if isinstance(value, list):
        return ("l", tuple(_canonical(v) for v in value))
    if isinstance(value, dict):
        return ("d", frozenset((k, _canonical(v)) for k, v in value.items()))
    return ("o", id(value))


_CLASSES: dict[type, type] = {}


def _validator_class(schema: Any) -> Any:
    import jsonschema

    default = jsonschema.Draft202012Validator
    declared = schema.get("$schema") if isinstance(schema, dict) else None
    if declared is not None:
        known = jsonschema.validators._META_SCHEMAS  # type: ignore[attr-defined]
        if not isinstance(declared, str) or declared.rstrip("#") not in {
                k.rstrip("#") for k in known}:
            raise SchemaRefused("json_schema: $schema names no JSON schema draft this "
                                "gateway knows (use draft 4, 6, 7, 2019-09 or 2020-12)")
    base = jsonschema.validators.validator_for(schema, default=default)
    cls = _CLASSES.get(base)
    if cls is None:
        cls = _CLASSES[base] = jsonschema.validators.extend(  # type: ignore[no-untyped-call]
            base, _keywords())
    return cls


def safe_validator(schema: Any) -> Any:
    """A jsonschema validator for `schema` that fetches nothing and matches patterns on RE2."""
    from referencing import Registry

    # jsonschema adds the metaschemas it ships to this registry; nothing else is known.
    return _validator_class(schema)(
        schema, registry=Registry(retrieve=_refuse))  # type: ignore[call-arg]


def check_schema(schema: Any, limits: InputLimits = SCHEMA_CEILING) -> None:
    """Refuse a schema that is invalid, too large, not resolvable locally, or whose patterns
    RE2 cannot compile; a trial run resolves every `$ref` the empty instance reaches."""
    import jsonschema

    patterns = check_schema_shape(schema, limits)
    if patterns:
        for pattern in patterns:
            _compile(pattern)
    cls = _validator_class(schema)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.path) or "(root)"
        raise SchemaRefused(f"json_schema is not a valid JSON schema at {where}: "
                            f"{exc.message:.200}") from None
    validator = safe_validator(schema)
    try:
        for _ in validator.iter_errors({}):
            pass
        _resolve_all_refs(validator, schema)
    except SchemaRefused:
        raise
    except RecursionError:
        raise SchemaRefused("json_schema refers to itself without end") from None
    except Exception as exc:  # jsonschema's and referencing's errors share no base class
        raise SchemaRefused(_unusable(exc)) from None


def _resolve_all_refs(validator: Any, schema: Any) -> None:
    """Resolve every `$ref` the schema holds, so that one the trial run did not reach is
    refused now rather than failing (or being fetched) after the call was paid for."""
    from .limits import walk_members

    members = list(walk_members(schema))
    if any(key in ("$id", "id") and depth > 1 for key, _, depth in members):
        return  # embedded resources change the base URI: leave those to the trial run
    resolver = getattr(validator, "_resolver", None)  # jsonschema >= 4.18
    if resolver is None:
        return
    for key, value, _ in members:
        if key == "$ref" and isinstance(value, str):
            resolver.lookup(value)


def _unusable(exc: Exception) -> str:
    from referencing.exceptions import Unresolvable

    if isinstance(exc, Unresolvable):
        return ("json_schema has a $ref that does not resolve within the schema (references "
                "are never fetched: use $defs and '#/$defs/...')")
    return f"json_schema cannot be used ({type(exc).__name__})"
