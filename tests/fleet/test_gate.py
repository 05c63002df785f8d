"""The slot gate: a free slot at once; on a full server FIM first, each within its bound; a
slot freed on every path, a cancelled waiter included."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from starcoder_router._fleet import SlotGate


def test_free_slots_then_overflow_without_waiting() -> None:
    gate = SlotGate(2)
    a, b = gate.acquire(urgent=False, wait_s=0), gate.acquire(urgent=False, wait_s=0)
    assert (a.admission, b.admission, gate.in_flight) == ("free slot", "free slot", 2)
    c = gate.acquire(urgent=True, wait_s=0)  # no wait allowed: sent anyway
    assert (c.admission, gate.in_flight) == ("overflow", 3)
    for hold in (a, b, c, c, a):  # releasing twice is harmless
        hold.release()
    assert gate.in_flight == 0


def test_a_full_server_admits_fim_before_chat() -> None:
    gate = SlotGate(1)
    first = gate.acquire(urgent=False, wait_s=0)
    order: list[str] = []

    def wait(name: str, urgent: bool) -> None:
        hold = gate.acquire(urgent=urgent, wait_s=5)
        order.append(f"{name}:{hold.admission}")
        time.sleep(0.01)
        hold.release()

    chat = threading.Thread(target=wait, args=("chat", False))
    chat.start()
    while gate.waiting < 1:
        time.sleep(0.001)
    fim = threading.Thread(target=wait, args=("fim", True))
    fim.start()
    while gate.waiting < 2:
        time.sleep(0.001)
    first.release()
    chat.join(5)
    fim.join(5)
    assert order == ["fim:waited", "chat:waited"]  # the FIM request came later, went first
    assert (gate.in_flight, gate.waiting) == (0, 0)


def test_the_wait_is_bounded() -> None:
    gate = SlotGate(1)
    held = gate.acquire(urgent=False, wait_s=0)
    started = time.monotonic()
    late = gate.acquire(urgent=True, wait_s=0.05)
    assert late.admission == "overflow"
    assert 0.04 <= time.monotonic() - started < 2.0
    assert (gate.in_flight, gate.waiting) == (2, 0)
    late.release()
    held.release()
    assert gate.in_flight == 0


def test_more_capacity_lets_waiters_in() -> None:
    gate = SlotGate(1)
    held = gate.acquire(urgent=False, wait_s=0)
    got: list[str] = []
    t = threading.Thread(target=lambda: got.append(gate.acquire(urgent=False, wait_s=5)
                                                   .admission))
    t.start()
    while gate.waiting < 1:
        time.sleep(0.001)
    gate.set_capacity(2)  # a probe learned the server has two slots
    t.join(5)
    assert got == ["waited"]
    held.release()


async def test_async_waiters_hand_off_and_cancel_without_leaks() -> None:
    gate = SlotGate(1)
    held = await gate.aacquire(urgent=False, wait_s=0)
    waiter = asyncio.create_task(gate.aacquire(urgent=True, wait_s=5))
    cancelled = asyncio.create_task(gate.aacquire(urgent=False, wait_s=5))
    while gate.waiting < 2:
        await asyncio.sleep(0.001)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert (gate.in_flight, gate.waiting) == (1, 1)
    held.release()  # handed to the waiter, from this thread
    hold = await asyncio.wait_for(waiter, 5)
    assert (hold.admission, gate.in_flight) == ("waited", 1)
    hold.release()
    assert gate.in_flight == 0


async def test_a_task_cancelled_after_its_grant_gives_the_slot_back() -> None:
    gate = SlotGate(1)
    held = await gate.aacquire(urgent=False, wait_s=0)
    task = asyncio.create_task(gate.aacquire(urgent=False, wait_s=5))
    while gate.waiting < 1:
        await asyncio.sleep(0.001)
    held.release()  # granted: the count is the waiter's now...
    task.cancel()  # ...but it is cancelled before it runs again
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (gate.in_flight, gate.waiting) == (0, 0)


def test_a_release_from_another_thread_wakes_an_async_waiter() -> None:
    gate = SlotGate(1)
    held = gate.acquire(urgent=False, wait_s=0)

    async def main() -> str:
        task = asyncio.create_task(gate.aacquire(urgent=True, wait_s=5))
        while gate.waiting < 1:
            await asyncio.sleep(0.001)
        threading.Thread(target=held.release).start()
        hold = await asyncio.wait_for(task, 5)
        hold.release()
        return hold.admission

    assert asyncio.run(main()) == "waited"
    assert gate.in_flight == 0
