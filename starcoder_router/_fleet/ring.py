"""Consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam, "Consistent Hashing
with Bounded Loads", SODA 2018, https://arxiv.org/abs/1608.01350).

Each replica owns many points on a hash ring. A key goes to the first replica clockwise from the
key's own point whose load is under the bound `ceil((1 + epsilon) * (total + 1) / n)`, `total`
being the requests in flight on the group and `n` the replicas available. So a key keeps its
replica (and that replica's warm prompt cache) while the replica is not much busier than the
average, and no replica ever carries more than `1 + epsilon` times the average.

A replica that leaves (cools down, fails) is skipped in the walk, which is the same as taking its
points off the ring: keys whose first point belonged to another replica keep it; only the keys
that walked to the departed replica move on, to the next replica clockwise.
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections.abc import Collection, Mapping, Sequence
from typing import Literal, NamedTuple

__all__ = ["BoundedLoadRing", "Placement", "load_bound", "point"]

# Points per replica: with 100 the share of the ring each of a handful of replicas owns is within
# about 10% of fair (the standard deviation of an arc sum shrinks as 1/sqrt(points)).
VIRTUAL_NODES = 100

PlacementReason = Literal["affinity", "bounded-load overflow"]


def point(text: str) -> int:
    """A stable 64-bit position on the ring (the same in every process, unlike `hash()`)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")


def load_bound(total_load: int, replicas: int, epsilon: float) -> int:
    """The most requests one replica may hold when one more arrives: the paper's
    `ceil((1 + epsilon) * m / n)` with `m` counting the newcomer, never below 1."""
    if replicas <= 0:
        return 0
    return max(1, math.ceil((1.0 + epsilon) * (total_load + 1) / replicas))


class Placement(NamedTuple):
    """Where a key goes: the replica, the replica that owns the key on the ring (`home`), and
    why they differ (`reason`); `bound` is the capacity bound in force."""

    replica: str
    home: str
    reason: PlacementReason
    bound: int


class BoundedLoadRing:
    """The ring of one replica group. Immutable once built; loads are passed per call."""

    def __init__(self, replicas: Sequence[str], *, virtual_nodes: int = VIRTUAL_NODES):
        if not replicas:
            raise ValueError("a ring needs at least one replica")
        if len(set(replicas)) != len(replicas):
            raise ValueError("replica names must be distinct")
        pairs = sorted((point(f"{name}#{i}"), name) for name in replicas
                       for i in range(virtual_nodes))
        self.replicas = tuple(replicas)
        self._points = [p for p, _ in pairs]
        self._owners = [name for _, name in pairs]

    def walk(self, key: str) -> list[str]:
        """Every replica, in the order the key meets them clockwise from its point."""
        start = bisect.bisect_right(self._points, point(key))
        seen: dict[str, None] = {}
        n, owners = len(self._owners), self._owners
        want = len(self.replicas)
        for i in range(n):
            name = owners[(start + i) % n]
            if name not in seen:
                seen[name] = None
                if len(seen) == want:
                    break
        return list(seen)

    def place(self, key: str, loads: Mapping[str, int], *, epsilon: float,
              available: Collection[str] | None = None) -> Placement | None:
        """The replica for `key`: the first one clockwise that is available and under the
        bound. None when no replica is available."""
        order = [r for r in self.walk(key) if available is None or r in available]
        if not order:
            return None
        total = sum(loads.get(r, 0) for r in order)
        bound = load_bound(total, len(order), epsilon)
        home = order[0]
        for name in order:
            if loads.get(name, 0) < bound:
                reason: PlacementReason = "affinity" if name == home else "bounded-load overflow"
                return Placement(name, home, reason, bound)
        # Unreachable while the loads are the ones summed above (some replica is always at or
        # under the average); kept so that inconsistent loads still get an answer.
        return Placement(home, home, "affinity", bound)
