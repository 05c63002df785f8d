"""Workloads: JSON Lines, one request per line, with its text or only its token counts.

Example line (token counts only, as `workload from-code` writes them)::

    {"timestamp": 12.5, "kind": "fim", "prefix_tokens": 812, "suffix_tokens": 240,
     "max_tokens": 64, "tenant": "web", "output_tokens": 31}

`timestamp` is seconds since the workload starts. `kind` is `completion`, `fim`, `chat` or
`structured`. Text goes in `prompt` (completion, chat, structured) or `prefix`/`suffix`/`files`
(fim); counts go in `prompt_tokens`, or `prefix_tokens`/`suffix_tokens`/`file_tokens`. A line
gives text or counts, not both. `output_tokens`, when known, is what the model actually wrote.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Literal, NamedTuple

from pydantic import Field, model_validator

from .._errors import InvalidRequestError, StarcoderRouterError
from .._routing.request import CompletionRequest, RepoFile, ResponseFormat
from .._validation import FrozenModel
from .synthetic import synthetic_lines, synthetic_text

__all__ = ["Kind", "LineError", "Workload", "WorkloadRequest", "parse_lines", "read_workload"]

Kind = Literal["completion", "fim", "chat", "structured"]

_JSON_OBJECT = ResponseFormat(type="json_object")


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

    @model_validator(mode="after")
    def _text_or_counts(self) -> WorkloadRequest:
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

    def to_request(self) -> CompletionRequest:
        """The `CompletionRequest` the router would see; counts become synthetic text of
        exactly that many tokens (see `synthetic`)."""
        common = {"max_tokens": self.max_tokens, "tenant": self.tenant, "tags": self.tags}
        if self.kind == "fim":
            if self.has_text:
                return CompletionRequest(prefix=self.prefix or "", suffix=self.suffix or "",
                                         files=self.files,
                                         path="main.py" if self.files else None, **common)
            files = tuple(RepoFile(path=f"f{i}.py", text=synthetic_lines(n))
                          for i, n in enumerate(self.file_tokens))
            return CompletionRequest(
                prefix=synthetic_lines(self.prefix_tokens or 0, cursor=True),
                suffix=synthetic_lines(self.suffix_tokens or 0), files=files,
                path="main.py" if files else None, **common)
        text = self.prompt if self.prompt is not None else synthetic_text(self.prompt_tokens or 0)
        if self.kind == "chat":
            return CompletionRequest(messages=({"role": "user", "content": text},), **common)
        if self.kind == "structured":
            return CompletionRequest(prompt=text, response_format=_JSON_OBJECT, **common)
        return CompletionRequest(prompt=text, **common)


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
        try:
            data = json.loads(line)
        except ValueError as exc:
            errors.append(LineError(number, f"not JSON: {exc}"))
            continue
        if not isinstance(data, dict):
            errors.append(LineError(number, "not a JSON object"))
            continue
        try:
            req = WorkloadRequest(**data)
            if req.has_text:
                req.to_request()  # the router's own checks (one mode, special tokens...)
        except (StarcoderRouterError, TypeError) as exc:
            errors.append(LineError(number, str(exc)))
            continue
        requests.append(req)
    requests.sort(key=lambda r: r.timestamp)
    return Workload(tuple(requests), tuple(errors))


def read_workload(path: str | os.PathLike[str]) -> Workload:
    """Read a workload file (see `parse_lines`)."""
    with open(path, encoding="utf-8") as f:
        return parse_lines(f)
