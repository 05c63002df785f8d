"""The health tracker on its own: the failure-rate window is bounded by time and by count."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from starcoder_router import ConfigError, HealthPolicy
from starcoder_router._routing.health import HealthTracker


def test_a_busy_deployment_keeps_a_bounded_window() -> None:
    tracker = HealthTracker(HealthPolicy(window_s=60, window_max_requests=500))
    for i in range(100_000):  # far more than 500 calls within the 60 s window
        tracker.record_success("d", now=i * 1e-4, latency=0.1)
    assert len(tracker._states["d"].outcomes) == 500


def test_the_default_bound_holds_too() -> None:
    tracker = HealthTracker()
    for i in range(5000):
        tracker.record_success("d", now=i * 1e-3, latency=0.1)
    assert len(tracker._states["d"].outcomes) == HealthPolicy().window_max_requests


def test_the_rate_is_over_the_most_recent_calls() -> None:
    """Old failures pushed out by count no longer count toward the rate."""
    policy = HealthPolicy(window_max_requests=20, min_requests=10, failure_rate=0.5,
                          failure_threshold=1000)
    tracker = HealthTracker(policy)
    for i in range(9):
        tracker.record_failure("d", now=i * 0.01, reason="500")
    for i in range(9, 40):
        tracker.record_success("d", now=i * 0.01, latency=0.1)
    tracker.record_failure("d", now=0.5, reason="500")
    assert tracker.state("d", now=0.5) == "closed"  # 1 of the last 20 failed


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 5), st.booleans()), max_size=200),
       st.integers(1, 30))
def test_the_failure_count_matches_the_window(steps: list[tuple[float, bool]],
                                              limit: int) -> None:
    tracker = HealthTracker(HealthPolicy(window_s=2, window_max_requests=limit,
                                         failure_threshold=10_000, min_requests=10_000))
    now = 0.0
    for gap, ok in steps:
        now += gap
        if ok:
            tracker.record_success("d", now=now, latency=0.1)
        else:
            tracker.record_failure("d", now=now, reason="x")
        state = tracker._states["d"]
        assert len(state.outcomes) <= limit
        assert state.failures == sum(1 for _, good in state.outcomes if not good)
        assert all(t >= now - 2 for t, _ in state.outcomes)


def test_the_bound_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="window_max_requests"):
        HealthPolicy(window_max_requests=0)
