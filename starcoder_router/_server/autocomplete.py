"""The gateway's side of editor autocomplete: which mode a request runs in, and the header that
says so; the session a request belongs to (`with_session`, rule in `_autocomplete/keys.py`).

The mode comes from the request (`_autocomplete.wire`: a body field or the
`x-starcoder-router-mode` header), else from `[server] autocomplete_mode` (default: none, the
client's own parameters). `auto` is resolved here, so the answer's `x-starcoder-router-mode`
header (`line` or `block`) can go out before a stream's first chunk. A client's own token limit
wins over the mode's cap; without one the cap replaces the gateway's default.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .._autocomplete import (
    BLOCK_MAX_TOKENS,
    HEADER_MODE,
    LINE_MAX_TOKENS,
    choose,
    cursor_from,
    max_tokens_given,
    requested_mode,
)
from .._autocomplete.keys import HEADER_SESSION, derived_key, given_key
from .._autocomplete.sessions import OFF, AutocompletePolicy
from .gateway import Gateway
from .problems import invalid

__all__ = ["GATEWAY_CACHE_ENTRIES", "HEADER_MODE", "HEADER_SERVED_FROM", "HEADER_SESSION",
           "HEADER_SUPERSEDED", "gateway_policy", "with_mode", "with_session"]

HEADER_SERVED_FROM = "x-starcoder-router-served-from"
HEADER_SUPERSEDED = "x-starcoder-router-superseded"
# The gateway keeps this many answers for exact repeats unless `[autocomplete] cache_entries`
# says otherwise (the SDK keeps none unless asked).
GATEWAY_CACHE_ENTRIES = 1024


def gateway_policy(given: AutocompletePolicy | None) -> AutocompletePolicy:
    """The `[autocomplete]` policy as the gateway applies it: the cache on by default."""
    policy = given or AutocompletePolicy()
    if "cache_entries" not in policy.model_fields_set:
        policy = policy.model_copy(update={"cache_entries": GATEWAY_CACHE_ENTRIES})
    return policy


def with_session(fields: dict[str, Any], request: web.Request,
                 gateway: Gateway) -> dict[str, Any]:
    """`fields` with the session of the request: the one its header names, else one derived
    from the request, unless the header says `off` or sessions and reuse are off."""
    if "messages" in fields:
        return fields
    key = given_key(request.headers.get(HEADER_SESSION))
    if key is False:
        return {**fields, "session": OFF}  # no session, no reuse, no cache
    if key is None:
        policy = gateway.autocomplete
        if not (policy.sessions or policy.reuse):
            return fields
        key = derived_key(fields, request.remote)
        if key is None:
            return fields
    return {**fields, "session": key}


def with_mode(fields: dict[str, Any], request: web.Request, body: dict[str, Any],
              gateway: Gateway, protocol: str) -> dict[str, Any]:
    """`fields` (a parsed request) with the mode that applies to it, if any."""
    try:
        explicit = requested_mode(protocol, body, request.headers, None)
    except ValueError as exc:
        raise invalid(str(exc), param="mode") from None
    mode = explicit
    if mode is None and request.headers.get(HEADER_MODE) is None and _not_off(protocol, body):
        mode = gateway.settings.autocomplete_mode
        if mode is not None and "messages" in fields:
            mode = None  # the gateway's default is for completions, not chat
    if mode is None:
        return fields
    fields = dict(fields)
    if mode == "auto" and "messages" not in fields:
        cursor = cursor_from(fields.get("prefix"), fields.get("suffix"), fields.get("prompt"),
                             fields.get("path"))
        mode = "line" if cursor is None else choose(cursor)
    fields["mode"] = mode
    if not max_tokens_given(protocol, body) and mode != "auto":
        cap = LINE_MAX_TOKENS if mode == "line" else BLOCK_MAX_TOKENS
        fields["max_tokens"] = min(cap, gateway.settings.max_tokens)
    return fields


def _not_off(protocol: str, body: dict[str, Any]) -> bool:
    """False when the body turned the mode off ("off" reads as None above)."""
    try:
        return requested_mode(protocol, body, {}, "default") is not None
    except ValueError:
        return True
