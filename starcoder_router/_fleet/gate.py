"""Requests in flight per deployment, and a small priority gate in front of a full server.

A gate admits a request at once while the deployment has a free slot. When it is full, the
request waits for a slot, fill-in-the-middle (urgent) requests first, each class in arrival
order, but never longer than its own bound: past it the request goes anyway and the server
queues it. So an editor's completion overtakes a long chat turn by at most a slot's turnover,
and a chat turn is delayed by at most its bound: no request starves and none waits unbounded.

One lock guards the counts; waiters are woken by hand-off (the freed slot is given to the first
waiter, never to a newcomer that barges in), from any thread or event loop. Every admission is
a `Hold` whose `release()` frees its slot once, however the request ends.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import asyncio

__all__ = ["Admission", "Hold", "SlotGate"]

Admission = Literal["free slot", "waited", "overflow"]


class _Waiter:
    __slots__ = ("event", "future", "granted", "loop", "urgent")

    def __init__(self, urgent: bool, event: threading.Event | None = None,
                 loop: asyncio.AbstractEventLoop | None = None,
                 future: asyncio.Future[None] | None = None):
        self.urgent = urgent
        self.granted = False
        self.event = event
        self.loop = loop
        self.future = future

    def wake(self) -> None:
        if self.event is not None:
            self.event.set()
        elif self.loop is not None and self.future is not None:
            # A closed loop raises RuntimeError: its task is gone with it.
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(_resolve, self.future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class SlotGate:
    """In-flight count and capacity of one deployment."""

    def __init__(self, capacity: int):
        self._lock = threading.Lock()
        self._capacity = max(1, capacity)
        self._count = 0
        self._urgent: deque[_Waiter] = deque()
        self._normal: deque[_Waiter] = deque()

    @property
    def in_flight(self) -> int:
        return self._count

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def waiting(self) -> int:
        return len(self._urgent) + len(self._normal)

    def set_capacity(self, capacity: int) -> None:
        with self._lock:
            self._capacity = max(1, capacity)
            self._grant_locked()

    def _grant_locked(self) -> None:
        while self._count < self._capacity and (self._urgent or self._normal):
            waiter = (self._urgent or self._normal).popleft()
            self._count += 1
            waiter.granted = True
            waiter.wake()

    def _take_now_locked(self, wait_s: float) -> Admission | None:
        if self._count < self._capacity:
            self._count += 1
            return "free slot"
        if wait_s <= 0:
            self._count += 1
            return "overflow"
        return None

    def _queue_locked(self, waiter: _Waiter) -> None:
        (self._urgent if waiter.urgent else self._normal).append(waiter)

    def _give_up_locked(self, waiter: _Waiter) -> Admission:
        """The wait ended without a grant: leave the queue and go anyway (the server queues)."""
        if waiter.granted:
            return "waited"
        queue = self._urgent if waiter.urgent else self._normal
        with contextlib.suppress(ValueError):
            queue.remove(waiter)
        self._count += 1
        return "overflow"

    def acquire(self, *, urgent: bool, wait_s: float) -> Hold:
        """Take a slot, waiting at most `wait_s` seconds for one (blocking)."""
        with self._lock:
            how = self._take_now_locked(wait_s)
            if how is not None:
                return Hold(self, how)
            waiter = _Waiter(urgent, event=threading.Event())
            self._queue_locked(waiter)
        try:
            assert waiter.event is not None
            waiter.event.wait(wait_s)
        finally:
            with self._lock:
                how = self._give_up_locked(waiter)
        return Hold(self, how)

    async def aacquire(self, *, urgent: bool, wait_s: float) -> Hold:
        """Take a slot, waiting at most `wait_s` seconds for one, without blocking the loop. A
        task cancelled while waiting leaves no slot behind."""
        import asyncio  # only async routers come here; a sync program need not load it

        with self._lock:
            how = self._take_now_locked(wait_s)
            if how is not None:
                return Hold(self, how)
            loop = asyncio.get_running_loop()
            waiter = _Waiter(urgent, loop=loop, future=loop.create_future())
            self._queue_locked(waiter)
        assert waiter.future is not None
        try:
            await asyncio.wait((waiter.future,), timeout=wait_s)
        except BaseException:
            with self._lock:  # took a slot or was given one: either way, hand it back
                self._give_up_locked(waiter)
                self._release_locked()
            raise
        with self._lock:
            how = self._give_up_locked(waiter)
        return Hold(self, how)

    def _release_locked(self) -> None:
        self._count = max(0, self._count - 1)
        self._grant_locked()

    def release(self) -> None:
        with self._lock:
            self._release_locked()


class Hold:
    """One admitted request's slot. `release()` is idempotent; `admission` says how it got in."""

    __slots__ = ("_gate", "admission")

    def __init__(self, gate: SlotGate | None, admission: Admission):
        self._gate = gate
        self.admission = admission

    def release(self) -> None:
        gate, self._gate = self._gate, None
        if gate is not None:
            gate.release()

