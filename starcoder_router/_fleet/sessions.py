"""Which replica each active key (session, file, prompt head) is on: the paper's clients.

Consistent hashing with bounded loads bounds how many clients a server holds. Here a client is
a key seen in the last `idle_s` seconds: a key keeps the replica it was given while it stays
active and that replica stays available, and a new (or returning) key is placed on the ring
with the active keys per replica as the loads. So each replica holds at most
`ceil((1 + epsilon) * average)` of the active keys when they arrive, and a replica that leaves
moves only its own keys.

The table is bounded (`max_keys`, oldest first out) and each call costs O(1) amortised, since
keys come from clients.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

__all__ = ["ActiveKeys"]


class ActiveKeys:
    """key digest -> (replica, last seen), oldest first; per-replica counts alongside."""

    def __init__(self, *, idle_s: float, max_keys: int = 65536):
        self.idle_s = idle_s
        self.max_keys = max_keys
        self._lock = threading.Lock()
        self._keys: OrderedDict[bytes, tuple[str, float]] = OrderedDict()
        self._counts: dict[str, int] = {}

    def _drop_locked(self, key: bytes) -> None:
        replica, _ = self._keys.pop(key)
        self._counts[replica] -= 1
        if not self._counts[replica]:
            del self._counts[replica]

    def _expire_locked(self, now: float) -> None:
        keys = self._keys
        while keys:
            key, (_, seen) = next(iter(keys.items()))
            if seen > now - self.idle_s and len(keys) <= self.max_keys:
                break
            self._drop_locked(key)

    def replica_of(self, key: bytes, now: float) -> str | None:
        """The replica `key` is on, if it is active."""
        with self._lock:
            self._expire_locked(now)
            found = self._keys.get(key)
        return found[0] if found is not None else None

    def loads(self, now: float) -> dict[str, int]:
        """Active keys per replica."""
        with self._lock:
            self._expire_locked(now)
            return dict(self._counts)

    def assign(self, key: bytes, replica: str, now: float) -> None:
        """`key` is on `replica`, seen now."""
        with self._lock:
            if key in self._keys:
                self._drop_locked(key)
            self._keys[key] = (replica, now)
            self._counts[replica] = self._counts.get(replica, 0) + 1
            self._expire_locked(now)

    def __len__(self) -> int:
        return len(self._keys)
