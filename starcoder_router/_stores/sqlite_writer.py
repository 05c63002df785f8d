"""The thread that runs `SQLiteStore`'s async methods: off the event loop, and the transactions
of many requests as one.

Every async call becomes a piece of work on one queue. A single thread takes whatever is queued
and runs it in one `BEGIN IMMEDIATE` transaction: under load one commit carries dozens of
requests, where each used to pay its own (a commit appends the touched pages to the WAL, so it
costs about the same for one row as for fifty). The loop never waits for SQLite's write lock,
which another process may hold for up to the store's `busy_timeout_s`.

The caller awaits its work's result, so errors reach it as before (a refused reservation, a
`sqlite3.Error`) and it reads its own writes: the queue is first in, first out, and the store's
sync methods run what is queued before their own transaction. The one exception is a booking
that touches no budget (the ledger entry of a request with no budget, what a gateway without
budgets writes for every request): it is queued and the caller goes on (`behind`), and the
thread lets such entries gather for up to `LINGER_S` before their commit. No budget decision
reads them, and they are never dropped while the process lives: a failed commit is tried again
(backing off up to a second) until the store is closed, and closing waits for the queue to be
written, raising `StoreError` if it cannot be; a process that exits without closing the store
writes the queue as it exits. A process killed outright loses at most the last `LINGER_S` of
them.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import threading
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any, NamedTuple

__all__ = ["Item", "Work", "Writer", "deliver"]

Work = Callable[[Any], Any]  # runs inside a transaction on the store's connection

# How long bookings nobody waits for may wait for others to share their commit: one commit per
# few milliseconds at most, however many requests arrive; and what a crashed process can lose
# (as `synchronous=NORMAL` may lose the last commits on a power cut).
LINGER_S = 0.005


class Item(NamedTuple):
    work: Work
    future: asyncio.Future[Any] | None  # None: nobody waits (`behind`)
    loop: asyncio.AbstractEventLoop | None
    what: str  # for the log, should a `behind` item fail for good


class Writer:
    """The queue and its thread, which starts with the first item. `drain` (the store's) takes
    the queue under the store's lock and runs it."""

    def __init__(self, drain: Callable[[], None], name: str, linger_s: float = LINGER_S):
        self._drain = drain
        self._name = name
        self._linger_s = linger_s
        self._cond = threading.Condition(threading.Lock())
        self._queue: deque[Item] = deque()
        self._thread: threading.Thread | None = None
        self._closing = False
        self._waited = False  # someone waits for an item in the queue: no lingering
        self.retry_after = 0.0  # > 0 after a failed commit: the thread waits before trying again
        self._at_exit: Callable[[], None] | None = None

    async def run(self, work: Work) -> Any:
        """`work`'s result, once its transaction has committed."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._put(Item(work, future, loop, ""))
        return await future

    def behind(self, work: Work, what: str) -> None:
        """Queue `work` without waiting for it."""
        self._put(Item(work, None, None, what))

    def _put(self, item: Item) -> None:
        with self._cond:
            if self._closing:
                raise RuntimeError("the SQLite store is closed")
            self._queue.append(item)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, daemon=True, name=self._name)
                self._thread.start()
                # The thread is a daemon (it must not keep a process alive), so an interpreter
                # that exits without closing the store would stop it with entries queued: the
                # queue is written at exit instead (atexit handlers run before daemon threads
                # are stopped, https://docs.python.org/3/library/atexit.html).
                self._at_exit = _write_at_exit(weakref.ref(self))
                atexit.register(self._at_exit)
            if item.future is not None and not self._waited:
                self._waited = True
                self._cond.notify()
            elif len(self._queue) == 1:
                self._cond.notify()

    def take(self) -> list[Item]:
        """Everything queued, oldest first (the caller holds the store's lock)."""
        with self._cond:
            items = list(self._queue)
            self._queue.clear()
            self._waited = False
        return items

    def put_back(self, items: list[Item]) -> None:
        """Items to try again, ahead of anything queued since."""
        with self._cond:
            self._queue.extendleft(reversed(items))

    @property
    def pending(self) -> int:
        return len(self._queue)

    @property
    def closing(self) -> bool:
        return self._closing

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return
                if self.retry_after and not self._closing:
                    self._cond.wait(self.retry_after)
                elif not self._waited and not self._closing:
                    # Only bookings nobody waits for: let more join them (a waiting caller or
                    # closing ends the wait at once).
                    self._cond.wait(self._linger_s)
            self._drain()

    def close(self) -> None:
        """Stop the thread once the queue is written (or has failed to be)."""
        with self._cond:
            self._closing = True
            self._cond.notify()
            thread = self._thread
            at_exit, self._at_exit = self._at_exit, None
        if at_exit is not None:
            atexit.unregister(at_exit)
        if thread is not None and thread is not threading.current_thread():
            thread.join()


def _write_at_exit(ref: weakref.ref[Writer]) -> Callable[[], None]:
    def write() -> None:
        writer = ref()
        if writer is not None and writer.pending:
            writer.retry_after = 0.0
            writer._drain()  # under the store's lock, as the thread does
    return write


def deliver(outcomes: list[tuple[Item, bool, Any]]) -> None:
    """Hand each waiting caller its result or error, one wake-up per event loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
    for item, ok, value in outcomes:
        if item.future is not None and item.loop is not None:
            by_loop.setdefault(item.loop, []).append((item.future, ok, value))
    for loop, results in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            loop.call_soon_threadsafe(_resolve, results)


def _resolve(results: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, ok, value in results:
        if future.done():  # its caller was cancelled; the work was done all the same
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
