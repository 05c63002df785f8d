"""Fair admission across tenants: no tenant can hold the event loop with requests in flight.

The gateway serves every tenant on one event loop, which runs the ready steps of all requests
in turn: a tenant with many requests in flight would have many steps ahead of another tenant's
one. So each tenant has a cap on its requests in flight (`max_requests_in_flight_per_tenant`,
or the tenant's own `max_requests_in_flight`), and the gateway as a whole one more
(`max_requests_in_flight`). A request over a cap waits in its tenant's queue before any of its
body is read or parsed; when a request ends, the slot goes to the next tenant with a request
waiting, in round-robin order, so a tenant with a long queue cannot starve one with a short
queue. A queue holds at most `max_queued_per_tenant` requests (429 for the next one) and a
request waits at most `max_queue_wait_s` (then 429): nothing waits without bound.

Requests without a tenant (a gateway with no keys) share only the gateway's cap.

    fairness = Fairness(settings)
    async with fairness.turn(tenant):      # waits for a slot, or raises a 429 GatewayError
        ...serve the request...
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import TYPE_CHECKING

from .problems import GatewayError, Problem

if TYPE_CHECKING:
    from .settings import ServerSettings, TenantSettings

__all__ = ["Fairness", "TimeSlice", "Turns"]


class Fairness:
    """Slots for requests in flight: per tenant, in all, handed out round-robin."""

    def __init__(self, settings: ServerSettings):
        self._per_tenant = settings.max_requests_in_flight_per_tenant
        self._total_cap = settings.max_requests_in_flight
        self._queue_cap = settings.max_queued_per_tenant
        self._wait_s = settings.max_queue_wait_s
        self._active: dict[str | None, int] = {}
        self._total = 0
        self._queues: dict[str | None, deque[asyncio.Future[None]]] = {}
        self._ring: deque[str | None] = deque()  # tenants with requests waiting, in turn order
        self._caps: dict[str | None, int | None] = {None: None}
        self.turns = Turns()

    async def take_turn(self, tenant: TenantSettings | None) -> None:
        """Wait for the tenant's turn to run a step that does not pause (`Turns`)."""
        await self.turns.take(tenant.name if tenant is not None else None)

    @property
    def in_flight(self) -> int:
        return self._total

    def waiting(self) -> int:
        return sum(len(q) for q in self._queues.values())

    @asynccontextmanager
    async def turn(self, tenant: TenantSettings | None) -> AsyncIterator[None]:
        """Hold one slot of `tenant`'s (and the gateway's) while the body runs."""
        key = tenant.name if tenant is not None else None
        if tenant is not None and key not in self._caps:
            own = tenant.max_requests_in_flight
            self._caps[key] = own if own is not None else self._per_tenant
        await self._acquire(key)
        try:
            yield
        finally:
            self._release(key)

    def _room(self, key: str | None) -> bool:
        cap = self._caps.get(key)
        return self._total < self._total_cap and (cap is None or self._active.get(key, 0) < cap)

    def _start(self, key: str | None) -> None:
        self._active[key] = self._active.get(key, 0) + 1
        self._total += 1

    async def _acquire(self, key: str | None) -> None:
        queue = self._queues.get(key)
        if not queue and self._room(key):
            self._start(key)
            return
        if (len(queue) if queue else 0) >= self._queue_cap:
            raise _busy(f"this tenant has {self._queue_cap} requests waiting already "
                        "(max_queued_per_tenant)")
        if queue is None:
            queue = self._queues[key] = deque()
            self._ring.append(key)
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue.append(waiter)
        try:
            async with asyncio.timeout(self._wait_s):
                await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                self._release(key)  # granted just as it was given up: pass the slot on
            else:
                waiter.cancel()
                self._forget(key, waiter)
            if isinstance(exc, TimeoutError):
                raise _busy(f"no slot within {self._wait_s:g} s (max_queue_wait_s)") from None
            raise

    def _forget(self, key: str | None, waiter: asyncio.Future[None]) -> None:
        queue = self._queues.get(key)
        if queue is None:
            return
        with suppress(ValueError):
            queue.remove(waiter)
        if not queue:
            del self._queues[key]
            self._ring.remove(key)

    def _release(self, key: str | None) -> None:
        left = self._active[key] - 1
        if left:
            self._active[key] = left
        else:
            del self._active[key]
        self._total -= 1
        self._dispatch()

    def _dispatch(self) -> None:
        """Hand free slots to waiting requests, one per tenant in turn."""
        passed = 0
        ring = self._ring
        while ring and passed < len(ring) and self._total < self._total_cap:
            key = ring[0]
            ring.rotate(-1)
            if not self._room(key):
                passed += 1
                continue
            queue = self._queues[key]
            waiter = queue.popleft()
            if not queue:
                del self._queues[key]
                ring.remove(key)
            if waiter.done():  # cancelled, its task not yet resumed to forget it
                continue
            self._start(key)
            waiter.set_result(None)
            passed = 0


