"""A stream's events are decoded a network read at a time (`StreamAttempt.feed_lines`); what the
caller takes, and what the books say it took, stays event by event. Each body here arrives in
one read (respx hands it over whole), so every event of it lands in the same batch.
"""

from __future__ import annotations

import json

import httpx
import pytest

from starcoder_router import (
    MemoryStore,
    StreamInterruptedError,
    TokenizerCounter,
)
from support.hosted_replies import Wire, sse
from support.router_driver import Driver, Make


async def test_closing_within_a_read_books_only_the_chunks_taken(
        drive: Driver, make: Make, wire: Wire, store: MemoryStore,
        exact_counter: TokenizerCounter) -> None:
    wire.script("fw3", sse("def fibonacci", "(n):\n    return", " fibonacci(n - 1)"))
    async with drive.open_stream(make(), prompt="x") as s:
        first = await anext(s)
        second = await anext(s)
    taken = first.text + second.text
    assert taken == "def fibonacci(n):\n    return"
    assert s.completion is not None and s.completion.finish_reason == "cancelled"
    assert s.completion.text == taken
    [entry] = store.ledger()
    assert entry.outcome == "cancelled"
    assert entry.completion_tokens == exact_counter.count(taken)


async def test_an_error_after_text_in_the_same_read_comes_after_that_text(
        drive: Driver, make: Make, wire: Wire, store: MemoryStore) -> None:
    events = [{"id": "s", "choices": [{"index": 0, "text": t, "finish_reason": None}]}
              for t in ("def", " f")]
    events.append({"error": {"message": "overloaded", "code": 503}})
    body = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
    wire.script("fw3", httpx.Response(200, content=body,
                                      headers={"content-type": "text/event-stream"}))
    got: list[str] = []
    with pytest.raises(StreamInterruptedError, match="overloaded") as info:
        async with drive.open_stream(make(), prompt="x") as s:
            async for c in s:
                got.append(c.text)
    assert got == ["def", " f"]
    assert info.value.delivered_chunks == 2 and info.value.delivered_text == "def f"
    [entry] = store.ledger()
    assert entry.outcome == "partial"
