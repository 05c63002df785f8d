"""The effective price of a machine paid by the hour: busy time as the union of attempts, the
prior before observations, and how observations take over."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from starcoder_router import Catalog, Deployment
from starcoder_router._routing.selfhosted import (
    MIN_TOKENS_PER_S,
    PRIOR_REQUESTS,
    SelfHostedPrice,
    prior_tokens_per_second,
    self_hosted_price,
)
from starcoder_router._routing.throughput import Observed, ThroughputMeter

CATALOG = Catalog.default()
VAR3B = CATALOG.variant("starcoder2-3b")
LOCAL = Deployment(provider="vllm", variant="starcoder2-3b", model="m", context_window=16384,
                   usd_per_hour=1.8)

spans = st.lists(
    st.tuples(st.floats(0, 1000, allow_nan=False), st.floats(0, 50, allow_nan=False)),
    min_size=1, max_size=40,
)


def _union(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b > end:
            total += b - max(a, end)
            end = b
    return total


# -- busy time --------------------------------------------------------------------------------

def test_concurrent_requests_share_their_busy_time() -> None:
    meter = ThroughputMeter()
    for _ in range(4):  # four requests served at once for two seconds
        meter.observe("d", started=0.0, ended=2.0, tokens=100)
    seen = meter.observed("d")
    assert seen is not None
    assert seen.busy_s == pytest.approx(2.0) and seen.tokens == pytest.approx(400, rel=1e-2)
    assert seen.requests == 4


def test_a_short_request_that_ends_first_does_not_hide_the_long_one() -> None:
    meter = ThroughputMeter(half_life_s=1e12)
    meter.observe("d", started=2.0, ended=5.0, tokens=10)
    meter.observe("d", started=0.0, ended=10.0, tokens=10)
    seen = meter.observed("d")
    assert seen is not None and seen.busy_s == pytest.approx(10.0)


def test_nothing_is_observed_before_the_first_attempt_ends() -> None:
    meter = ThroughputMeter()
    assert meter.observed("d") is None
    meter.observe("d", started=5.0, ended=4.0, tokens=-3)  # a clock that went back: no time
    assert meter.observed("d") == Observed(0.0, 0.0, 1.0, 1)


@settings(max_examples=150, deadline=None)
@given(spans)
def test_busy_time_is_the_union_of_the_attempts(raw: list[tuple[float, float]]) -> None:
    intervals = [(a, a + d) for a, d in raw]
    meter = ThroughputMeter(half_life_s=1e12, max_spans=1000)
    for a, b in intervals:
        meter.observe("d", started=a, ended=b, tokens=1)
    seen = meter.observed("d")
    assert seen is not None
    assert seen.busy_s == pytest.approx(_union(intervals), rel=1e-6, abs=1e-6)


@settings(max_examples=150, deadline=None)
@given(spans, st.integers(1, 4))
def test_dropping_old_spans_can_only_overcount(raw: list[tuple[float, float]], keep: int) -> None:
    """With few spans kept, busy time is never under the union (the machine never looks faster
    than it is) nor over the plain sum of the attempts."""
    intervals = [(a, a + d) for a, d in raw]
    meter = ThroughputMeter(half_life_s=1e12, max_spans=keep)
    for a, b in intervals:
        meter.observe("d", started=a, ended=b, tokens=1)
    seen = meter.observed("d")
    assert seen is not None
    assert _union(intervals) - 1e-6 <= seen.busy_s <= sum(b - a for a, b in intervals) + 1e-6


def test_memory_and_work_per_observation_stay_bounded() -> None:
    meter = ThroughputMeter(max_spans=8)
    for i in range(2000):
        meter.observe("d", started=2.0 * i, ended=2.0 * i + 1, tokens=1)
    assert len(meter._windows["d"].spans) == 8


def test_old_observations_fade_by_busy_time() -> None:
    meter = ThroughputMeter(half_life_s=10.0)
    meter.observe("d", started=0.0, ended=10.0, tokens=10_000)   # fast at first
    for i in range(20):                                          # then slow for 200 s
        meter.observe("d", started=100.0 + 10 * i, ended=110.0 + 10 * i, tokens=100)
    seen = meter.observed("d")
    assert seen is not None
    assert seen.tokens / seen.busy_s == pytest.approx(10.0, rel=0.01)


def test_threads_observing_at_once_lose_nothing() -> None:
    meter = ThroughputMeter(half_life_s=1e12)

    def work(k: int) -> None:
        for i in range(200):
            start = (k * 200 + i) * 2.0
            meter.observe("d", started=start, ended=start + 1.0, tokens=3)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seen = meter.observed("d")
    assert seen is not None and seen.requests == 800
    assert seen.busy_s == pytest.approx(800.0) and seen.tokens == pytest.approx(2400.0)


def test_meter_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        ThroughputMeter(half_life_s=0)
    with pytest.raises(ValueError):
        ThroughputMeter(max_spans=0)


# -- the price --------------------------------------------------------------------------------

def test_only_local_deployments_with_an_hourly_price_are_priced_so() -> None:
    hosted = CATALOG.deployment("fireworks/starcoder2-3b").model_copy(update={"usd_per_hour": 3.0})
    free = LOCAL.model_copy(update={"usd_per_hour": None})
    assert self_hosted_price(hosted, VAR3B, None) is None
    assert self_hosted_price(free, VAR3B, None) is None


def test_the_prior_is_the_configured_speed_else_a_default_by_size() -> None:
    configured = LOCAL.model_copy(update={"tokens_per_second": 500.0})
    price = self_hosted_price(configured, VAR3B, None)
    assert price is not None and not price.observed
    assert price.tokens_per_s == 500.0
    assert price.usd_per_mtok == pytest.approx(1.8 / 3600 / 500 * 1e6)  # $1.00 per million
    assert price.basis.startswith("prior: tokens_per_second = 500 as configured")
    assert "$1.8/h at 500.0 tokens/s = $1.0000 per million tokens (prior:" in price.describe()

    tps, why = prior_tokens_per_second(LOCAL, VAR3B)
    assert tps == pytest.approx(400 / (VAR3B.parameters / 1e9))
    big = prior_tokens_per_second(LOCAL.model_copy(update={"variant": "starcoder2-15b"}),
                                  CATALOG.variant("starcoder2-15b"))[0]
    assert big < tps  # bigger models are assumed slower
    default = self_hosted_price(LOCAL, VAR3B, None)
    assert default is not None and default.basis == f"prior: {why}; no requests observed yet"


def test_one_observation_moves_the_price_towards_what_was_seen() -> None:
    price = self_hosted_price(LOCAL, VAR3B, Observed(tokens=1000, busy_s=1.0, weight=1, requests=1))
    assert price is not None and price.observed
    assert price.basis == "observed over 1 request / 1.0 s busy"
    prior = prior_tokens_per_second(LOCAL, VAR3B)[0]
    assert prior < price.tokens_per_s < 1000


def test_the_price_converges_to_the_observed_throughput() -> None:
    meter = ThroughputMeter()
    for i in range(2000):  # 250 tokens per busy second, one request every 2 s
        meter.observe("d", started=2.0 * i, ended=2.0 * i + 1.0, tokens=250)
    price = self_hosted_price(LOCAL, VAR3B, meter.observed("d"))
    assert price is not None
    assert price.tokens_per_s == pytest.approx(250, rel=0.01)


def test_a_machine_that_moved_no_tokens_has_a_finite_price() -> None:
    price = self_hosted_price(LOCAL, VAR3B, Observed(tokens=0, busy_s=1e9, weight=1e6,
                                                     requests=10**6))
    assert price is not None and price.tokens_per_s >= MIN_TOKENS_PER_S
    assert price.cost_nano(16384) < 10**20


observations = st.builds(
    Observed,
    tokens=st.floats(0, 1e9, allow_nan=False),
    busy_s=st.floats(0, 1e6, allow_nan=False),
    weight=st.floats(0.5, 1e5, allow_nan=False),
    requests=st.integers(1, 10**6),
)


@settings(max_examples=200, deadline=None)
@given(observations, st.floats(0.01, 1e5), st.floats(0, 1e3, allow_nan=False))
def test_price_lies_between_the_prior_and_what_was_seen(seen: Observed, prior_tps: float,
                                                      usd_per_hour: float) -> None:
    dep = LOCAL.model_copy(update={"tokens_per_second": prior_tps, "usd_per_hour": usd_per_hour})
    price = self_hosted_price(dep, VAR3B, seen)
    assert price is not None and price.observed
    s_seen = seen.busy_s / max(seen.tokens, 1.0) if seen.tokens or seen.busy_s else 1 / prior_tps
    s_price = 1 / price.tokens_per_s
    lo, hi = sorted((1 / prior_tps, s_seen))
    assert lo * (1 - 1e-9) <= s_price <= max(hi * (1 + 1e-9), 1 / MIN_TOKENS_PER_S)
    assert price.usd_per_mtok >= 0 and price.cost_nano(10_000) >= 0


@settings(max_examples=200, deadline=None)
@given(observations, st.floats(0, 1e9, allow_nan=False), st.floats(0, 1e6, allow_nan=False))
def test_price_is_monotone(seen: Observed, more_tokens: float, more_busy: float) -> None:
    """More tokens in the same busy time never raise the price; more busy time for the same
    tokens never lowers it; a dearer machine is never cheaper."""
    base = self_hosted_price(LOCAL, VAR3B, seen)
    faster = self_hosted_price(LOCAL, VAR3B, seen._replace(tokens=seen.tokens + more_tokens))
    slower = self_hosted_price(LOCAL, VAR3B, seen._replace(busy_s=seen.busy_s + more_busy))
    dearer = self_hosted_price(LOCAL.model_copy(update={"usd_per_hour": 3.6}), VAR3B, seen)
    assert base is not None and faster is not None and slower is not None and dearer is not None
    eps = 1e-9 * base.usd_per_mtok
    assert faster.usd_per_mtok <= base.usd_per_mtok + eps
    assert slower.usd_per_mtok >= base.usd_per_mtok - eps
    assert dearer.usd_per_mtok >= base.usd_per_mtok


def test_the_prior_weighs_as_documented() -> None:
    prior = prior_tokens_per_second(LOCAL, VAR3B)[0]
    seen = Observed(tokens=1000.0, busy_s=10.0, weight=PRIOR_REQUESTS, requests=4)
    price = self_hosted_price(LOCAL, VAR3B, seen)
    assert price is not None
    assert 1 / price.tokens_per_s == pytest.approx((1 / prior + 10.0 / 1000.0) / 2)


def test_cost_is_the_price_times_the_tokens() -> None:
    price = SelfHostedPrice(usd_per_hour=3.6, tokens_per_s=1000.0, prior_tps=10.0,
                            prior_configured=True)
    assert price.usd_per_mtok == pytest.approx(1.0)
    assert price.cost_nano(1_000_000) == 1_000_000_000
    assert price.cost_nano(0) == 0