def _busy(message: str) -> GatewayError:
    return GatewayError(Problem(429, "rate_limit_error", "too_many_requests_in_flight",
                                message, retry_after=1.0))


class Turns:
    """One step per tenant per pass of the event loop.

    The loop runs, in each pass, the ready step of every request; a step that parses, checks
    and routes a request runs without a pause and costs up to a few milliseconds for the
    largest inputs allowed. `take(key)` lets one such step of a tenant run per pass: the
    first caller goes at once, and the tenant's next caller goes in the next pass, so a
    tenant with many requests ready adds one step to each pass, not many. Waiting here is not
    holding anything: a request that awaits I/O after its step frees the turn at once.
    """

    def __init__(self) -> None:
        self._busy: dict[object, deque[asyncio.Future[None]]] = {}
        self._owner: dict[object, asyncio.Task[object] | None] = {}
        self._tasks: dict[asyncio.Future[None], asyncio.Task[object] | None] = {}

    async def take(self, key: object, *, wait: bool = False) -> None:
        """Wait for `key`'s turn (with `wait`, let the loop run at least one pass first). A
        task that already has the turn in this pass keeps it."""
        queue = self._busy.get(key)
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        if queue is None:
            self._busy[key] = queue = deque()
            self._owner[key] = task
            loop.call_soon(self._next, key)  # the turn passes on at the next pass
            if not wait:
                return
        elif not wait and task is not None and self._owner.get(key) is task:
            return
        waiter: asyncio.Future[None] = loop.create_future()
        queue.append(waiter)
        self._tasks[waiter] = task
        try:
            await waiter  # cancelled: `_next` skips it
        finally:
            self._tasks.pop(waiter, None)

    def _next(self, key: object) -> None:
        queue = self._busy[key]
        while queue:
            waiter = queue.popleft()
            if not waiter.done():
                self._owner[key] = self._tasks.get(waiter)
                waiter.set_result(None)
                asyncio.get_running_loop().call_soon(self._next, key)
                return
        del self._busy[key]
        del self._owner[key]


class TimeSlice:
    """Lets a run of steps that never wait (a stream whose upstream chunks are already
    buffered) give the loop back every `budget_s` of its own running, taking its tenant's
    turn (`Turns`) to go on.

        turns = TimeSlice(gateway.fairness, tenant)
        for chunk in chunks:
            ...
            await turns.share()
    """

    __slots__ = ("_budget_s", "_fairness", "_key", "_since")

    def __init__(self, fairness: Fairness, tenant: TenantSettings | None,
                 budget_s: float = 0.002):
        self._fairness = fairness
        self._key = tenant.name if tenant is not None else None
        self._budget_s = budget_s
        self._since = time.perf_counter()

    async def share(self) -> None:
        """Yield to the loop once `budget_s` has passed since the last time this did."""
        if time.perf_counter() - self._since >= self._budget_s:
            await self._fairness.turns.take(self._key, wait=True)
            self._since = time.perf_counter()
