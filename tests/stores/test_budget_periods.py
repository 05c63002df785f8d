"""Calendar periods and bucket labels: pure, with explicit datetimes, across zones and DST."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from starcoder_router._stores.periods import bucket_label, period_bounds

UTC = dt.UTC
US = dt.timedelta(microseconds=1)


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


def length(bounds: tuple[dt.datetime, dt.datetime | None]) -> dt.timedelta:
    # In UTC: Python subtracts two datetimes of one zone by their wall clocks.
    start, end = bounds
    assert end is not None
    return end.astimezone(UTC) - start.astimezone(UTC)


@pytest.mark.parametrize(
    ("period", "now", "start", "end", "label"),
    [
        ("hour", utc(2026, 11, 26, 15, 30), utc(2026, 11, 26, 15), utc(2026, 11, 26, 16),
         "2026-11-26T15:00+00:00"),
        ("day", utc(2026, 11, 26, 15, 30), utc(2026, 11, 26), utc(2026, 11, 27), "2026-11-26"),
        ("week", utc(2026, 11, 26, 15, 30), utc(2026, 11, 23), utc(2026, 11, 30), "2026-W48"),
        ("month", utc(2026, 11, 26, 15, 30), utc(2026, 11, 1), utc(2026, 12, 1), "2026-11"),
        ("month", utc(2026, 12, 31, 23, 59), utc(2026, 12, 1), utc(2027, 1, 1), "2026-12"),
        ("month", utc(2028, 2, 29, 12), utc(2028, 2, 1), utc(2028, 3, 1), "2028-02"),
        # ISO weeks: 2027-01-02 is a Saturday of 2026's 53rd week, which began on Monday 28 Dec.
        ("week", utc(2027, 1, 2, 12), utc(2026, 12, 28), utc(2027, 1, 4), "2026-W53"),
        ("week", utc(2026, 11, 29, 23, 59, 59), utc(2026, 11, 23), utc(2026, 11, 30), "2026-W48"),
        ("week", utc(2026, 11, 30), utc(2026, 11, 30), utc(2026, 12, 7), "2026-W49"),
    ],
)
def test_utc_periods(period, now, start, end, label) -> None:
    assert period_bounds(period, now) == (start, end)
    assert bucket_label(period, now) == label


def test_total_never_ends() -> None:
    start, end = period_bounds("total", utc(2026, 11, 26))
    assert end is None
    assert start <= utc(1970, 1, 1)
    assert bucket_label("total", utc(2026, 11, 26)) == "total"


@pytest.mark.parametrize("period", ["hour", "day", "week", "month"])
def test_rollover_at_the_boundary(period) -> None:
    start, end = period_bounds(period, utc(2026, 11, 29, 23, 30))
    assert end is not None
    assert bucket_label(period, end - US) == bucket_label(period, start)
    assert bucket_label(period, end) != bucket_label(period, end - US)
    assert period_bounds(period, end)[0] == end


def test_the_day_is_the_local_day_of_the_budget_zone() -> None:
    ny = "America/New_York"
    assert bucket_label("day", utc(2026, 11, 26, 4, 59), ny) == "2026-11-25"
    assert bucket_label("day", utc(2026, 11, 26, 5, 0), ny) == "2026-11-26"
    start, end = period_bounds("day", utc(2026, 11, 26, 5, 0), ny)
    assert (start, end) == (utc(2026, 11, 26, 5), utc(2026, 11, 27, 5))
    assert bucket_label("day", utc(2026, 11, 26, 14, 59), "Asia/Tokyo") == "2026-11-26"
    assert bucket_label("day", utc(2026, 11, 26, 15, 0), "Asia/Tokyo") == "2026-11-27"


def test_tz_may_be_a_tzinfo() -> None:
    zone = ZoneInfo("Asia/Kolkata")
    assert bucket_label("hour", utc(2026, 11, 26, 10, 29), zone) == "2026-11-26T15:00+05:30"
    assert bucket_label("hour", utc(2026, 11, 26, 10, 30), zone) == "2026-11-26T16:00+05:30"


def test_days_across_dst_last_23_and_25_hours() -> None:
    berlin = "Europe/Berlin"
    assert length(period_bounds("day", utc(2026, 3, 29, 12), berlin)) == dt.timedelta(hours=23)
    assert length(period_bounds("day", utc(2026, 10, 25, 12), berlin)) == dt.timedelta(hours=25)
    week = period_bounds("week", utc(2026, 10, 25, 12), berlin)
    assert length(week) == dt.timedelta(days=7, hours=1)


def test_the_repeated_autumn_hour_gets_two_buckets() -> None:
    berlin = "Europe/Berlin"
    first, second = utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 1, 30)  # both 02:30 local
    assert bucket_label("hour", first, berlin) == "2026-10-25T02:00+02:00"
    assert bucket_label("hour", second, berlin) == "2026-10-25T02:00+01:00"
    assert period_bounds("hour", second, berlin) == (utc(2026, 10, 25, 1), utc(2026, 10, 25, 2))


def test_a_day_that_starts_in_a_dst_gap_starts_when_the_clocks_jump() -> None:
    # Santiago skips 00:00-01:00 on 6 September 2026: the day starts at 01:00 local (04:00 UTC).
    bounds = period_bounds("day", utc(2026, 9, 6, 12), "America/Santiago")
    assert bounds[0] == utc(2026, 9, 6, 4)
    assert bounds[0].astimezone(ZoneInfo("America/Santiago")).hour == 1
    assert length(bounds) == dt.timedelta(hours=23)


def test_half_hour_dst_cuts_the_hour_short() -> None:
    # Lord Howe Island moves from +10:30 to +11:00 at 02:00 local on 4 October 2026.
    zone = "Australia/Lord_Howe"
    before = period_bounds("hour", utc(2026, 10, 3, 15, 20), zone)
    after = period_bounds("hour", utc(2026, 10, 3, 15, 40), zone)
    assert before == (utc(2026, 10, 3, 14, 30), utc(2026, 10, 3, 15, 30))
    assert after == (utc(2026, 10, 3, 15, 30), utc(2026, 10, 3, 16))


@pytest.mark.parametrize("zone", ["UTC", "Europe/Berlin", "America/Santiago",
                                  "Australia/Lord_Howe", "America/Havana", "Pacific/Chatham"])
@pytest.mark.parametrize("period", ["hour", "day", "week", "month"])
def test_buckets_tile_time_without_gaps_or_overlaps(zone, period) -> None:
    """Walk a year: every instant lies in its bucket, and each bucket ends where the next begins."""
    now = utc(2026, 1, 1, 0, 7)
    step = dt.timedelta(hours=1) if period == "hour" else dt.timedelta(hours=5)
    seen = 0
    while now < utc(2027, 1, 1):
        start, end = period_bounds(period, now, zone)
        assert end is not None
        assert start <= now < end, now
        assert period_bounds(period, start, zone) == (start, end)
        assert period_bounds(period, end - US, zone)[1] == end
        assert period_bounds(period, end, zone)[0] == end
        assert bucket_label(period, end, zone) != bucket_label(period, start, zone)
        now += step
        seen += 1
    assert seen > 1000


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        period_bounds("day", dt.datetime(2026, 11, 26))
