"""Stream objects: iterators of `StreamChunk` that are also context managers."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator
from types import TracebackType
from typing import TYPE_CHECKING, Literal

from .results import Completion, StreamChunk

if TYPE_CHECKING:
    from .stream_attempt import StreamAttempt

__all__ = ["AsyncStream", "Stream"]


class _StreamBase:
    def __init__(self) -> None:
        self._parts: list[str] = []
        self._final: Completion | None = None
        # The first item, read ahead when the stream starts so that routing, budget and
        # provider errors raise there (at the call; `async with` for AsyncStream) rather than
        # at the first iteration; handed out by the first `next`.
        self._pending: StreamChunk | Completion | None = None
        self._started = False
        # The attempt whose chunks the caller reads, once one has started.
        self.attempt: StreamAttempt | None = None
        # Where the text comes from (see `Completion.served_from`), known at the first chunk.
        self.served_from: Literal["upstream", "reuse", "cache"] = "upstream"

    @property
    def text(self) -> str:
        """Everything received so far."""
        return "".join(self._parts)

    @property
    def completion(self) -> Completion | None:
        """The costed completion: the whole answer after the last chunk, or, once the stream
        was closed early or broke off, what was delivered (`finish_reason` "cancelled" or
        "error") and what it cost, as booked. None while the stream is still open, or when it
        failed before any deployment produced output."""
        if self._final is not None:
            return self._final
        attempt = self.attempt
        return attempt.completion if attempt is not None and attempt.settled else None

    def _take(self, item: StreamChunk | Completion) -> StreamChunk | None:
        if isinstance(item, Completion):
            self._final = item
            return None
        if item.text:
            self._parts.append(item.text)
        return item


class Stream(_StreamBase):
    """Iterate for chunks. Leaving the `with` block (or calling `close()`) early cancels the
    request, closes its connection and books what was delivered."""

    _source: Generator[StreamChunk | Completion, None, None]

    def attach(self, source: Generator[StreamChunk | Completion, None, None]) -> None:
        self._source = source

    def start(self) -> Stream:
        """Send the request and wait for its first chunk (`Router.stream()` does this)."""
        if not self._started:
            self._started = True
            self._pending = next(self._source)
        return self

    def __iter__(self) -> Stream:
        return self

    def __next__(self) -> StreamChunk:
        item = self._pending
        if item is None:
            item = next(self._source)
        else:
            self._pending = None
        if type(item) is StreamChunk:  # every chunk but the end (`_take`, inlined)
            if item.text:
                self._parts.append(item.text)
            return item
        chunk = self._take(item)
        if chunk is None:
            raise StopIteration
        return chunk

    def close(self) -> None:
        self._source.close()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class AsyncStream(_StreamBase):
    """The async twin of `Stream`: `async for` and `async with`; `aclose()` cancels."""

    _source: AsyncGenerator[StreamChunk | Completion, None]

    def attach(self, source: AsyncGenerator[StreamChunk | Completion, None]) -> None:
        self._source = source

    async def start(self) -> AsyncStream:
        """Send the request and wait for its first chunk; `async with` does this on entry."""
        if not self._started:
            self._started = True
            self._pending = await self._source.__anext__()
        return self

    def __aiter__(self) -> AsyncStream:
        return self

    async def __anext__(self) -> StreamChunk:
        item = self._pending
        if item is None:
            item = await self._source.__anext__()
        else:
            self._pending = None
        if type(item) is StreamChunk:  # every chunk but the end (`_take`, inlined)
            if item.text:
                self._parts.append(item.text)
            return item
        chunk = self._take(item)
        if chunk is None:
            raise StopAsyncIteration
        return chunk

    async def aclose(self) -> None:
        await self._source.aclose()

    async def __aenter__(self) -> AsyncStream:
        return await self.start()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()
