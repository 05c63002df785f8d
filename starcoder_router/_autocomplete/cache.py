"""The exact-repeat cache: the same rendered request asked again gets the same answer.

Only for deterministic sampling (`temperature=0`, or `top_k=1` in `extra_body`): with sampling
on, a second ask is meant to give another answer. Bounded by entries and by the bytes of the
answers kept; the least recently used goes first. Keys are digests of every field that shapes
the answer (tenant included: one tenant never sees another's code), so a key holds no text.
No I/O here.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from .._routing.request import CompletionRequest

__all__ = ["CompletionCache", "cache_key", "deterministic", "signature"]

T = TypeVar("T")

# Fields that do not change what the model is asked: how the caller waits for it, and the
# session it belongs to. Everything else (sampling, stops, mode, repository context, tenant…)
# is part of the key.
_NOT_ASKED = frozenset({"stream", "timeout", "hedge", "session", "tags", "allow_trim"})
_PROMPT = frozenset({"prompt", "prefix", "suffix"})


def deterministic(request: CompletionRequest) -> bool:
    """Greedy decoding: the same prompt gives the same answer."""
    if request.temperature == 0:
        return True
    extra = request.extra_body or {}
    return extra.get("top_k") == 1


def signature(request: CompletionRequest) -> bytes:
    """A digest of everything but the prompt text and how the caller waits: two requests with
    the same signature ask the same question of the same text."""
    dumped = request.model_dump_json(exclude=set(_NOT_ASKED | _PROMPT))
    return hashlib.blake2b(dumped.encode(), digest_size=16).digest()


def cache_key(request: CompletionRequest, sig: bytes) -> bytes:
    h = hashlib.blake2b(sig, digest_size=20)
    for text in (request.prompt, request.prefix, request.suffix):
        h.update(b"\x00" if text is None else b"\x01%d:" % len(text))
        if text is not None:
            h.update(text.encode("utf-8", "surrogatepass"))
    return h.digest()


class CompletionCache(Generic[T]):
    """Least-recently-used answers, at most `entries` of them and `max_bytes` of text."""

    def __init__(self, entries: int, max_bytes: int):
        self.entries = entries
        self.max_bytes = max_bytes
        self._items: OrderedDict[bytes, tuple[T, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def get(self, key: bytes) -> T | None:
        with self._lock:
            found = self._items.get(key)
            if found is None:
                return None
            self._items.move_to_end(key)
            return found[0]

    def put(self, key: bytes, value: T, text: str) -> None:
        # The text, and a fair share for the completion object around it (kept without the
        # prompt: see `_running/sessions_run.py`).
        size = len(text.encode("utf-8", "surrogatepass")) + len(key) + 512
        if self.entries <= 0 or size > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            self._items[key] = (value, size)
            self._bytes += size
            while len(self._items) > self.entries or self._bytes > self.max_bytes:
                _, (_, dropped) = self._items.popitem(last=False)
                self._bytes -= dropped


