"""Completion modes: what `mode="line" | "block" | "auto"` does to a request before it is sent.

* `line` stops at the end of the cursor's line (a `"\\n"` stop) and asks for at most
  `LINE_MAX_TOKENS` tokens (single-line completions are short: Cody caps them near 60 tokens,
  https://github.com/sourcegraph/cody/issues/344).
* `block` asks for at most `BLOCK_MAX_TOKENS` tokens and is cut where the block opened at the
  cursor closes (`block.py`).
* `auto` picks one of them from the cursor's surroundings (`choose`).

A caller's own `stop` or `max_tokens` always wins over the mode's. Example::

    req = apply_mode(CompletionRequest(prefix="x = foo(", suffix=")\\n", mode="auto"))
    req.mode, req.max_tokens, req.stop    # ("line", 64, ("\\n",))
"""

from __future__ import annotations

from typing import Literal

from .._routing.request import CompletionRequest
from .cursor import Cursor, cursor_of

__all__ = ["BLOCK_MAX_TOKENS", "LINE_MAX_TOKENS", "Applied", "apply_mode", "choose"]

Applied = Literal["line", "block"]

LINE_MAX_TOKENS = 64
BLOCK_MAX_TOKENS = 256

# What may follow the cursor on its line and still leave the line to be written: closing
# brackets and quotes an editor inserted in pairs, and statement ends.
_CLOSING = frozenset(")]}>\"'`;, \t")


def choose(cursor: Cursor) -> Applied:
    """The mode `auto` applies at `cursor`:

    1. text after the cursor on its line (other than closing brackets, quotes, `;` or `,`):
       `line`, the user is editing in the middle of a line;
    2. the cursor's line is empty or blank: `block`, a new statement or body is starting;
    3. the text before the cursor ends by opening a block (`:` in indentation languages, `{`
       anywhere; `(` or `[` when nothing follows on the line): `block`;
    4. otherwise (the end of a line that opens nothing, or before a closing bracket): `line`.
    """
    after = cursor.after
    if any(c not in _CLOSING for c in after):
        return "line"
    if not cursor.before.strip():
        return "block"
    last = cursor.last_char
    if last == "{" or (last == ":" and cursor.style == "indent"):
        return "block"
    if last and last in "([" and not after.strip():
        return "block"
    return "line"


def apply_mode(request: CompletionRequest) -> CompletionRequest:
    """`request` with its mode resolved to `line` or `block` and the mode's stop and
    max_tokens filled in where the caller gave none. Unchanged without a mode."""
    mode = request.mode
    if mode is None:
        return request
    applied: Applied
    if mode == "auto":
        cursor = cursor_of(request)
        applied = "line" if cursor is None else choose(cursor)
    else:
        applied = mode
    given = request.model_fields_set
    update: dict[str, object] = {"mode": applied}
    if "max_tokens" not in given:
        update["max_tokens"] = LINE_MAX_TOKENS if applied == "line" else BLOCK_MAX_TOKENS
    if applied == "line" and not request.stop and "stop" not in given:
        update["stop"] = ("\n",)
    return request.model_copy(update=update)
