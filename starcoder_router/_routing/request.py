"""What a caller asks for: one `CompletionRequest`, of one of three kinds.

* left-to-right: `prompt`
* fill-in-the-middle: `prefix` + `suffix`, optionally with repository context
  (`repo_name`, `path` of the current file, and other `files` as `(path, text)`)
* instruct/chat: `messages`
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypedDict

from pydantic import Field, ValidationError, field_validator, model_validator

from .._errors import InvalidRequestError
from .._validation import FrozenModel, describe_validation_error
from .limits import SCHEMA_CEILING

__all__ = [
    "AutocompleteMode",
    "CompletionRequest",
    "Message",
    "Mode",
    "RepoFile",
    "RequestFields",
    "ResponseFormat",
]

Mode = Literal["prompt", "fim", "chat"]
# Editor autocomplete (`starcoder_router._autocomplete`): stop at the line's end, at the end of
# the block opened at the cursor, or pick one of them from the cursor's surroundings.
AutocompleteMode = Literal["line", "block", "auto"]
SpecialTokenHandling = Literal["escape", "reject", "keep"]
# The longest first-token deadline a request or deployment may set: ten minutes is already far
# past any request's own timeout.
MAX_FIRST_TOKEN_TIMEOUT_S = 600.0


class _Frozen(FrozenModel):
    _error = InvalidRequestError


def _unicode_text(value: Any) -> Any:
    """`value`, if every string in it can be sent as UTF-8.

    A lone surrogate such as `"\\ud800"` is a valid Python `str` but not Unicode text: the token
    counter and the JSON body would both fail on it far from the caller.
    """
    for text in value if isinstance(value, tuple) else (value,):
        if isinstance(text, str) and not text.isascii() and not _latin1(text):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ValueError(
                    f"contains {text[exc.start]!r} at index {exc.start}, a lone surrogate that "
                    "is not valid Unicode text"
                ) from None
    return value


def _latin1(text: str) -> bool:
    # Text whose characters all fit in one byte holds no surrogate; this check is a copy,
    # several times faster than encoding to UTF-8 (accented code is mostly Latin-1).
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def _json_body(value: Any, what: str = "") -> None:
    """Refuse what cannot go into a JSON request body, before any budget is held."""
    try:
        json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValueError(f"{what}cannot be sent as JSON: {exc}") from None


def _checked_schema(schema: dict[str, Any]) -> None:
    """Refuse a JSON schema that is itself invalid, so a request that could never be validated
    is not sent and paid for; and one that could turn the check against us (a remote `$ref`, a
    backtracking pattern, a depth that exhausts the stack): see `schema.py`. Needs the `schema`
    extra; without it the router refuses the request before any call (see
    `require_schema_support`)."""
    from .limits import check_json_depth

    check_json_depth(schema, SCHEMA_CEILING.max_schema_depth, "the JSON schema",
                     "max_schema_depth")
    _json_body(schema, "json_schema ")
    try:
        import jsonschema  # noqa: F401
        import re2  # noqa: F401
    except ImportError:
        return
    from .schema import check_schema

    try:
        check_schema(schema)
    except InvalidRequestError as exc:
        raise ValueError(str(exc)) from None


class Message(_Frozen):
    """One chat turn."""

    role: Literal["system", "user", "assistant"]
    content: str

    _text = field_validator("content")(_unicode_text)


class RepoFile(_Frozen):
    """Another file of the repository, given to the model as context for fill-in-the-middle."""

    path: str
    text: str

    _text = field_validator("path", "text")(_unicode_text)

    @model_validator(mode="before")
    @classmethod
    def _from_pair(cls, data: Any) -> Any:
        if isinstance(data, (tuple, list)) and len(data) == 2:
            return {"path": data[0], "text": data[1]}
        return data


class ResponseFormat(_Frozen):
    """Structured output: any JSON object, JSON that matches `json_schema`, or text that follows a
    GBNF `grammar` (Fireworks and llama.cpp only).

    Accepts the OpenAI shapes too: `{"type": "json_object"}` and
    `{"type": "json_schema", "json_schema": {"name": ..., "schema": {...}}}`.
    """

    type: Literal["json_object", "json_schema", "grammar"]
    json_schema: dict[str, Any] | None = None
    grammar: str | None = None
    name: str = "response"
    strict: bool = True

    @model_validator(mode="before")
    @classmethod
    def _from_openai(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and isinstance(data.get("json_schema"), Mapping):
            inner = data["json_schema"]
            if "schema" in inner:
                out = {k: v for k, v in data.items() if k != "json_schema"}
                out["json_schema"] = inner["schema"]
                out.setdefault("name", inner.get("name", "response"))
                if "strict" in inner:
                    out.setdefault("strict", bool(inner["strict"]))
                return out
        return data

    @model_validator(mode="after")
    def _check(self) -> ResponseFormat:
        if self.type == "json_schema" and not self.json_schema:
            raise ValueError("type 'json_schema' needs a json_schema")
        if (self.type == "grammar") != (self.grammar is not None):
            raise ValueError("a grammar goes with type 'grammar', and only with it")
        _unicode_text(self.grammar)
        if self.json_schema is not None:
            _checked_schema(self.json_schema)
        return self


class CompletionRequest(_Frozen):
    """A code-generation request. Exactly one of `prompt`, `prefix` (+`suffix`) or `messages`.

    Example::

        CompletionRequest(prefix="def add(a, b):\\n    ", suffix="\\n", max_tokens=32)

    `special_tokens` decides what happens to StarCoder 2 control strings such as `<fim_prefix>`
    found in user text: "escape" (they reach the model as plain text), "reject" (raise), or
    "keep" (they act as control tokens). The default keeps them in a raw `prompt`, whose format
    the caller owns, and escapes them everywhere the router builds the format itself.
    """

    prompt: str | None = None
    prefix: str | None = None
    suffix: str | None = None
    repo_name: str | None = None
    path: str | None = None
    files: tuple[RepoFile, ...] = ()
    messages: tuple[Message, ...] | None = None

    max_tokens: int = Field(default=256, gt=0)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stop: tuple[str, ...] = ()
    response_format: ResponseFormat | None = None
    stream: bool = False
    seed: int | None = None

    tenant: str | None = None
    tags: tuple[str, ...] = ()
    timeout: float | None = Field(default=None, gt=0)
    allow_trim: bool = True
    hedge: bool | None = None
    special_tokens: SpecialTokenHandling | None = None
    extra_body: dict[str, Any] | None = None
    mode: AutocompleteMode | None = None
    # Seconds to wait for a deployment's first output before cancelling the attempt and trying
    # the next one (`_running/first_token.py`); unset, the deployment's own default applies.
    first_token_timeout_s: float | None = Field(default=None, gt=0, le=MAX_FIRST_TOKEN_TIMEOUT_S,
                                                allow_inf_nan=False)
    # Editor autocomplete: requests of one session (an editor's file) supersede each other and
    # may be answered from each other's completions (`starcoder_router._autocomplete.sessions`).
    session: str | None = Field(default=None, min_length=1, max_length=512)

    @field_validator("stop", "tags", mode="before")
    @classmethod
    def _str_to_tuple(cls, value: Any) -> Any:
        if isinstance(value, str):
            return (value,)
        return value

    _text = field_validator("prompt", "prefix", "suffix", "repo_name", "path", "stop", "tenant",
                            "tags", "session")(_unicode_text)

    @field_validator("tenant")
    @classmethod
    def _named_tenant(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or value == "*"):
            # "*" names the bucket of requests without a tenant in budget keys.
            raise ValueError("a tenant must be a non-blank name other than '*' (leave it out "
                             "for no tenant)")
        return value

    @field_validator("tags")
    @classmethod
    def _named_tags(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(not tag.strip() for tag in value):
            raise ValueError("tags must be non-blank names")
        return value

    @field_validator("extra_body")
    @classmethod
    def _serialisable(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            _json_body(value)
        return value

    @field_validator("stop")
    @classmethod
    def _no_empty_stop(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(not s for s in value):
            raise ValueError("stop sequences must not be empty")
        return value

    @field_validator("response_format", mode="before")
    @classmethod
    def _format_shorthand(cls, value: Any) -> Any:
        if value == "json":
            return {"type": "json_object"}
        return value

    @model_validator(mode="after")
    def _one_mode(self) -> CompletionRequest:
        given = [
            name
            for name, present in (
                ("prompt", self.prompt is not None),
                ("prefix/suffix", self.prefix is not None or self.suffix is not None),
                ("messages", self.messages is not None),
            )
            if present
        ]
        if len(given) != 1:
            if not given:
                raise ValueError("give one of prompt, prefix (+ suffix) or messages")
            raise ValueError(f"give only one of prompt, prefix/suffix or messages, not {given}")
        if self.prefix is None and self.suffix is not None:
            raise ValueError("suffix needs a prefix (use prefix='' for an empty one)")
        if (self.files or self.repo_name or self.path) and self.prefix is None:
            raise ValueError("repo_name, path and files go with fill-in-the-middle (prefix/suffix)")
        if self.messages is not None:
            if not self.messages:
                raise ValueError("messages must not be empty")
            if self.messages[-1].role != "user":
                raise ValueError("the last message must come from the user")
            if self.mode is not None:
                raise ValueError("mode (line, block, auto) goes with prefix/suffix or prompt")
        return self

    @property
    def kind(self) -> Mode:
        if self.prompt is not None:
            return "prompt"
        if self.prefix is not None:
            return "fim"
        return "chat"


def build_request(
    request: CompletionRequest | None,
    fields: Mapping[str, Any],
) -> CompletionRequest:
    """A request from either a ready `CompletionRequest` or keyword fields, not both."""
    if request is not None and not isinstance(request, CompletionRequest):
        hint = ("pass the fields as keywords, e.g. complete(prompt=...)" if
                isinstance(request, (str, Mapping)) else "or pass its fields as keywords")
        raise InvalidRequestError(
            f"the request must be a CompletionRequest, not {type(request).__name__}; {hint}"
        )
    if request is not None:
        if not fields:
            return request
        data = {**request.model_dump(exclude_unset=True), **fields}
        try:
            return CompletionRequest.model_validate(data)
        except ValidationError as exc:
            raise InvalidRequestError(describe_validation_error(exc, "CompletionRequest")) from exc
    return CompletionRequest(**fields)


class RequestFields(TypedDict, total=False):
    """The keyword arguments `complete()`, `stream()` and `route()` accept (CompletionRequest's
    fields)."""

    prompt: str
    prefix: str
    suffix: str
    repo_name: str
    path: str
    files: Sequence[RepoFile | tuple[str, str]]
    messages: Sequence[Message | Mapping[str, str]]
    max_tokens: int
    temperature: float
    top_p: float
    stop: str | Sequence[str]
    response_format: ResponseFormat | Mapping[str, Any] | Literal["json"]
    stream: bool
    seed: int
    tenant: str
    tags: Sequence[str]
    timeout: float
    allow_trim: bool
    hedge: bool
    special_tokens: Literal["escape", "reject", "keep"]
    extra_body: dict[str, Any]
    mode: AutocompleteMode
    first_token_timeout_s: float
    session: str
