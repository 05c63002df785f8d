"""What keeps a request on one replica: its session, else its file, else its prompt's head."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .._routing.request import CompletionRequest

__all__ = ["affinity_key"]

# Characters of the prompt's start that name it when nothing else does: an editor's requests
# for one file share their first lines, while the end (the cursor) changes at every keystroke.
HEAD_CHARS = 512


def affinity_key(request: CompletionRequest) -> tuple[str, str]:
    """(what the key is made of, the key). Bounded work whatever the request's size."""
    tenant = request.tenant or ""
    session = getattr(request, "session", None)
    if isinstance(session, str) and session:
        return "session", f"s\0{tenant}\0{session}"
    if request.path:
        return "file", f"f\0{tenant}\0{request.repo_name or ''}\0{request.path}"
    if request.prefix is not None:
        head = request.prefix
    elif request.prompt is not None:
        head = request.prompt
    elif request.messages:
        head = request.messages[0].content
    else:
        head = ""
    return "prompt head", f"h\0{tenant}\0{head[:HEAD_CHARS]}"
