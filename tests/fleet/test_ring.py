"""Consistent hashing with bounded loads: keys stay put, only a departed replica's keys move,
and no replica ever goes over the bound."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from starcoder_router._fleet import BoundedLoadRing, load_bound

NAMES = [f"llamacpp-{i}" for i in range(8)]
replica_sets = st.lists(st.sampled_from(NAMES), min_size=2, max_size=6, unique=True)
keys = st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=60, unique=True)


def test_the_bound_is_the_papers() -> None:
    # ceil((1 + eps) * m / n), m counting the request being placed.
    assert load_bound(0, 3, 0.25) == 1
    assert load_bound(11, 3, 0.25) == math.ceil(1.25 * 12 / 3) == 5
    assert load_bound(5, 0, 0.25) == 0


def test_a_ring_refuses_no_or_repeated_replicas() -> None:
    with pytest.raises(ValueError):
        BoundedLoadRing([])
    with pytest.raises(ValueError):
        BoundedLoadRing(["a", "a"])


def test_keys_spread_over_the_replicas() -> None:
    ring = BoundedLoadRing(NAMES[:3])
    homes = [ring.place(f"file-{i}.py", {}, epsilon=0.25) for i in range(3000)]
    counts = {n: sum(p is not None and p.replica == n for p in homes) for n in NAMES[:3]}
    assert all(700 <= c <= 1300 for c in counts.values()), counts


@settings(max_examples=40, deadline=None)
@given(replicas=replica_sets, keys=keys, leaving=st.integers(min_value=0, max_value=5))
def test_only_the_departed_replicas_keys_move(replicas: list[str], keys: list[str],
                                               leaving: int) -> None:
    ring = BoundedLoadRing(replicas)
    gone = replicas[leaving % len(replicas)]
    left = [r for r in replicas if r != gone]
    for key in keys:
        before = ring.place(key, {}, epsilon=0.25)
        after = ring.place(key, {}, epsilon=0.25, available=left)
        assert before is not None and after is not None
        if before.replica != gone:
            assert after.replica == before.replica
        else:
            assert after.replica != gone
            # It moves to the next replica clockwise, as on a ring without the departed one.
            assert after.replica == next(r for r in ring.walk(key) if r != gone)


@settings(max_examples=40, deadline=None)
@given(replicas=replica_sets, keys=st.lists(st.text(max_size=8), min_size=1, max_size=200),
       eps=st.sampled_from([0.1, 0.25, 0.5, 1.0]),
       done=st.lists(st.integers(min_value=0, max_value=199), max_size=50))
def test_no_replica_goes_over_its_bound(replicas: list[str], keys: list[str], eps: float,
                                        done: list[int]) -> None:
    ring = BoundedLoadRing(replicas)
    loads = dict.fromkeys(replicas, 0)
    placed: list[str] = []
    finished = set(done)
    for i, key in enumerate(keys):
        p = ring.place(key, loads, epsilon=eps)
        assert p is not None
        total = sum(loads.values())
        assert p.bound == load_bound(total, len(replicas), eps)
        assert loads[p.replica] < p.bound  # so after adding it, at most the bound
        loads[p.replica] += 1
        assert max(loads.values()) <= math.ceil((1 + eps) * sum(loads.values()) / len(replicas))
        placed.append(p.replica)
        if i in finished:  # requests end too
            loads[placed[i]] -= 1
        if p.reason == "affinity":
            assert p.replica == p.home
        else:
            assert loads[p.home] >= p.bound or p.home != p.replica


def test_placement_is_the_same_in_every_process() -> None:
    # blake2b, not hash(): a key keeps its replica across restarts and gateway workers.
    a, b = BoundedLoadRing(NAMES[:4]), BoundedLoadRing(list(reversed(NAMES[:4])))
    for i in range(200):
        assert a.place(f"k{i}", {}, epsilon=0.25) == b.place(f"k{i}", {}, epsilon=0.25)


def test_no_replica_available_places_nothing() -> None:
    assert BoundedLoadRing(["a", "b"]).place("k", {}, epsilon=0.25, available=()) is None
