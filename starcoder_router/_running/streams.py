"""Stream objects: iterators of `StreamChunk` that are also context managers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from types import TracebackType

from .results import Completion, StreamChunk

__all__ = ["AsyncStream", "Stream"]


class Stream:
    """Iterate for chunks. Leaving the `with` block (or calling `close()`) early cancels the
    request, closes its connection and books what was delivered. After the last chunk,
    `completion` holds the costed completion."""

    def __init__(self, source: Iterator[StreamChunk | Completion]):
        self._source = source
        self.completion: Completion | None = None
        self._parts: list[str] = []

    def __iter__(self) -> Iterator[StreamChunk]:
        return self

    def __next__(self) -> StreamChunk:
        item = next(self._source)
        if isinstance(item, Completion):
            self.completion = item
            raise StopIteration
        if item.text:
            self._parts.append(item.text)
        return item

    @property
    def text(self) -> str:
        """Everything received so far."""
        return "".join(self._parts)

    def close(self) -> None:
        close = getattr(self._source, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class AsyncStream:
    """The async twin of `Stream`: `async for` and `async with`; `aclose()` cancels."""

    def __init__(self, source: AsyncIterator[StreamChunk | Completion]):
        self._source = source
        self.completion: Completion | None = None
        self._parts: list[str] = []

    def __aiter__(self) -> AsyncIterator[StreamChunk]:
        return self

    async def __anext__(self) -> StreamChunk:
        item = await self._source.__anext__()
        if isinstance(item, Completion):
            self.completion = item
            raise StopAsyncIteration
        if item.text:
            self._parts.append(item.text)
        return item

    @property
    def text(self) -> str:
        return "".join(self._parts)

    async def aclose(self) -> None:
        aclose = getattr(self._source, "aclose", None)
        if aclose is not None:
            await aclose()

    async def __aenter__(self) -> AsyncStream:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()
