"""Bounds on the work one request can cause: every input whose size drives work has a cap here.

The gateway checks a request's fields against its `InputLimits` (the `[server.limits]` table
of the config) before anything else runs, and answers 400 naming the cap. The SDK applies the
schema caps itself (`SCHEMA_CEILING`): a schema is walked recursively by the validator, so its
depth and size are bounded everywhere, whoever builds the request.

| cap | default | where configured | answer |
|---|---|---|---|
| body size | 1,000,000 bytes | `[server] max_body_bytes` | 413 `request_too_large` |
| JSON nesting of the body | 64 levels | `[server.limits] max_json_depth` | 400 |
| `max_tokens` / `max_new_tokens` / `num_predict` | 1 ..= 4096 | `[server] max_tokens` | 400 |
| prompt + suffix + messages text | 262,144 chars | `[server.limits] max_text_chars` | 400 |
| number of messages | 256 | `[server.limits] max_messages` | 400 |
| number of stop sequences | 16 | `[server.limits] max_stops` | 400 |
| length of one stop sequence | 256 chars | `[server.limits] max_stop_chars` | 400 |
| JSON schema size (as compact JSON) | 65,536 bytes | `[server.limits] max_schema_bytes` | 400 |
| JSON schema nesting | 32 levels (ceiling 64) | `[server.limits] max_schema_depth` | 400 |
| `$ref`s in a schema | 64 (ceiling 256) | `[server.limits] max_schema_refs` | 400 |
| one `pattern` or `patternProperties` key | 1,024 chars | `max_pattern_chars` | 400 |
| grammar (GBNF) size | 65,536 chars | `[server.limits] max_grammar_chars` | 400 |
| `n` / `best_of` | 1 | fixed | 400 |
| `seed` | a signed 64-bit integer | fixed | 400 |
| model name | 256 chars | fixed (`MAX_MODEL_CHARS`) | 400 |

Schemas never cause a fetch: a `$ref` must resolve inside the schema (400 otherwise), and
`pattern`s run on RE2, whose matching is linear in the text (400 for a pattern RE2 cannot
compile). Stop sequences are matched in time linear in the text and the stops (see
`_providers/stops.py`). `logit_bias`, `logprobs` and other fields the gateway does not use are
ignored, never acted on.

Example::

    limits = InputLimits(max_stops=4)
    check_fields({"prompt": "def f(", "stop": ["\\n"] * 5}, limits)  # InvalidRequestError
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import Field

from .._errors import ConfigError, InvalidRequestError
from .._validation import FrozenModel

__all__ = [
    "MAX_MODEL_CHARS",
    "SCHEMA_CEILING",
    "InputLimits",
    "LimitExceeded",
    "check_fields",
    "check_json_depth",
    "check_schema_shape",
    "walk_members",
]

_INT64 = 2**63
MAX_MODEL_CHARS = 256  # longer than any name we serve; an unknown name is echoed in the 404


class LimitExceeded(InvalidRequestError):
    """A request goes over one of the caps; `cap` names it, `param` the field."""

    def __init__(self, message: str, *, cap: str, param: str | None = None):
        super().__init__(message)
        self.cap = cap
        self.param = param


class InputLimits(FrozenModel):
    """The caps on one request's inputs (defaults in the module docstring's table)."""

    _error = ConfigError

    max_json_depth: int = Field(default=64, ge=4, le=512)
    max_text_chars: int = Field(default=262_144, gt=0)
    max_messages: int = Field(default=256, gt=0)
    max_stops: int = Field(default=16, gt=0, le=1024)
    max_stop_chars: int = Field(default=256, gt=0, le=65_536)
    max_schema_bytes: int = Field(default=65_536, gt=0)
    max_schema_depth: int = Field(default=32, gt=0, le=64)
    max_schema_refs: int = Field(default=64, ge=0, le=256)
    max_pattern_chars: int = Field(default=1024, gt=0, le=65_536)
    max_grammar_chars: int = Field(default=65_536, gt=0)


# What the SDK enforces on every schema, gateway or not: the configurable caps' ceilings. The
# validator recurses once per level (several frames each), so this keeps it far from Python's
# recursion limit, and the $ref count bounds how often one subschema is walked again.
SCHEMA_CEILING = InputLimits(max_schema_bytes=1_000_000, max_schema_depth=64,
                             max_schema_refs=256, max_pattern_chars=65_536)


def _over(what: str, size: int, limit: int, cap: str, param: str | None) -> LimitExceeded:
    return LimitExceeded(f"{what} is {size}; the limit is {limit} ({cap})", cap=cap,
                         param=param)


def check_json_depth(value: Any, limit: int, what: str = "the body",
                     cap: str = "max_json_depth") -> None:
    """Refuse `value` when its arrays and objects nest deeper than `limit` (walked without
    recursion, so any depth is safe to check)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > limit:
            raise LimitExceeded(f"{what} nests deeper than {limit} levels ({cap})", cap=cap)
        stack.extend((child, depth + 1) for child in children
                     if isinstance(child, (dict, list)))


