"""The mode a gateway client asked for, read from its body or a header, in any protocol.

* OpenAI `/v1/completions`: a top-level `mode` field (the `openai` client's `extra_body`);
* Ollama `/api/generate`: `options.mode`, or `mode` at the top level (as `stop`, which Ollama
  clients put in either place);
* TGI `/generate`: `parameters.mode`;
* every route: the header `x-starcoder-router-mode`, which wins over the body.

`"off"` (or `"none"`) turns the gateway's default mode off for one request.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["HEADER_MODE", "MODES", "max_tokens_given", "requested_mode"]

HEADER_MODE = "x-starcoder-router-mode"
MODES = ("line", "block", "auto")
_OFF = ("off", "none")


def requested_mode(protocol: str, body: Mapping[str, Any], headers: Mapping[str, str],
                   default: str | None) -> str | None:
    """The mode for one request (`line`, `block`, `auto`, or None for the client's own
    parameters). Raises ValueError, naming where it was found, for an unknown mode."""
    where, value = _given(protocol, body, headers)
    if value is None:
        return default
    if not isinstance(value, str) or value.strip().lower() not in (*MODES, *_OFF):
        raise ValueError(f"{where} must be one of line, block, auto or off, not {value!r}"[:200])
    value = value.strip().lower()
    return None if value in _OFF else value


def _given(protocol: str, body: Mapping[str, Any],
           headers: Mapping[str, str]) -> tuple[str, object]:
    header = headers.get(HEADER_MODE)
    if header is not None:
        return HEADER_MODE, header
    if protocol == "tgi":
        params = body.get("parameters")
        return "parameters.mode", params.get("mode") if isinstance(params, Mapping) else None
    if protocol == "ollama":
        options = body.get("options")
        if isinstance(options, Mapping) and options.get("mode") is not None:
            return "options.mode", options["mode"]
    return "mode", body.get("mode")


# Where each protocol's body carries the caller's token limit.
_MAX_TOKENS = {"openai": ("", "max_tokens"), "ollama": ("options", "num_predict"),
               "tgi": ("parameters", "max_new_tokens")}


def max_tokens_given(protocol: str, body: Mapping[str, Any]) -> bool:
    """Did the client set its own token limit (which then wins over the mode's cap)?"""
    outer, name = _MAX_TOKENS.get(protocol, ("", "max_tokens"))
    where = body.get(outer) if outer else body
    return isinstance(where, Mapping) and where.get(name) is not None
