"""Time, injectable: the router reads the clock and sleeps only through a `Clock`, so tests can
run retries, backoff, cooldowns and deadlines on a fake one without real sleeping."""

from __future__ import annotations

import datetime as dt
import time

__all__ = ["Clock", "FakeClock", "SystemClock"]


class Clock:
    """The interface: monotonic seconds, wall-clock time, and sleeping (sync and async)."""

    def now(self) -> float:
        raise NotImplementedError

    def wall(self) -> dt.datetime:
        raise NotImplementedError

    def sleep(self, seconds: float) -> None:
        raise NotImplementedError

    async def asleep(self, seconds: float) -> None:
        raise NotImplementedError


class SystemClock(Clock):
    def now(self) -> float:
        return time.monotonic()

    def wall(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    async def asleep(self, seconds: float) -> None:
        import asyncio  # only async users pay for importing asyncio

        if seconds > 0:
            await asyncio.sleep(seconds)


class FakeClock(Clock):
    """A clock that only moves when slept on or advanced. `sleeps` records every wait.

    Example::

        clock = FakeClock()
        router = Router(..., clock=clock)
        ...
        assert clock.sleeps == [0.5, 1.0]
    """

    def __init__(self, start: float = 1000.0,
                 wall_start: dt.datetime = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)):
        self._t = start
        self._start = start
        self._wall_start = wall_start
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self._t

    def wall(self) -> dt.datetime:
        return self._wall_start + dt.timedelta(seconds=self._t - self._start)

    def advance(self, seconds: float) -> None:
        self._t += seconds

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self._t += max(0.0, seconds)

    async def asleep(self, seconds: float) -> None:
        import asyncio

        self.sleeps.append(seconds)
        self._t += max(0.0, seconds)
        await asyncio.sleep(0)
