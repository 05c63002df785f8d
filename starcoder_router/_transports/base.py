"""What a transport is: the only code that touches the network.

Adapters build `WireRequest`s and read `WireResponse`s; a transport sends one and returns the
other, or opens a stream of lines (our own streams also hand them over a network read at a time:
`batches()`, `abatches()`). Transports raise `ProviderConnectionError` or
`ProviderTimeoutError` without provider details; the router adds them. They are swappable, so the
async transport can be chosen by measurement (see BENCHMARKS.md) without touching adapters.

Timeouts: `send` returns or raises `ProviderTimeoutError` within `timeout` seconds in all (plus
`DEADLINE_SLACK_S`), however slowly the server sends. `open` gets its headers within `timeout`
and then waits at most `timeout` for each chunk; with `total_timeout`, the whole stream also ends
by then (the router passes what is left of the request's deadline).
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping
from typing import Any, Literal, NamedTuple, Protocol

__all__ = [
    "DEADLINE_SLACK_S",
    "AsyncStreamHandle",
    "AsyncTransport",
    "StreamFormat",
    "StreamHandle",
    "SyncTransport",
    "WireRequest",
    "WireResponse",
    "aline_batches",
    "line_batches",
    "split_lines",
]

# How late past its deadline a call may return: the time to notice that the deadline passed and
# unwind (a wake-up from a socket wait or a cancelled task), with room for a loaded machine.
DEADLINE_SLACK_S = 0.5

StreamFormat = Literal["sse", "ndjson"]


class WireRequest(NamedTuple):
    """An HTTP request, exactly as it will be sent."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes | None = None
    stream: StreamFormat | None = None

    def __repr__(self) -> str:
        # Never show the Authorization header (or any header that could carry a key).
        shown = {k: ("***" if k.lower() in _SECRET_HEADERS else v) for k, v in self.headers.items()}
        return f"WireRequest({self.method} {self.url}, headers={shown}, stream={self.stream})"

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


_SECRET_HEADERS = frozenset({"authorization", "x-api-key", "api-key"})


class WireResponse(NamedTuple):
    """An HTTP response: status, headers with lower-case names, and the body."""

    status: int
    headers: Mapping[str, str]
    body: bytes



class StreamHandle(Protocol):
    status: int
    headers: Mapping[str, str]

    def lines(self) -> Iterator[bytes]: ...

    def read(self) -> bytes: ...

    def close(self) -> None: ...


class SyncTransport(Protocol):
    def send(self, request: WireRequest, *, timeout: float, connect_timeout: float) -> WireResponse:
        ...

    def open(self, request: WireRequest, *, timeout: float, connect_timeout: float,
             total_timeout: float | None = None) -> StreamHandle:
        ...

    def close(self) -> None: ...


class AsyncStreamHandle(Protocol):
    status: int
    headers: Mapping[str, str]

    def alines(self) -> AsyncIterator[bytes]: ...

    async def aread(self) -> bytes: ...

    async def aclose(self) -> None: ...


class AsyncTransport(Protocol):
    async def asend(self, request: WireRequest, *, timeout: float,
                    connect_timeout: float) -> WireResponse: ...

    async def aopen(self, request: WireRequest, *, timeout: float, connect_timeout: float,
                    total_timeout: float | None = None) -> AsyncStreamHandle: ...

    async def aclose(self) -> None: ...


class LineSplitter:
    """Splits a byte stream into lines without `\\n` or `\\r`, across chunk boundaries."""

    __slots__ = ("_tail",)

    def __init__(self) -> None:
        self._tail = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        if self._tail:
            chunk = self._tail + chunk
        lines = chunk.split(b"\n")
        self._tail = lines.pop()
        if b"\r" not in chunk:  # the common case: nothing to strip
            return lines
        return [line[:-1] if line.endswith(b"\r") else line for line in lines]

    def flush(self) -> list[bytes]:
        tail, self._tail = self._tail, b""
        return [tail.rstrip(b"\r")] if tail else []


def split_lines(chunks: Iterator[bytes]) -> Iterator[bytes]:
    splitter = LineSplitter()
    for chunk in chunks:
        yield from splitter.feed(chunk)
    yield from splitter.flush()


def line_batches(handle: StreamHandle) -> Iterator[list[bytes]]:
    """The lines of `handle`'s body, a list per network read: the complete lines each read
    brought (maybe none), so that a reader decodes every event of a read in one go. Our own
    handles have `batches()`; any other is read a line at a time."""
    batches = getattr(handle, "batches", None)
    if batches is not None:
        return batches()  # type: ignore[no-any-return]
    return ([line] for line in handle.lines())


def aline_batches(handle: AsyncStreamHandle) -> AsyncIterator[list[bytes]]:
    """The async twin of `line_batches` (`abatches()`, else `alines()` a line at a time)."""
    batches = getattr(handle, "abatches", None)
    if batches is not None:
        return batches()  # type: ignore[no-any-return]
    return _one_by_one(handle.alines())


async def lines_of(batches: AsyncGenerator[list[bytes], None]) -> AsyncGenerator[bytes, None]:
    """The lines of `batches` one at a time: `alines()` of a handle that reads in batches."""
    try:
        async for batch in batches:
            for line in batch:
                yield line
    finally:
        await batches.aclose()  # an async generator does not close the one it iterates


async def _one_by_one(lines: AsyncIterator[bytes]) -> AsyncIterator[list[bytes]]:
    async for line in lines:
        yield [line]
