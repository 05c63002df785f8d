"""Workloads: JSON Lines, one request per line, with its text or only its token counts.

Example line (token counts only, as `workload from-code` writes them)::

    {"timestamp": 12.5, "kind": "fim", "prefix_tokens": 812, "suffix_tokens": 240,
     "max_tokens": 64, "tenant": "web", "output_tokens": 31}

`timestamp` is seconds since the workload starts. `kind` is `completion`, `fim`, `chat` or
`structured`. Text goes in `prompt` (completion, chat, structured) or `prefix`/`suffix`/`files`
(fim); counts go in `prompt_tokens`, or `prefix_tokens`/`suffix_tokens`/`file_tokens`. A line
gives text or counts, not both. `output_tokens`, when known, is what the model actually wrote.

Editor autocomplete lines may name their `session` (one editor on one file; `"off"` is none),
say whether the user typed through the previous suggestion of that session
(`accepts_previous`; drawn at `[simulate] accept_rate` when absent) and give the sampling
`temperature` (0 makes a request greedy, so the exact-repeat cache may answer it). The
simulator reads them only with `--autocomplete on` (see `sessions.py`).
"""

from __future__ import annotations

import json
import math
import os
from array import array
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal, NamedTuple

from pydantic import Field, ValidationError, model_validator

from .._errors import ConfigError, InvalidRequestError, StarcoderRouterError
from .._routing.request import CompletionRequest, RepoFile, ResponseFormat
from .._validation import FrozenModel
from .synthetic import synthetic_lines, synthetic_text

__all__ = [
    "Kind",
    "LineError",
    "Workload",
    "WorkloadFile",
    "WorkloadRequest",
    "parse_line",
    "parse_lines",
    "read_workload",
    "stream_workload",
]

Kind = Literal["completion", "fim", "chat", "structured"]

_JSON_OBJECT = ResponseFormat(type="json_object")
# The router's own opt-out name (`_autocomplete/sessions.py`) and a bound on a session's name,
# which the simulator keeps for every open session.
_NO_SESSION = "off"
_MAX_SESSION_CHARS = 256


class WorkloadRequest(FrozenModel):
    """One line of a workload."""

    _error = InvalidRequestError

    timestamp: float = Field(ge=0, allow_inf_nan=False)
    kind: Kind
    prompt: str | None = None
    prefix: str | None = None
    suffix: str | None = None
    files: tuple[RepoFile, ...] = ()
    prompt_tokens: int | None = Field(default=None, ge=0)
    prefix_tokens: int | None = Field(default=None, ge=0)
    suffix_tokens: int | None = Field(default=None, ge=0)
    file_tokens: tuple[int, ...] = ()
    max_tokens: int = Field(default=256, gt=0)
    tenant: str | None = None
    tags: tuple[str, ...] = ()
    output_tokens: int | None = Field(default=None, ge=0)
    session: str | None = Field(default=None, min_length=1, max_length=_MAX_SESSION_CHARS)
    accepts_previous: bool | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)

    def __init__(self, /, **data: Any) -> None:
        super().__init__(**data)

    # A model with an `__init__` of its own is validated from JSON through it, which checks
    # the line a second time; marked as pydantic marks its own, `model_validate_json` (which
    # raises pydantic's error: `parse_line` explains it) builds the request directly. See
    # pydantic/_internal/_model_construction.py (`__pydantic_custom_init__`).
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    @model_validator(mode="after")
    def _text_or_counts(self) -> WorkloadRequest:
        if self.accepts_previous is not None and self.session_key is None:
            raise ValueError("accepts_previous needs a session: it says whether the user "
                             "typed through the previous suggestion of the same session")
        fim_text = self.prefix is not None or self.suffix is not None or bool(self.files)
        fim_counts = self.prefix_tokens is not None or self.suffix_tokens is not None \
            or bool(self.file_tokens)
        if any(t < 0 for t in self.file_tokens):
            raise ValueError("file_tokens must not be negative")
        if self.kind == "fim":
            if self.prompt is not None or self.prompt_tokens is not None:
                raise ValueError("a fim request takes prefix/suffix (or their token counts), "
                                 "not prompt")
            if fim_text == fim_counts:
                raise ValueError("give prefix/suffix/files or prefix_tokens/suffix_tokens/"
                                 "file_tokens (exactly one of the two)")
            return self
        if fim_text or fim_counts:
            raise ValueError(f"prefix, suffix and files go with kind 'fim', not {self.kind!r}")
        if (self.prompt is None) == (self.prompt_tokens is None):
            raise ValueError("give prompt or prompt_tokens (exactly one)")
        return self

    @property
    def session_key(self) -> str | None:
        """The session, None without one (`"off"`, as in the router, opts out)."""
        return None if self.session is None or self.session == _NO_SESSION else self.session

    @property
    def has_text(self) -> bool:
        return self.prompt is not None or self.prefix is not None or self.suffix is not None \
            or bool(self.files)

    @property
    def input_tokens(self) -> int | None:
        """The prompt's size when given as counts (None for text)."""
        if self.has_text:
            return None
        return (self.prompt_tokens or 0) + (self.prefix_tokens or 0) + \
            (self.suffix_tokens or 0) + sum(self.file_tokens)

    def to_request(self, *, made: Callable[[str, int], None] | None = None,
                   lines: Callable[[int, bool], str] | None = None) -> CompletionRequest:
        """The `CompletionRequest` the router would see; counts become synthetic text of
        exactly that many tokens (see `synthetic`), each passed to `made` with its count.
        `lines(tokens, cursor)`, when given, makes that text instead of `synthetic_lines`
        (it must return the same text: the simulator shares one string per count)."""
        common = {"max_tokens": self.max_tokens, "tenant": self.tenant, "tags": self.tags}
        if self.has_text or self.kind == "chat":
            return self._validated(common)
        text_of = lines or _synthetic
        # Synthetic text is valid by construction: only the fields this line chose are checked,
        # once, in a request they are then copied from (see `_shell`).
        if self.kind == "fim":
            files = tuple(_file_shell(i).model_copy(update={
                              "text": _made(text_of(n, False), n, made)})
                          for i, n in enumerate(self.file_tokens))
            n = self.prefix_tokens or 0
            prefix = _made(text_of(n, True), n, made)
            n = self.suffix_tokens or 0
            suffix = _made(text_of(n, False), n, made)
            return _shell(self.kind, bool(files), self.max_tokens, self.tenant, self.tags
                          ).model_copy(update={"prefix": prefix, "suffix": suffix,
                                               "files": files})
        n = self.prompt_tokens or 0
        text = _made(text_of(n, True), n, made)  # `synthetic_text(n)`
        return _shell(self.kind, False, self.max_tokens, self.tenant, self.tags
                      ).model_copy(update={"prompt": text})

    def _validated(self, common: dict[str, Any]) -> CompletionRequest:
        if self.kind == "fim":
            return CompletionRequest(prefix=self.prefix or "", suffix=self.suffix or "",
                                     files=self.files, path="main.py" if self.files else None,
                                     **common)
        text = self.prompt if self.prompt is not None else synthetic_text(self.prompt_tokens or 0)
        if self.kind == "chat":
            return CompletionRequest(messages=({"role": "user", "content": text},), **common)
        if self.kind == "structured":
            return CompletionRequest(prompt=text, response_format=_JSON_OBJECT, **common)
        return CompletionRequest(prompt=text, **common)


