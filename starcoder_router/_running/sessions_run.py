"""The routers' side of autocomplete sessions (`_autocomplete/sessions.py`): answering from an
earlier completion, following a running request, and stopping a superseded one.

`SessionHook` does no I/O: it asks the session table what to do and builds the completions it
answers with. The twins below carry that out: `complete_sync`/`stream_sync` for `Router`,
`complete_async`/`stream_async` for `AsyncRouter`. A superseded request:

* `AsyncRouter`: its task is cancelled while it waits on the upstream call; the flow frees its
  hold and books what the call cost (the prompt, and the output a stream already produced);
* `Router`: a blocking call cannot be interrupted from another thread, so a superseded call
  ends when its stream's next chunk arrives: it stops reading there and closes its connection,
  booking what was produced. A `complete()` in a session streams its attempts for this, and
  reads each to its end (`complete_flow(drained=True)`): its answer is the one the plain
  reply would give;

and its caller gets a `Completion` with `finish_reason="superseded"`: empty text for
`complete()`; for a stream, a last empty chunk with that finish reason, and the text already
delivered in `stream.completion`.

A request that follows a running one (`following.py`) waits at most its own timeout; when the
leader ends without an answer it can use, before anything reached the follower, the follower
asks upstream itself.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import AsyncGenerator, Callable, Generator
from typing import TYPE_CHECKING

from .._autocomplete.sessions import AutocompletePolicy, Begin, SessionTable, Ticket
from .._ids import new_id
from .._stores.base import LedgerEntry
from .flow import complete_flow
from .following import (
    Reader,
    answer,
    follow_async,
    follow_sync,
    wait_async,
    wait_sync,
    whole_ready,
)
from .offload import count_off_loop, counts_off_loop
from .results import Completion, StreamChunk, Usage

if TYPE_CHECKING:
    from .._routing.request import CompletionRequest
    from .async_router import AsyncRouter
    from .run import RequestRun
    from .streams import AsyncStream, Stream
    from .sync_router import Router

__all__ = ["SessionHook", "complete_async", "complete_sync", "stream_async", "stream_sync"]

Items = Generator[StreamChunk | Completion, None, None]
AsyncItems = AsyncGenerator[StreamChunk | Completion, None]


class SessionHook:
    """One router's sessions and cache, and the completions they answer with."""

    def __init__(self, policy: AutocompletePolicy, now: Callable[[], float]):
        self.table = SessionTable(policy)
        self._now = now
        self._nothing = Begin()

    def begin(self, request: CompletionRequest) -> Begin | None:
        """What to do with `request`; None when no session or cache applies to it."""
        begin = self.table.begin(request, self._now())
        return None if begin == self._nothing else begin

    def finish(self, begin: Begin, completion: Completion | None) -> None:
        whole = completion is not None and completion.finish_reason in ("stop", "length")
        self.table.finish(begin, _kept(completion) if completion is not None else None,
                          completion.text if completion else "", whole,
                          whole and completion is not None
                          and completion.served_from == "upstream", self._now())

    def served(self, begin: Begin) -> Completion:
        assert begin.served is not None
        earlier, typed, source = begin.served
        return answer(earlier, earlier.text[len(typed):], source)

    @staticmethod
    def entry(completion: Completion, request: CompletionRequest) -> LedgerEntry:
        """The ledger's record of an answer served at no cost."""
        dep = completion.deployment
        return LedgerEntry(
            request_id=new_id(), time=dt.datetime.now(dt.UTC), deployment=dep.name,
            provider=dep.provider, model=dep.model, prompt_tokens=0, completion_tokens=0,
            cost_nano=0, outcome=completion.served_from,  # type: ignore[arg-type]
            tenant=request.tenant, tags=request.tags)

    @staticmethod
    def superseded(run: RequestRun, text: str) -> Completion:
        """The answer of a superseded request: what it delivered and what it cost."""
        attempts = tuple(run.attempts)
        last = attempts[-1] if attempts else None
        dep = run.decision.ranked[0].deployment
        for cand in run.decision.ranked:
            if last is not None and cand.deployment.name == last.deployment:
                dep = cand.deployment
        return Completion(
            text=text, finish_reason="superseded",
            usage=last.usage if last is not None and last.usage else Usage(0, 0, "counted"),
            cost_nano=last.cost_nano if last is not None else 0, deployment=dep,
            decision=run.decision, attempts=attempts, latency_s=run.now() - run.started,
            mode=run.shaping.mode if run.shaping is not None else None)


