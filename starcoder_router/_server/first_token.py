"""The gateway's side of the first-token deadline: the `x-starcoder-router-first-token-timeout`
header, in seconds, sets a request's `first_token_timeout_s` (see `_running/first_token.py`);
without it, each deployment's own default applies.

The header is hostile input: it is read only if short, as a plain decimal number (no sign,
exponent, NaN or infinity), and must lie in (0, 600] seconds; anything else is a 400.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .._routing.request import MAX_FIRST_TOKEN_TIMEOUT_S
from .problems import invalid

__all__ = ["HEADER_FIRST_TOKEN_TIMEOUT", "first_token_timeout", "with_first_token_timeout"]

HEADER_FIRST_TOKEN_TIMEOUT = "x-starcoder-router-first-token-timeout"  # noqa: S105
_MAX_CHARS = 16
_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")


def with_first_token_timeout(fields: dict[str, Any],
                             headers: Mapping[str, str]) -> dict[str, Any]:
    """`fields` with the header's deadline, if the request sent one."""
    seconds = first_token_timeout(headers.get(HEADER_FIRST_TOKEN_TIMEOUT))
    if seconds is None:
        return fields
    return {**fields, "first_token_timeout_s": seconds}


def first_token_timeout(raw: str | None) -> float | None:
    """The header's value in seconds, None when absent; a 400 naming the header otherwise."""
    if raw is None:
        return None
    text = raw.strip()
    if len(text) <= _MAX_CHARS and _DECIMAL.fullmatch(text):
        seconds = float(text)
        if 0 < seconds <= MAX_FIRST_TOKEN_TIMEOUT_S:
            return seconds
    shown = raw[:_MAX_CHARS] + ("..." if len(raw) > _MAX_CHARS else "")
    raise invalid(f"{HEADER_FIRST_TOKEN_TIMEOUT} must be a number of seconds above 0 and at "
                  f"most {MAX_FIRST_TOKEN_TIMEOUT_S:g}, not {shown!r}",
                  param=HEADER_FIRST_TOKEN_TIMEOUT)
