"""Session keys for gateway requests that carry none.

An editor sends the header `x-starcoder-router-session` to name its session (`off` opts one
request out). Without it the gateway derives a key from what stays the same while the user
types at the cursor:

1. the file's `path`, when the request gives one;
2. for fill-in-the-middle, the head of the file and its tail: the first `HEAD_CHARS`
   characters of the prefix, up to the start of the cursor's line, and the last `TAIL_CHARS`
   characters of the suffix; typing on a line changes neither;
3. for a prompt with FIM sentinels written by the client, its head and its last `TAIL_CHARS`
   characters in the same way; for a plain left-to-right prompt, its head alone;
4. chat requests get no session, and neither does a prompt with less than `MIN_STABLE`
   characters in those ends (the first line of a nearly empty file): too little to tell
   files apart.

The client's address is part of the key as well, so that people sharing a tenant do not share
sessions. In a file shorter than `HEAD_CHARS` a new line starts a new session.

The key is a digest, so it holds no code; the session table adds the tenant, so one tenant's
requests never supersede another's. A client that cuts its prompt to a window that moves with
the cursor changes the head at each keystroke: it should send the header.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

__all__ = [
    "HEADER_SESSION",
    "HEAD_CHARS",
    "MAX_KEY_CHARS",
    "MIN_STABLE",
    "TAIL_CHARS",
    "derived_key",
    "given_key",
]

HEADER_SESSION = "x-starcoder-router-session"
HEAD_CHARS = 512
TAIL_CHARS = 256
MIN_STABLE = 8
MAX_KEY_CHARS = 128
_OFF = "off"
_SENTINELS = ("<fim_prefix>", "<fim_suffix>", "<fim_middle>")


def _digest(*parts: str) -> str:
    h = hashlib.blake2b(digest_size=12)
    for part in parts:
        data = part.encode("utf-8", "surrogatepass")
        h.update(b"%d:" % len(data))
        h.update(data)
    return h.hexdigest()


def given_key(header: str | None) -> str | bool | None:
    """The session a client named: its key, False for `off`, None when it named none. A long
    or odd value is digested, so the key stays short and printable."""
    if header is None:
        return None
    value = header.strip()
    if not value:
        return None
    if value.lower() == _OFF:
        return False
    if len(value) > MAX_KEY_CHARS or not value.isprintable():
        return "h:" + _digest(value)
    return "c:" + value


def derived_key(fields: Mapping[str, Any], client: str | None = None) -> str | None:
    """The session of a parsed request that names none (rule above), for a request from
    `client` (its address); None for chat and for too little stable text."""
    where = client or ""
    path = fields.get("path")
    if isinstance(path, str) and path:
        return "p:" + _digest(where, path)
    ends: tuple[str, str] | None = None
    prefix = fields.get("prefix")
    prompt = fields.get("prompt")
    if isinstance(prefix, str):
        suffix = fields.get("suffix")
        suffix = suffix if isinstance(suffix, str) else ""
        ends = _head(prefix), suffix[-TAIL_CHARS:]
    elif isinstance(prompt, str):
        if any(s in prompt for s in _SENTINELS):
            middle = prompt.find("<fim_suffix>")
            ends = _head(prompt if middle < 0 else prompt[:middle]), prompt[-TAIL_CHARS:]
        else:
            ends = _head(prompt), ""
    if ends is None or len(ends[0]) + len(ends[1]) < MIN_STABLE:
        return None
    return "f:" + _digest(where, *ends)


def _head(before_cursor: str) -> str:
    """The head of the file: at most `HEAD_CHARS` characters, none from the cursor's line."""
    line_start = before_cursor.rfind("\n") + 1
    return before_cursor[:min(line_start, HEAD_CHARS)]