def _kept(completion: Completion) -> Completion:
    """`completion` as sessions and the cache keep it: its routing decision without the
    request's text and the rendered prompts, so that what a kept answer holds is bounded by
    its own text, not by the size of the file it was asked about."""
    d = completion.decision
    request = d.request.model_copy(update={
        "prompt": None if d.request.prompt is None else "", "prefix": None, "suffix": None,
        "files": (), "messages": None, "extra_body": None})
    slim = {id(c): c._replace(rendered=None) for c in d.candidates}
    decision = dataclasses.replace(
        d, request=request, candidates=tuple(slim.values()),
        ranked=tuple(slim.get(id(c)) or c._replace(rendered=None) for c in d.ranked))
    return dataclasses.replace(completion, decision=decision)


def _timeout(router: Router | AsyncRouter, req: CompletionRequest) -> float:
    return req.timeout or router._core.retry.timeout_s


# -- Router ------------------------------------------------------------------------------------

def complete_sync(router: Router, req: CompletionRequest, begin: Begin) -> Completion:
    hook = router._sessions
    if begin.served is not None:
        served = hook.served(begin)
        router._store.record((), 0, hook.entry(served, req))
        return served
    real: Completion | None = None
    try:
        if begin.follow is not None:
            reader = Reader(begin)
            if wait_sync(reader, whole_ready(reader), _timeout(router, req)):
                real = reader.whole()
                if real is not None:
                    router._store.record((), 0, hook.entry(real, req))
                    return real
        run = router._core.start(req)
        ticket = begin.ticket
        if ticket is not None:
            ticket.bind(lambda: setattr(run, "superseded", True))
        try:
            if ticket is None or not ticket.superseded:
                # With a ticket, attempts stream and are read to their end, so that a newer
                # request stops this one between two chunks instead of after its whole reply.
                drained = ticket is not None and req.response_format is None
                real = router._drive(complete_flow(run, router._hedge, drained=drained))
        finally:
            if ticket is not None:
                ticket.bind(None)
        if ticket is not None and ticket.superseded:
            return hook.superseded(run, "")
        assert real is not None
        return real
    finally:
        hook.finish(begin, real)


def stream_sync(router: Router, req: CompletionRequest, begin: Begin, stream: Stream) -> Items:
    hook = router._sessions
    if begin.served is not None:
        served = hook.served(begin)
        stream.served_from = served.served_from
        router._store.record((), 0, hook.entry(served, req))
        yield StreamChunk(served.text, 0, served.finish_reason)
        yield served
        return
    # The session learns how the request ended before its caller reads the completion (the
    # last item): a caller has what it wants then, and may leave this generator unfinished.
    ended = False
    try:
        items: Items | None = None
        if begin.follow is not None:
            reader = Reader(begin)
            timeout = _timeout(router, req)
            if wait_sync(reader, reader.has_news, timeout):
                first = reader.fresh()
                if first or reader.whole() is not None:
                    stream.served_from = "reuse"
                    items = follow_sync(reader, first, timeout)
        if items is None:
            items = _upstream_sync(router, router._core.start(req), begin.ticket, stream)
        try:
            for item in items:
                if isinstance(item, Completion):
                    ended = True
                    hook.finish(begin, item)
                    if item.served_from != "upstream":
                        router._store.record((), 0, hook.entry(item, req))
                yield item
        finally:
            items.close()  # a caller that stops early: the attempt books what it produced
    finally:
        if not ended:
            hook.finish(begin, stream.completion)


def _upstream_sync(router: Router, run: RequestRun, ticket: Ticket | None,
                   stream: Stream) -> Items:
    if ticket is not None:
        ticket.bind(lambda: setattr(run, "superseded", True))
    source = router._stream_chunks(run, stream)
    try:
        index = 0
        for item in source:
            if isinstance(item, Completion):
                yield item
                return
            if ticket is not None:
                if ticket.superseded:
                    break
                ticket.tap.push(item.text)
            yield item
            index = item.index + 1
        else:
            return
    finally:
        source.close()  # the attempt books what it produced
        if ticket is not None:
            ticket.bind(None)
    yield StreamChunk("", index, "superseded")
    yield SessionHook.superseded(run, stream.text)


