"""Completion modes through `Router` and `AsyncRouter` (one body, the `drive` fixture): what is
sent, the cut text, the mode on the completion, and a stream that ends where the block closes,
closing the upstream call and booking what it generated."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

import httpx

from starcoder_router import (
    MemoryStore,
)
from support.hosted_replies import Wire, ok, sse
from support.router_driver import Driver, Make

PREFIX = "def total(items):"
BODY = "\n    s = 0\n    for i in items:\n        s += i\n    return s"
NOISE = "\n\n\ndef unrelated():\n    pass\n"



class _Events(httpx.SyncByteStream, httpx.AsyncByteStream):
    """An SSE body, sync or async, that records how many events were read and whether the
    reader closed it."""

    def __init__(self, texts: list[str]):
        self.events = [b"data: " + json.dumps({"id": "s", "choices": [
            {"index": 0, "text": t, "finish_reason": "stop" if i == len(texts) - 1 else None}
        ]}).encode() + b"\n\n" for i, t in enumerate(texts)] + [b"data: [DONE]\n\n"]
        self.read = 0
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        for event in self.events:
            self.read += 1
            yield event

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for event in self.events:
            self.read += 1
            yield event

    def close(self) -> None:
        self.closed = True

    async def aclose(self) -> None:
        self.closed = True


async def test_block_mode_cuts_the_answer_where_the_block_closes(
        drive: Driver, make: Make, wire: Wire) -> None:
    wire.script("fw3", ok(BODY + NOISE, completion_tokens=30))
    c = await drive.complete(make(), prefix=PREFIX, suffix="\n", mode="block")
    assert (c.text, c.finish_reason, c.mode) == (BODY, "stop", "block")
    assert c.usage.completion_tokens == 30  # what was generated and billed
    sent = wire.received["fw3"][0]
    assert sent["max_tokens"] == 256 and "\n" not in sent.get("stop", [])


async def test_line_mode_sends_a_newline_stop_and_a_low_cap(drive: Driver, make: Make,
                                                           wire: Wire) -> None:
    wire.script("fw3", ok("a, b)\nmore"))
    c = await drive.complete(make(), prefix="x = compute(", suffix=")\n", mode="auto")
    assert (c.text, c.mode) == ("a, b", "line")
    sent = wire.received["fw3"][0]
    assert sent["max_tokens"] == 64 and "\n" in sent["stop"]


async def test_the_callers_max_tokens_and_stop_win(drive: Driver, make: Make,
                                                   wire: Wire) -> None:
    wire.script("fw3", ok("a;b\nc"))
    c = await drive.complete(make(), prefix="x = ", mode="line", max_tokens=100, stop=[";"])
    sent = wire.received["fw3"][0]
    assert sent["max_tokens"] == 100 and "\n" not in sent["stop"]
    assert c.text == "a"


async def test_without_a_mode_nothing_changes(drive: Driver, make: Make, wire: Wire) -> None:
    wire.script("fw3", ok(BODY + NOISE))
    c = await drive.complete(make(), prefix=PREFIX, suffix="\n")
    assert (c.text, c.mode) == (BODY + NOISE, None)


async def test_a_stream_ends_where_the_block_closes(drive: Driver, make: Make, wire: Wire,
                                                    store: MemoryStore) -> None:
    text = BODY + NOISE
    # Pieces of 7 characters: one of them crosses the cut.
    pieces = [text[i:i + 7] for i in range(0, len(text), 7)]
    body = _Events(pieces)
    wire.script("fw3", httpx.Response(200, stream=body,
                                      headers={"content-type": "text/event-stream"}))
    chunks, c = await drive.stream(make(), prefix=PREFIX, suffix="\n", mode="block")
    assert "".join(ch.text for ch in chunks) == BODY == c.text
    assert chunks[-1].finish_reason == "stop" and c.finish_reason == "stop"
    assert c.mode == "block"
    # The upstream call was closed before its end, and what it generated was booked.
    assert body.read < len(body.events) and body.closed
    [entry] = store.ledger()
    assert entry.outcome == "ok" and entry.cost_nano == c.cost_nano > 0
    assert c.usage.source == "counted" and c.usage.completion_tokens > 0
    assert [a.outcome for a in c.attempts] == ["ok"]


async def test_a_stream_that_ends_by_itself_releases_what_it_held(
        drive: Driver, make: Make, wire: Wire) -> None:
    # "retu" may begin the suffix's next line: held until the stream says it is over.
    wire.script("fw3", sse("    s = 0\n    retu", usage=(10, 5)))
    chunks, c = await drive.stream(make(), prefix="def f():\n", suffix="\n    return s\n",
                                   mode="block")
    assert "".join(ch.text for ch in chunks) == "    s = 0\n    retu" == c.text
    assert c.usage.source == "provider"


async def test_a_line_stream_ends_at_a_newline_the_provider_let_through(
        drive: Driver, make: Make, wire: Wire, store: MemoryStore) -> None:
    # The provider ignores the newline stop; our side ends the answer and the call there.
    body = _Events(["a, ", "b)", "\nnext", "_line()", " more", " more"])
    wire.script("fw3", httpx.Response(200, stream=body,
                                      headers={"content-type": "text/event-stream"}))
    chunks, c = await drive.stream(make(), prefix="x = compute(", suffix=")\n", mode="line")
    assert "".join(ch.text for ch in chunks) == "a, b" == c.text
    assert (c.finish_reason, c.mode) == ("stop", "line")
    assert body.read < len(body.events) and body.closed
    assert store.ledger()[0].outcome == "ok"
