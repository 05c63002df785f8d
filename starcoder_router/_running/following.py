"""Following a running request: the later request of a session that types through a
suggestion still streaming gets the rest of it as it arrives, instead of asking again.

The follower reads the leader's `Tap` (`_autocomplete/reuse.py`) past the characters typed
since the leader's prompt, and waits for more with its router's own primitive (a thread's
event, or an asyncio event woken from whichever thread the leader runs on). A newer request
of the session wakes it too (it is then superseded). `answer` makes the completion of an
earlier request the answer of a later one, at no cost.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import AsyncGenerator, Callable, Generator

from .._autocomplete.reuse import Tap, continuation
from .._autocomplete.sessions import Begin, Ticket
from .results import Completion, StreamChunk, Usage

__all__ = ["Reader", "answer", "follow_async", "follow_sync", "wait_async", "wait_sync",
           "whole_ready"]

Items = Generator[StreamChunk | Completion, None, None]
AsyncItems = AsyncGenerator[StreamChunk | Completion, None]


def answer(earlier: Completion, text: str, source: str) -> Completion:
    """`earlier`'s completion, as the answer to a later request: `text`, at no cost."""
    return dataclasses.replace(
        earlier, text=text, usage=Usage(0, 0, "counted"), cost_nano=0, attempts=(),
        latency_s=0.0, ttft_s=0.0, request_id=None, warnings=(),
        served_from=source)  # type: ignore[arg-type]


class Reader:
    """A follower's view of its leader's text past what was typed since the leader's prompt."""

    def __init__(self, begin: Begin):
        assert begin.follow is not None
        assert begin.ticket is not None
        self.tap: Tap = begin.follow.leader.tap
        self.ticket: Ticket = begin.ticket
        self.typed = begin.follow.typed
        self.seen = 0
        self.text = ""
        self.sent = 0

    def fresh(self) -> str:
        """Text for the follower that it has not had yet."""
        parts, _ = self.tap.since(self.seen)
        self.seen += len(parts)
        self.text += "".join(parts)
        start = len(self.typed) + self.sent
        if len(self.text) <= start:
            return ""
        self.sent += len(self.text) - start
        return self.text[start:]

    def has_news(self) -> bool:
        return self.ticket.superseded or self.tap.done or len(self.tap.parts) > self.seen

    def whole(self) -> Completion | None:
        """The leader's answer with the typed part stripped, once it finished whole."""
        if not self.tap.finished or self.ticket.superseded:
            return None
        rest = continuation(self.tap.final.text, self.typed)
        return None if rest is None else answer(self.tap.final, rest, "reuse")

    def ending(self) -> tuple[str, Completion | None]:
        """The finish reason and the completion that end the follower's stream."""
        final: Completion | None = self.tap.final
        reason = "superseded" if self.ticket.superseded else (
            final.finish_reason if self.tap.finished and final is not None else "cancelled")
        if final is None:
            return reason, None
        done = answer(final, self.text[len(self.typed):], "reuse")
        return reason, dataclasses.replace(done, finish_reason=reason)


def wait_sync(reader: Reader, ready: Callable[[], bool], timeout: float) -> bool:
    """Wait until `ready()` (woken by the leader's text or by a newer request); False after
    `timeout` seconds."""
    event = threading.Event()
    reader.tap.subscribe(event.set)
    reader.ticket.bind(event.set)
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            event.clear()
            if ready():
                break
            if not event.wait(max(0.0, deadline - time.monotonic())):
                return False
        return True
    finally:
        reader.tap.unsubscribe(event.set)
        reader.ticket.bind(None)


async def wait_async(reader: Reader, ready: Callable[[], bool], timeout: float) -> bool:
    event = asyncio.Event()
    loop = asyncio.get_running_loop()

    def wake() -> None:
        loop.call_soon_threadsafe(event.set)

    reader.tap.subscribe(wake)
    reader.ticket.bind(wake)
    try:
        async with asyncio.timeout(timeout):
            while not ready():
                event.clear()
                if ready():
                    break
                await event.wait()
        return True
    except TimeoutError:
        return False
    finally:
        reader.tap.unsubscribe(wake)
        reader.ticket.bind(None)


def whole_ready(reader: Reader) -> Callable[[], bool]:
    return lambda: reader.tap.done or reader.ticket.superseded


def follow_sync(reader: Reader, first: str, timeout: float) -> Items:
    index, fresh = 0, first
    while True:
        if fresh:
            reader.ticket.tap.push(fresh)
            yield StreamChunk(fresh, index)
            index += 1
        if reader.tap.done or reader.ticket.superseded:
            break
        if not wait_sync(reader, reader.has_news, timeout):
            break
        fresh = reader.fresh()
    reason, final = reader.ending()
    yield StreamChunk("", index, reason)  # type: ignore[arg-type]
    if final is not None:
        yield final


async def follow_async(reader: Reader, first: str, timeout: float) -> AsyncItems:
    index, fresh = 0, first
    while True:
        if fresh:
            reader.ticket.tap.push(fresh)
            yield StreamChunk(fresh, index)
            index += 1
        if reader.tap.done or reader.ticket.superseded:
            break
        if not await wait_async(reader, reader.has_news, timeout):
            break
        fresh = reader.fresh()
    reason, final = reader.ending()
    yield StreamChunk("", index, reason)  # type: ignore[arg-type]
    if final is not None:
        yield final
