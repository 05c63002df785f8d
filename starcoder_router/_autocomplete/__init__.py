"""Editor autocomplete: completion modes and the post-processing of their answers. No I/O.

The request flow consults it through three calls: `apply_mode` when a request starts (the
mode's stop and max_tokens), `plan_for` for what to do to its answers, and a `Shaper` (or
`shape` for a whole answer) that cuts the text as it arrives. The gateway reads the mode a
client asked for with `requested_mode`.
"""

from __future__ import annotations

from .._routing.request import CompletionRequest
from .cursor import Cursor, cursor_from, cursor_of
from .modes import BLOCK_MAX_TOKENS, LINE_MAX_TOKENS, Applied, apply_mode, choose
from .shaper import Plan, Shaper, shape
from .wire import HEADER_MODE, max_tokens_given, requested_mode

__all__ = [
    "BLOCK_MAX_TOKENS",
    "HEADER_MODE",
    "LINE_MAX_TOKENS",
    "Applied",
    "Cursor",
    "Plan",
    "Shaper",
    "apply_mode",
    "choose",
    "cursor_from",
    "cursor_of",
    "max_tokens_given",
    "plan_for",
    "requested_mode",
    "shape",
]


def plan_for(request: CompletionRequest) -> Plan | None:
    """What to do to the answers of `request` (after `apply_mode`); None without a mode."""
    mode = request.mode
    if mode is None or mode == "auto":
        return None
    cursor = cursor_of(request)
    if cursor is None:
        return None
    return Plan(mode, cursor, mode == "line" and "\n" in request.stop)
