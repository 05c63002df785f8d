"""Keeping large token counts off the event loop.

Routing is pure and runs on the loop, but an exact count of a large prompt that the cache has not
seen costs milliseconds (about 0.07 µs a byte with the `tiktoken` engine, 0.75 with `tokenizers`
on this project's benchmark machine; see BENCHMARKS.md, "Realistic prompts"). So before routing,
`AsyncRouter` counts such a prompt in a worker thread (both engines release the GIL while they
encode); the routing step then finds the counts cached and stays cheap on the loop. A prompt the
counter has mostly seen (an editor's next request) costs a fraction of a millisecond and is
counted on the loop: the thread hop would cost more.

    await count_off_loop(counter, request)
    run = core.start(request)  # on the loop, from cached counts
"""

from __future__ import annotations

import asyncio

from .._errors import StarcoderRouterError
from .._routing.render import render
from .._routing.request import CompletionRequest
from .._routing.tokens import LazyCounter, TokenCounter

__all__ = ["OFF_LOOP_FROM_BYTES", "count_off_loop", "counts_off_loop"]

# Below this a cold count costs under ~1 ms with tiktoken (~6 ms with tokenizers), and the byte
# bound proves most such prompts fit without counting; a thread hop is not worth it.
OFF_LOOP_FROM_BYTES = 8192


async def count_off_loop(counter: TokenCounter, request: CompletionRequest,
                         gate: asyncio.Semaphore | None = None) -> None:
    """Count `request`'s prompt in a worker thread when it is large and the counter keeps what it
    counts; errors are left for the routing step that follows to raise.

    `gate` lets one count run at a time: counting holds the GIL between encoder calls, and with
    several counting threads the loop can wait for the GIL behind each of them in turn (64 new
    36 KB prompts at once stalled it for hundreds of ms); behind one, a switch interval at most.
    """
    if _text_chars(request) < OFF_LOOP_FROM_BYTES or not _keeps_counts(counter):
        return
    try:
        prompt = render(request).prompt
    except StarcoderRouterError:
        return
    if _cheap(counter, prompt):
        return  # mostly counted already (an editor's next request): a thread hop costs more
    if gate is None:
        await asyncio.to_thread(counter.count, prompt)
        return
    async with gate:
        if not _cheap(counter, prompt):  # counted while this one waited?
            await asyncio.to_thread(counter.count, prompt)


def counts_off_loop(request: CompletionRequest) -> bool:
    """Whether `count_off_loop` may send `request`'s count to a thread (its text is large), so
    that routing should wait for it."""
    return _text_chars(request) >= OFF_LOOP_FROM_BYTES


def _cheap(counter: TokenCounter, prompt: str) -> bool:
    if isinstance(counter, LazyCounter):
        if counter._resolved is None:
            return False  # resolving loads a tokenizer from disk: off the loop too
        counter = counter._resolved
    cheap = getattr(counter, "counts_cheaply", None)
    return callable(cheap) and bool(cheap(prompt))


def _text_chars(r: CompletionRequest) -> int:
    """Characters of user text (at most its UTF-8 length), without rendering."""
    n = len(r.prompt or "") + len(r.prefix or "") + len(r.suffix or "")
    n += sum(len(f.text) for f in r.files)
    return n + sum(len(m.content) for m in r.messages or ())


def _keeps_counts(counter: TokenCounter) -> bool:
    if isinstance(counter, LazyCounter):
        # Unresolved: resolving loads a tokenizer from disk, which belongs off the loop too.
        inner = counter._resolved
        if inner is None:
            return True
        counter = inner
    stats = getattr(counter, "cache_stats", None)
    return counter.exact and callable(stats) and stats().max_chars > 0