# -- AsyncRouter -------------------------------------------------------------------------------

async def complete_async(router: AsyncRouter, req: CompletionRequest,
                         begin: Begin) -> Completion:
    hook = router._sessions
    if begin.served is not None:
        served = hook.served(begin)
        await router._astore.arecord((), 0, hook.entry(served, req))
        return served
    real: Completion | None = None
    try:
        if begin.follow is not None:
            reader = Reader(begin)
            if await wait_async(reader, whole_ready(reader), _timeout(router, req)):
                real = reader.whole()
                if real is not None:
                    await router._astore.arecord((), 0, hook.entry(real, req))
                    return real
        await count_off_loop(router._core.counter, req, router._counting)
        run = router._core.start(req)
        ticket = begin.ticket
        if ticket is None:
            real = await router._drive(complete_flow(run, router._hedge))
            return real
        if ticket.superseded:
            return hook.superseded(run, "")
        task = asyncio.current_task()
        assert task is not None

        def abort() -> None:
            run.superseded = True
            task.cancel()

        ticket.bind(abort)
        try:
            real = await router._drive(complete_flow(run, router._hedge))
            return real
        except asyncio.CancelledError:
            ticket.bind(None)
            if not ticket.superseded or task.uncancel() > 0:
                raise
            return hook.superseded(run, "")
        finally:
            ticket.bind(None)
    finally:
        hook.finish(begin, real)


async def stream_async(router: AsyncRouter, req: CompletionRequest, begin: Begin,
                       stream: AsyncStream) -> AsyncItems:
    hook = router._sessions
    if begin.served is not None:
        served = hook.served(begin)
        stream.served_from = served.served_from
        await router._astore.arecord((), 0, hook.entry(served, req))
        yield StreamChunk(served.text, 0, served.finish_reason)
        yield served
        return
    ended = False  # as in `stream_sync`
    try:
        items: AsyncItems | None = None
        if begin.follow is not None:
            reader = Reader(begin)
            timeout = _timeout(router, req)
            if await wait_async(reader, reader.has_news, timeout):
                first = reader.fresh()
                if first or reader.whole() is not None:
                    stream.served_from = "reuse"
                    items = follow_async(reader, first, timeout)
        if items is None:
            if counts_off_loop(req):
                await count_off_loop(router._core.counter, req, router._counting)
            items = _upstream_async(router, router._core.start(req), begin.ticket, stream)
        try:
            async for item in items:
                if isinstance(item, Completion):
                    ended = True
                    hook.finish(begin, item)
                    if item.served_from != "upstream":
                        await router._astore.arecord((), 0, hook.entry(item, req))
                yield item
        finally:
            await items.aclose()
    finally:
        if not ended:
            hook.finish(begin, stream.completion)


async def _upstream_async(router: AsyncRouter, run: RequestRun, ticket: Ticket | None,
                          stream: AsyncStream) -> AsyncItems:
    source = router._stream_chunks(run, stream)
    # The task waiting for the next chunk, if any: a newer request cancels it there.
    waiting: list[asyncio.Task[object]] = []

    def abort() -> None:
        run.superseded = True
        for task in waiting:
            task.cancel()

    if ticket is not None:
        ticket.bind(abort)
    index = 0
    try:
        while ticket is None or not ticket.superseded:
            task = asyncio.current_task()
            assert task is not None
            waiting.append(task)
            try:
                item = await source.__anext__()
            except StopAsyncIteration:
                return
            except asyncio.CancelledError:
                if ticket is None or not ticket.superseded or task.uncancel() > 0:
                    raise
                break
            finally:
                waiting.clear()
            if isinstance(item, Completion):
                yield item
                return
            if ticket is not None:
                ticket.tap.push(item.text)
            yield item
            index = item.index + 1
    finally:
        if ticket is not None:
            ticket.bind(None)
        await source.aclose()  # the attempt books what it produced
    yield StreamChunk("", index, "superseded")
    yield SessionHook.superseded(run, stream.text)
