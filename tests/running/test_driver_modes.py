"""The `drive` fixture really runs each mode: a driver that built sync routers in async mode
would let every two-mode test pass twice while the async side went untested."""

from __future__ import annotations

import pytest

from starcoder_router import AsyncRouter, AsyncStream, FakeClock, Router, Stream
from support.hosted_replies import KEYS, Wire, sse
from support.router_driver import Driver


async def test_each_mode_builds_and_streams_its_own_router(drive: Driver, wire: Wire) -> None:
    wire.script("fw3", sse("a", "b"))
    router = drive.new_router(env=KEYS, tokenizer=False, clock=FakeClock())
    assert type(router) is (AsyncRouter if drive.is_async else Router)
    async with drive.open_stream(router, prompt="x") as s:
        assert isinstance(s.stream, AsyncStream if drive.is_async else Stream)
        assert [chunk.text async for chunk in s] == ["a", "b", ""]
    assert s.completion is not None and s.completion.text == "ab"


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown mode"):
        Driver("threaded")
