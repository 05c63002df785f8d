"""Typed-ahead reuse: answering a request from an earlier completion the user is typing through.

An editor asks again on nearly every pause in typing. When the characters typed since the last
request are the ones its completion begins with, the rest of that completion is still the
model's answer for the new cursor position: strip the typed part, call nobody. Continue does
this in its editor (`core/autocomplete/generation/GeneratorReuseManager.ts` in
continuedev/continue: it keeps following the running stream); the router does it once, for
every editor and every backend.

`Prompt` keeps only digests and lengths of what it compares, so remembering recent requests
costs memory bounded by their number, never by the size of their files. No I/O here; `Tap` only
hands text from one request to the requests following it, with the waiting left to the drivers.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from .._routing.request import CompletionRequest

__all__ = ["MAX_TYPED", "Digests", "Prompt", "Tap", "continuation", "prompt_of", "typed_since"]

# The most characters typed since an earlier request for its answer to be reused. It bounds
# the work per request too: every earlier request is compared by a digest of the new text up to
# its length, and all those digests share the hashing of what comes before the last MAX_TYPED.
MAX_TYPED = 1024


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _digest(text: str) -> bytes:
    return hashlib.blake2b(_encode(text), digest_size=16).digest()


class Prompt(NamedTuple):
    """What reuse compares of a request: the text before the cursor (`prefix`, or a
    left-to-right `prompt`) by length and digest, and the text after it by digest."""

    head_len: int
    head: bytes
    suffix: bytes | None


class Digests:
    """The text before the cursor of one new request, digested at the lengths asked for: the
    text before its last `MAX_TYPED` characters is hashed once, and each length adds at most
    those (linear in the text however many earlier requests it is compared with)."""

    __slots__ = ("_base", "_base_len", "_memo", "head", "suffix")

    def __init__(self, head: str, suffix: bytes | None):
        self.head = head
        self.suffix = suffix
        self._memo: dict[int, bytes] = {}
        self._base_len = max(0, len(head) - MAX_TYPED)
        self._base: Any = None

    def head_at(self, length: int) -> bytes | None:
        """The digest of the first `length` characters; None further back than `MAX_TYPED`."""
        if length < self._base_len or length > len(self.head):
            return None
        found = self._memo.get(length)
        if found is None:
            if self._base is None:
                self._base = hashlib.blake2b(_encode(self.head[:self._base_len]), digest_size=16)
            h = self._base.copy()
            h.update(_encode(self.head[self._base_len:length]))
            found = self._memo[length] = h.digest()
        return found

    def prompt(self) -> Prompt:
        whole = self.head_at(len(self.head))
        assert whole is not None
        return Prompt(len(self.head), whole, self.suffix)


def prompt_of(request: CompletionRequest) -> Digests | None:
    """The comparable parts of `request`; None for a chat request (nothing to type ahead in)."""
    if request.prefix is not None:
        return Digests(request.prefix, _digest(request.suffix or ""))
    if request.prompt is not None:
        return Digests(request.prompt, None)
    return None


def typed_since(old: Prompt, new: Digests) -> str | None:
    """The characters typed since `old`: the new text before the cursor is the old one plus
    them, and the text after the cursor is the same. None when the new request is not a
    continuation of the old one."""
    if old.suffix != new.suffix or len(new.head) < old.head_len:
        return None
    if new.head_at(old.head_len) != old.head:  # None: typed more than MAX_TYPED
        return None
    return new.head[old.head_len:]


def continuation(text: str, typed: str) -> str | None:
    """What a completion `text` of the old request goes on with once `typed` is typed: the
    text with the typed part stripped. None unless `text` begins with `typed` and goes on."""
    if len(text) <= len(typed) or not text.startswith(typed):
        return None
    return text[len(typed):]


class Tap:
    """The text of a request still running, for later requests that follow it instead of
    asking again. The running request `push`es each piece and `close`s it with its outcome
    (its completion object, and whether it is a whole answer); a follower reads `parts` from
    where it was and waits (with the driver's own primitive) while `wakers` tell it of more.

    Thread-safe: a sync router may serve a session from several threads."""

    __slots__ = ("_lock", "_wakers", "done", "final", "finished", "parts")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wakers: list[Callable[[], None]] = []
        self.parts: list[str] = []
        self.done = False
        # How the request ended: its completion (None if it ended before any), and whether
        # that is a whole answer (stopped or at its length) rather than what it delivered.
        self.final: Any = None
        self.finished = False

    def text(self) -> str:
        return "".join(self.parts)

    def push(self, text: str) -> None:
        if not text:
            return
        with self._lock:
            self.parts.append(text)
            wakers = list(self._wakers)
        for wake in wakers:
            wake()

    def close(self, final: Any, finished: bool) -> None:
        with self._lock:
            if self.done:
                return
            self.done = True
            self.final = final
            self.finished = finished
            wakers = list(self._wakers)
        for wake in wakers:
            wake()

    def since(self, seen: int) -> tuple[list[str], bool]:
        """The pieces after the first `seen`, and whether the request has ended."""
        with self._lock:
            return self.parts[seen:], self.done

    def subscribe(self, wake: Callable[[], None]) -> None:
        with self._lock:
            self._wakers.append(wake)

    def unsubscribe(self, wake: Callable[[], None]) -> None:
        with self._lock:
            if wake in self._wakers:
                self._wakers.remove(wake)