def walk_members(schema: Any) -> Iterator[tuple[str, Any, int]]:
    """(key, value, depth) for every member of every object in `schema`, depth-first."""
    stack: list[tuple[Any, int]] = [(schema, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                yield key, value, depth
                if isinstance(value, (dict, list)):
                    stack.append((value, depth + 1))
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node if isinstance(v, (dict, list)))


def check_schema_shape(schema: Any, limits: InputLimits = SCHEMA_CEILING,
                       param: str = "json_schema") -> list[str]:
    """Check a JSON schema's size, depth, `$ref` count and pattern lengths; returns its
    regular expressions (`pattern` values and `patternProperties` keys) for the caller to
    compile."""
    check_json_depth(schema, limits.max_schema_depth, "the JSON schema", "max_schema_depth")
    try:
        size = len(json.dumps(schema, separators=(",", ":"), ensure_ascii=False))
    except (TypeError, ValueError):
        size = 0  # not JSON at all: the request's own check says so
    if size > limits.max_schema_bytes:
        raise _over("the JSON schema's size in bytes", size, limits.max_schema_bytes,
                    "max_schema_bytes", param)
    refs = 0
    patterns: list[str] = []
    for key, value, _ in walk_members(schema):
        if key in ("$ref", "$dynamicRef", "$recursiveRef"):
            refs += 1
        elif key == "pattern" and isinstance(value, str):
            patterns.append(value)
        elif key == "patternProperties" and isinstance(value, dict):
            patterns.extend(k for k in value if isinstance(k, str))
    if refs > limits.max_schema_refs:
        raise _over("the number of $refs in the JSON schema", refs, limits.max_schema_refs,
                    "max_schema_refs", param)
    for pattern in patterns:
        if len(pattern) > limits.max_pattern_chars:
            raise _over("the length of a pattern in the JSON schema", len(pattern),
                        limits.max_pattern_chars, "max_pattern_chars", param)
    return patterns


def _texts(fields: Mapping[str, Any]) -> Iterator[Any]:
    for name in ("prompt", "prefix", "suffix"):
        yield fields.get(name)
    for message in fields.get("messages") or ():
        if isinstance(message, Mapping):
            yield message.get("content")


def check_fields(fields: Mapping[str, Any], limits: InputLimits) -> None:
    """Refuse request fields (`CompletionRequest`'s names, as a protocol parsed them) that go
    over a cap, before any work that grows with them."""
    chars = sum(len(t) for t in _texts(fields) if isinstance(t, str))
    if chars > limits.max_text_chars:
        raise _over("the text of prompt, suffix and messages, in characters", chars,
                    limits.max_text_chars, "max_text_chars", "prompt")
    messages = fields.get("messages")
    if isinstance(messages, (list, tuple)) and len(messages) > limits.max_messages:
        raise _over("the number of messages", len(messages), limits.max_messages,
                    "max_messages", "messages")
    stop = fields.get("stop")
    stops = [stop] if isinstance(stop, str) else stop
    if isinstance(stops, (list, tuple)):
        if len(stops) > limits.max_stops:
            raise _over("the number of stop sequences", len(stops), limits.max_stops,
                        "max_stops", "stop")
        longest = max((len(s) for s in stops if isinstance(s, str)), default=0)
        if longest > limits.max_stop_chars:
            raise _over("the length of a stop sequence", longest, limits.max_stop_chars,
                        "max_stop_chars", "stop")
    seed = fields.get("seed")
    if isinstance(seed, int) and not -_INT64 <= seed < _INT64:
        raise LimitExceeded("seed must fit in a signed 64-bit integer", cap="seed",
                            param="seed")
    fmt = fields.get("response_format")
    if isinstance(fmt, Mapping):
        _check_format(fmt, limits)


def _check_format(fmt: Mapping[str, Any], limits: InputLimits) -> None:
    grammar = fmt.get("grammar")
    if isinstance(grammar, str) and len(grammar) > limits.max_grammar_chars:
        raise _over("the grammar's length", len(grammar), limits.max_grammar_chars,
                    "max_grammar_chars", "response_format")
    schema = fmt.get("json_schema")
    if isinstance(schema, Mapping) and isinstance(schema.get("schema"), Mapping):
        schema = schema["schema"]  # the OpenAI shape
    if schema is not None:
        check_schema_shape(schema, limits, "response_format")