def _shell(kind: Kind, files: bool, max_tokens: int, tenant: str | None,
           tags: tuple[str, ...]) -> CompletionRequest:
    """A validated request of this kind and these fields with empty text, to copy a request
    with synthetic text from: validating every copy would be a large share of a simulation."""
    key = (kind, files, max_tokens, tenant, tags)
    shell = _SHELLS.get(key)
    if shell is None:
        common: dict[str, Any] = {"max_tokens": max_tokens, "tenant": tenant, "tags": tags}
        if kind == "fim":
            shell = CompletionRequest(prefix="", suffix="", path="main.py" if files else None,
                                      **common)
        elif kind == "structured":
            shell = CompletionRequest(prompt="", response_format=_JSON_OBJECT, **common)
        else:
            shell = CompletionRequest(prompt="", **common)
        if len(_SHELLS) >= _MAX_SHELLS:
            _SHELLS.clear()
        _SHELLS[key] = shell
    return shell


_SHELLS: dict[tuple[Kind, bool, int, str | None, tuple[str, ...]], CompletionRequest] = {}
_MAX_SHELLS = 4096


def _file_shell(i: int) -> RepoFile:
    """The validated repository file `f{i}.py` with empty text, to copy a file from."""
    while len(_FILE_SHELLS) <= i:
        _FILE_SHELLS.append(RepoFile(path=f"f{len(_FILE_SHELLS)}.py", text=""))
    return _FILE_SHELLS[i]


_FILE_SHELLS: list[RepoFile] = []


def _synthetic(tokens: int, cursor: bool) -> str:
    return synthetic_lines(tokens, cursor=cursor)


def _made(text: str, tokens: int, made: Callable[[str, int], None] | None) -> str:
    if made is not None:
        made(text, tokens)
    return text


class LineError(NamedTuple):
    """A line that could not be read, and why."""

    line: int
    message: str


class Workload(NamedTuple):
    """The requests of a workload in arrival order, and the lines that were skipped."""

    requests: tuple[WorkloadRequest, ...]
    errors: tuple[LineError, ...]


