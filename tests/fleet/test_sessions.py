"""Active keys: a key stays on its replica while active, new keys respect the bound of active
keys per replica, a departed replica moves only its keys, and the table stays bounded."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from starcoder_router import Deployment, FleetPolicy
from starcoder_router._fleet import Fleet
from starcoder_router._fleet.sessions import ActiveKeys

NAMES = ("a", "b", "c")


def _fleet(now: list[float], **policy: object) -> Fleet:
    deps = [Deployment(name=n, provider="openai-compatible", variant="starcoder2-3b",
                       model="m", context_window=4096, base_url=f"http://{n}", group="g")
            for n in NAMES]
    return Fleet(FleetPolicy(probe=False, **policy), deps,  # type: ignore[arg-type]
                 now=lambda: now[0])


def test_keys_expire_and_the_table_is_bounded() -> None:
    table = ActiveKeys(idle_s=10, max_keys=3)
    for i, key in enumerate((b"w", b"x", b"y", b"z")):
        table.assign(key, "a" if i % 2 else "b", now=float(i))
    assert len(table) == 3 and table.replica_of(b"w", 3.0) is None  # oldest out
    assert table.loads(3.0) == {"a": 2, "b": 1}
    assert table.replica_of(b"x", 11.5) is None  # idle 10.5 s: gone
    assert table.loads(30.0) == {}
    table.assign(b"y", "c", 30.0)
    table.assign(b"y", "a", 31.0)  # moved: counted once
    assert table.loads(31.0) == {"a": 1}


@settings(max_examples=25, deadline=None)
@given(keys=st.lists(st.text(max_size=6), min_size=1, max_size=120, unique=True),
       eps=st.sampled_from([0.1, 0.25, 0.5]))
def test_no_replica_holds_more_active_keys_than_the_bound(keys: list[str], eps: float) -> None:
    now = [0.0]
    fleet = _fleet(now, epsilon=eps)
    for i, key in enumerate(keys):
        chosen, _, _ = fleet._place("g", key, list(NAMES))
        loads = fleet._active["g"].loads(now[0])
        assert loads[chosen] <= math.ceil((1 + eps) * (i + 1) / len(NAMES))


@settings(max_examples=20, deadline=None)
@given(keys=st.lists(st.text(max_size=6), min_size=3, max_size=60, unique=True),
       gone=st.sampled_from(NAMES))
def test_a_departed_replica_moves_only_its_keys(keys: list[str], gone: str) -> None:
    now = [0.0]
    fleet = _fleet(now)
    before = {k: fleet._place("g", k, list(NAMES))[0] for k in keys}
    left = [n for n in NAMES if n != gone]
    after = {k: fleet._place("g", k, left)[0] for k in keys}
    for k in keys:
        assert after[k] == before[k] if before[k] != gone else after[k] != gone
    # Back again, it takes new keys; the moved ones stay where they are while active.
    assert {k: fleet._place("g", k, list(NAMES))[0] for k in keys} == after


def test_an_idle_key_is_placed_afresh() -> None:
    now = [0.0]
    fleet = _fleet(now)
    first, why, detail = fleet._place("g", "k", list(NAMES))
    assert why == "affinity" and f"home {first}" in detail
    now[0] = 1000.0
    assert fleet._active["g"].loads(now[0]) == {}
    assert fleet._place("g", "k", list(NAMES))[0] == first  # the ring's choice again
    fleet.close()
