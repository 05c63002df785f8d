"""Budgets in time: calendar periods, bucket labels, and the keys a request is checked against.

Pure: nothing here reads a clock or touches a store; the caller passes `now`. The stores share the
admission rule written at the bottom, so memory, SQLite and Redis (whose Lua script repeats it)
refuse exactly the same requests. Example::

    >>> now = dt.datetime(2026, 11, 26, 15, 30, tzinfo=dt.UTC)
    >>> budgets = [Budget(limit_usd=5), Budget(limit_usd=1, scope="tenant")]
    >>> [k.key for k in applicable_keys(budgets, tenant="acme", tags=(), now=now)]
    ['global/day|2026-11-26', 'tenant:acme/day|2026-11-26']
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from zoneinfo import ZoneInfo

from .._errors import BudgetExceededError
from .._routing.cost import nano_to_usd, usd_to_nano
from .._routing.policy import Budget, Period
from .base import BudgetKey, BudgetStatus

__all__ = [
    "BUCKET_GRACE",
    "applicable_keys",
    "bucket_label",
    "budget_key",
    "check_amount",
    "period_bounds",
    "refusal",
    "require_aware",
    "status_of",
    "to_epoch",
    "unique_keys",
]

# A finished bucket is kept this long after its period ends, so that a request reserved just
# before midnight can still settle into it and a report can still read yesterday's total.
BUCKET_GRACE = dt.timedelta(days=2)

_BEGINNING = dt.datetime.min.replace(tzinfo=dt.UTC)


def period_bounds(
    period: Period, now: dt.datetime, tz: str | dt.tzinfo = "UTC"
) -> tuple[dt.datetime, dt.datetime | None]:
    """The calendar period holding `now` in zone `tz`, as UTC instants `(start, end)`, `end`
    exclusive.

    Weeks start on Monday (ISO). `total` never ends. Days may last 23 or 25 hours across a DST
    change, and a day that starts in a DST gap starts when the clocks jump::

        >>> period_bounds("day", dt.datetime(2026, 3, 29, 12, tzinfo=dt.UTC), "Europe/Berlin")
        (datetime.datetime(2026, 3, 28, 23, 0, tzinfo=datetime.timezone.utc),
         datetime.datetime(2026, 3, 29, 22, 0, tzinfo=datetime.timezone.utc))

    UTC, not local: Python never finds a local time in a repeated autumn hour equal to a time in
    another zone (PEP 495), so local bounds would compare wrongly with the caller's clock.
    """
    zone = _zone(tz)
    local = require_aware(now, "now").astimezone(zone)
    if period == "total":
        return _BEGINNING, None
    if period == "hour":
        return _hour_bounds(local)
    day = local.date()
    if period == "day":
        first, after = day, day + dt.timedelta(days=1)
    elif period == "week":
        first = day - dt.timedelta(days=day.weekday())
        after = first + dt.timedelta(days=7)
    else:
        first = day.replace(day=1)
        after = (first + dt.timedelta(days=32)).replace(day=1)
    return _midnight(first, zone), _midnight(after, zone)


def bucket_label(period: Period, now: dt.datetime, tz: str | dt.tzinfo = "UTC") -> str:
    """The name of the period holding `now`: `2026-11-26T15:00+00:00`, `2026-11-26`,
    `2026-W48`, `2026-11` or `total`.

    Hour labels carry the UTC offset so the repeated hour of an autumn night gets two buckets.
    """
    start = period_bounds(period, now, tz)[0].astimezone(_zone(tz))
    if period == "hour":
        return start.isoformat(timespec="minutes")
    if period == "day":
        return start.date().isoformat()
    if period == "week":
        year, week, _ = start.isocalendar()
        return f"{year}-W{week:02d}"
    if period == "month":
        return f"{start.year}-{start.month:02d}"
    return "total"


def applicable_keys(
    budgets: Sequence[Budget], *, tenant: str | None, tags: Sequence[str], now: dt.datetime
) -> tuple[BudgetKey, ...]:
    """The budget keys one request counts against, in the order of `budgets`.

    A global budget always applies. A tenant budget applies to every request, each tenant on its
    own key (a `*` in the budget's name stands for the tenant, so the default `tenant:*/day`
    becomes `tenant:acme/day`); requests without a tenant share the budget's own key
    (`tenant:*/day`), so leaving the tenant out never slips past it. A budget for one `tenant`
    applies only to that tenant. A tag budget applies when the request carries its tag::

        >>> [k.key for k in applicable_keys(budgets, tenant=None, tags=(), now=now)]
        ['global/day|2026-11-26', 'tenant:*/day|2026-11-26']
    """
    keys: list[BudgetKey] = []
    for budget in budgets:
        if budget.scope == "tenant":
            if budget.tenant is not None:
                if budget.tenant != tenant:
                    continue
                name = budget.name
            else:
                name = budget.name if tenant is None else _per_tenant(budget.name, tenant)
        elif budget.scope == "tag":
            if budget.tag not in tags:
                continue
            name = budget.name
        else:
            name = budget.name
        keys.append(budget_key(budget, name, now))
    return tuple(keys)


def budget_key(budget: Budget, name: str, now: dt.datetime) -> BudgetKey:
    """The key of `budget` (stored under `name`) for the period holding `now`."""
    _, end = period_bounds(budget.period, now, budget.timezone)
    return BudgetKey(
        budget=name,
        key=f"{name}|{bucket_label(budget.period, now, budget.timezone)}",
        limit_nano=usd_to_nano(budget.limit_usd),
        resets_at=end,
        expires_at=None if end is None else end + BUCKET_GRACE,
    )


def unique_keys(keys: Iterable[BudgetKey]) -> tuple[BudgetKey, ...]:
    """`keys` without repeats (first wins): a key listed twice must not be charged twice."""
    seen: dict[str, BudgetKey] = {}
    for key in keys:
        seen.setdefault(key.key, key)
    return tuple(seen.values())


def check_amount(amount_nano: int, what: str) -> None:
    """Refuse negative money: a negative reservation would quietly raise every limit."""
    if amount_nano < 0:
        raise ValueError(f"{what} must not be negative, got {amount_nano}")


def status_of(key: BudgetKey, spent_nano: int, reserved_nano: int) -> BudgetStatus:
    return BudgetStatus(name=key.budget, key=key.key, limit_nano=key.limit_nano,
                        spent_nano=spent_nano, reserved_nano=reserved_nano,
                        resets_at=key.resets_at)


def refusal(key: BudgetKey, spent_nano: int, reserved_nano: int,
            amount_nano: int) -> BudgetExceededError | None:
    """The error to raise if `key` cannot admit `amount_nano` more, else None.

    Admission counts live reservations as spent: that is what keeps concurrent requests from
    all passing a check that each would pass alone.
    """
    if spent_nano + reserved_nano + amount_nano <= key.limit_nano:
        return None
    return BudgetExceededError(status_of(key, spent_nano, reserved_nano),
                               requested_usd=nano_to_usd(amount_nano))


def to_epoch(when: dt.datetime | None) -> float | None:
    """Seconds since the epoch, for stores that expire by timestamp."""
    return None if when is None else require_aware(when, "time").timestamp()


def _per_tenant(name: str, tenant: str) -> str:
    return name.replace("*", tenant, 1) if "*" in name else f"{name}:{tenant}"


def _zone(tz: str | dt.tzinfo) -> dt.tzinfo:
    return ZoneInfo(tz) if isinstance(tz, str) else tz


def require_aware(when: dt.datetime, what: str) -> dt.datetime:
    """`when`, if it is timezone-aware.

    A naive datetime would be read in the machine's zone, so two hosts of one app would put the
    same request in different buckets, or the same ledger query would return different rows.
    """
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got {when!r}")
    return when


def _hour_bounds(local: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    # Absolute arithmetic, not wall-clock: wall-clock maths would merge the two 02:00 hours of an
    # autumn night. A bucket runs from the last local :00 to the next, and is cut short by an
    # offset change that is not a whole hour (Lord Howe Island moves by 30 minutes).
    zone, now, offset = local.tzinfo, local.astimezone(dt.UTC), local.utcoffset()
    start = now - dt.timedelta(minutes=local.minute, seconds=local.second,
                               microseconds=local.microsecond)
    end = start + dt.timedelta(hours=1)
    if start.astimezone(zone).utcoffset() != offset:
        start = _first_change(start, now, zone)
    last = end - dt.timedelta(microseconds=1)
    if last.astimezone(zone).utcoffset() != offset:
        end = _first_change(now, last, zone)
    return start, end


def _first_change(lo: dt.datetime, hi: dt.datetime, zone: dt.tzinfo | None) -> dt.datetime:
    """The first instant in (lo, hi] whose UTC offset is `hi`'s, knowing `lo`'s differs."""
    target = hi.astimezone(zone).utcoffset()
    low, high = int(lo.timestamp()), int(hi.timestamp()) + 1  # offsets change on whole seconds
    while high - low > 1:
        mid = (low + high) // 2
        if dt.datetime.fromtimestamp(mid, zone).utcoffset() == target:
            high = mid
        else:
            low = mid
    return dt.datetime.fromtimestamp(high, dt.UTC)


def _midnight(day: dt.date, zone: dt.tzinfo) -> dt.datetime:
    # A midnight in a DST gap resolves to the instant the clocks jump (fold=0 takes the offset in
    # force before it); a repeated midnight to its first occurrence.
    return dt.datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(dt.UTC)