def parse_lines(lines: Iterable[str]) -> Workload:
    """Parse JSON Lines; invalid lines are reported with their (1-based) number and skipped.

    Example::

        workload = parse_lines(['{"timestamp": 0, "kind": "completion", "prompt_tokens": 90}'])
        assert workload.requests[0].prompt_tokens == 90
    """
    requests: list[WorkloadRequest] = []
    errors: list[LineError] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        parsed = parse_line(line)
        if isinstance(parsed, str):
            errors.append(LineError(number, parsed))
        else:
            requests.append(parsed)
    requests.sort(key=lambda r: r.timestamp)
    return Workload(tuple(requests), tuple(errors))


def parse_line(line: str | bytes) -> WorkloadRequest | str:
    """One workload line's request, or why it is not one."""
    try:
        # One pass in pydantic's JSON parser; any line it refuses takes the slower path below,
        # so a mistake is explained the same way whichever path finds it.
        req = WorkloadRequest.model_validate_json(line)
        if req.has_text:
            req.to_request()
        return req
    except (StarcoderRouterError, ValidationError, TypeError, ValueError):
        pass
    try:
        data = json.loads(line)
    except ValueError as exc:
        return f"not JSON: {exc}"
    if not isinstance(data, dict):
        return "not a JSON object"
    try:
        req = WorkloadRequest(**data)
        if req.has_text:
            req.to_request()  # the router's own checks (one mode, special tokens...)
    except (StarcoderRouterError, TypeError) as exc:
        return str(exc)
    return req


def read_workload(path: str | os.PathLike[str]) -> Workload:
    """Read a workload file into memory (see `parse_lines`; `stream_workload` holds none of
    it)."""
    with open(path, encoding="utf-8") as f:
        return parse_lines(f)


class WorkloadFile:
    """A workload file checked line by line and then read again, lazily, each time it is
    iterated: its valid requests in arrival order (ties in file order). Only each valid line's
    timestamp and place in the file are held (16 bytes a request), so `simulate` can replay a
    workload of any length. The file must not change in between. `has_sessions`: a request
    names a session (then `simulate` compares the autocomplete features off and on).

    Example::

        workload = stream_workload("examples/workload.jsonl")
        print(len(workload), "requests,", len(workload.errors), "invalid lines")
        result = simulate(workload, keep_outcomes=False)
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = os.fspath(path)
        errors: list[LineError] = []
        self._timestamps = array("d")
        self._offsets = array("q")
        in_order = True
        sessions = False
        last = -math.inf
        with open(self.path, "rb") as f:
            offset = 0
            for number, raw in enumerate(f, start=1):
                at, offset = offset, offset + len(raw)
                parsed = _parse_raw(raw)
                if parsed is None:
                    continue
                if isinstance(parsed, str):
                    errors.append(LineError(number, parsed))
                    continue
                self._timestamps.append(parsed.timestamp)
                self._offsets.append(at)
                in_order = in_order and parsed.timestamp >= last
                sessions = sessions or parsed.session_key is not None
                last = parsed.timestamp
        self.errors = tuple(errors)
        self._in_order = in_order
        self.has_sessions = sessions

    def __len__(self) -> int:
        return len(self._offsets)

    def __iter__(self) -> Iterator[WorkloadRequest]:
        if self._in_order:
            yield from self._in_file_order()
            return
        offsets = self._offsets
        order = sorted(range(len(offsets)), key=self._timestamps.__getitem__)  # stable
        with open(self.path, "rb") as f:
            for i in order:
                f.seek(offsets[i])
                yield self._parsed(f.readline())

    def _in_file_order(self) -> Iterator[WorkloadRequest]:
        """The valid lines read front to back, without seeking: the invalid and blank lines
        between them are passed over by their length."""
        offsets = self._offsets
        with open(self.path, "rb") as f:
            at = 0
            for offset in offsets:
                while at < offset:  # a line that was skipped when the file was checked
                    skipped = f.readline()
                    if not skipped:
                        break
                    at += len(skipped)
                raw = f.readline()
                if at != offset:
                    raw = b""  # not where a line started: the file changed
                at += len(raw)
                yield self._parsed(raw)

    def _parsed(self, raw: bytes) -> WorkloadRequest:
        parsed = _parse_raw(raw)
        if not isinstance(parsed, WorkloadRequest):
            raise ConfigError(f"{self.path} changed while it was being read")
        return parsed

    def __repr__(self) -> str:
        return f"WorkloadFile({self.path!r}: {len(self)} requests, {len(self.errors)} invalid)"


def stream_workload(path: str | os.PathLike[str]) -> WorkloadFile:
    """Check a workload file and read its requests lazily (see `WorkloadFile`)."""
    return WorkloadFile(path)


def _parse_raw(raw: bytes) -> WorkloadRequest | str | None:
    """A line as read from the file: None when blank, else as `parse_line`."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"not UTF-8 text: {exc.reason} at byte {exc.start}"
    if not line.strip():
        return None
    return parse_line(line)
