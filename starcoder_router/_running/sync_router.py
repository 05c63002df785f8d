"""`Router`: the synchronous driver around the shared core.

Example::

    from starcoder_router import Router

    with Router() as router:
        print(router.route(prompt="def fib(n):", max_tokens=64).explain())
        completion = router.complete(prefix="def add(a, b):\\n    ", suffix="\\n", max_tokens=32)
        print(completion.text, completion.cost_usd)
"""

from __future__ import annotations

import os
import threading
from collections.abc import Generator, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Literal

from .._clock import Clock
from .._config import ProviderSettings
from .._errors import (
    BudgetExceededError,
    ProviderError,
    StreamInterruptedError,
)
from .._providers.base import Provider
from .._providers.call import Call, ProviderResult
from .._routing.catalog import Catalog
from .._routing.decision import Candidate
from .._routing.health import HealthPolicy
from .._routing.policy import CostPolicy
from .._routing.request import CompletionRequest, build_request
from .._routing.tokens import TokenCounter
from .._stores.base import Reservation, SpendStore
from .base_router import BaseRouter
from .hooks import Hooks
from .results import Completion, StreamChunk
from .retry import HedgePolicy, RetryPolicy
from .run import RequestRun
from .streams import Stream
from .support import (
    REQUEUE,
    RequestFields,
    Requeue,
    note_statuses,
    store_error,
    with_context,
)
from .sync_attempt import SyncLeg, SyncStreamSession

if TYPE_CHECKING:
    import queue
    from typing import Unpack

    from .._transports.base import SyncTransport

__all__ = ["Router"]

# How long a hedge's winner waits for the cancelled loser to book its attempt.
_LOSER_GRACE_S = 0.05


class Router(BaseRouter):
    """Routes and runs StarCoder 2 requests (synchronous). `AsyncRouter` is its async twin.

    With no arguments it uses the default catalog, treats a hosted provider as configured when
    its API key is in the environment, keeps spend in memory, and counts tokens exactly if a
    StarCoder 2 tokenizer can be found locally (else conservatively).
    """

    def __init__(
        self,
        *,
        catalog: Catalog | None = None,
        policy: CostPolicy | None = None,
        providers: Mapping[str, ProviderSettings | Mapping[str, Any]] | None = None,
        tokenizer: str | os.PathLike[str] | TokenCounter | Literal[False] | None = None,
        store: SpendStore | None = None,
        retry: RetryPolicy | None = None,
        health: HealthPolicy | None = None,
        hooks: Hooks | None = None,
        transport: SyncTransport | None = None,
        hedge: HedgePolicy | None = None,
        clock: Clock | None = None,
        env: Mapping[str, str] | None = None,
    ):
        super().__init__(catalog=catalog, policy=policy, providers=providers,
                         tokenizer=tokenizer, store=store, retry=retry, health=health,
                         hooks=hooks, hedge=hedge, clock=clock, env=env)
        self._transport = transport
        self._transports: dict[str, SyncTransport] = {}

    # -- the API --------------------------------------------------------------------------------

    def complete(self, request: CompletionRequest | None = None, /,
                 **fields: Unpack[RequestFields]) -> Completion:
        """Route and run a request; returns the costed completion."""
        req = build_request(request, fields)
        if req.stream:
            req = req.model_copy(update={"stream": False})
        run = self._start(req)
        plan = run.hedge_plan(self._hedge)
        if plan is not None:
            won = self._race(run, *plan, stream=True)
            if won is not None:
                session, chunks, _ = won
                try:
                    for _chunk in chunks:
                        pass
                except StreamInterruptedError:
                    pass  # booked; nothing reached the caller yet, so fall back below
                else:
                    assert session.completion is not None
                    return session.completion
                finally:
                    chunks.close()
        while (cand := run.next_candidate()) is not None:
            outcome = self._run_candidate(run, cand)
            if isinstance(outcome, Completion):
                return outcome
        raise run.exhausted()

    def stream(self, request: CompletionRequest | None = None, /,
               **fields: Unpack[RequestFields]) -> Stream:
        """Route and stream a request. Iterate for `StreamChunk`s; use as a context manager so
        an early exit closes the connection. `stream.completion` has usage and cost at the end.
        """
        if request is None:
            fields["stream"] = True  # set before validation: cheaper than copying after
        req = build_request(request, fields)
        if not req.stream:
            req = req.model_copy(update={"stream": True})
        run = self._start(req)
        return Stream(self._stream_chunks(run))

    def close(self) -> None:
        for t in self._transports.values():
            t.close()
        self._transports.clear()
        if self._transport is not None:
            self._transport.close()

    def __enter__(self) -> Router:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ------------------------------------------------------------------------------

    def _transport_for(self, provider: str) -> SyncTransport:
        if self._transport is not None:
            return self._transport
        t = self._transports.get(provider)
        if t is None:
            from .._transports.httpx_transport import HttpxTransport

            t = self._transports[provider] = HttpxTransport()
        return t

    def _reserve(self, run: RequestRun, cand: Candidate) -> Reservation | Requeue | None:
        if not run.budget_keys:
            return None
        try:
            res = self._store.reserve(run.budget_keys, run.reserve_amount(cand),
                                      run.reservation_ttl())
        except BudgetExceededError as err:
            if run.budget_exhausted(cand, err):
                return REQUEUE
            run.failed_before_call(err)
            raise
        except Exception as exc:
            raise store_error("reserve", exc) from exc
        note_statuses(self._soft, res)
        return res

    def _settle(self, run: RequestRun, res: Reservation | None, cand: Candidate, cost: int,
                usage: Any, outcome: str, provider_request_id: str | None = None) -> None:
        entry = run.ledger_entry(cand, cost, usage, outcome, provider_request_id)
        try:
            if res is None:
                self._store.record(run.budget_keys, cost, entry)
            else:
                self._store.settle(res, cost, entry)
        except Exception as exc:
            raise store_error("record the spend of", exc, entry) from exc

    def _release(self, res: Reservation | None) -> None:
        if res is not None:
            try:
                self._store.release(res)
            except Exception as exc:
                raise store_error("release", exc) from exc

    def _send(self, provider: Provider, call: Call, timeout: float) -> ProviderResult:
        wire = provider.build(call)
        transport = self._transport_for(call.deployment.provider)
        try:
            resp = transport.send(wire, timeout=timeout,
                                  connect_timeout=call.endpoint.connect_timeout)
            if resp.status >= 400:
                raise provider.error(call, resp)
            return provider.parse(call, resp)
        except ProviderError as exc:
            if exc.deployment:
                raise
            raise with_context(exc, call) from exc

    def _admit(self, run: RequestRun, cand: Candidate) -> Reservation | Requeue | None:
        """Wait while `cand` cools down (if the deadline allows), then hold its budget.
        `Requeue` means: move on (too long a wait, or the budget policy chose other
        deployments)."""
        while (wait := run.cooling_wait(cand)) != 0.0:
            if wait is None:
                return REQUEUE
            self._core.clock.sleep(wait)
        res = self._reserve(run, cand)
        if isinstance(res, Requeue):
            self._core.health.release_probe(cand.deployment.name)
        return res

    def _back_off(self, run: RequestRun, cand: Candidate, err: ProviderError,
                  res: Reservation | None, retry_no: int, started: float) -> bool:
        """After a failed attempt: free its budget, book it, and wait if it is worth trying
        the same deployment again (True) rather than moving on (False)."""
        self._release(res)
        step = run.failed(cand, err, retry_no, started)
        if step.wait is None:
            return False
        self._core.clock.sleep(step.wait)
        return True

    def _run_candidate(self, run: RequestRun, cand: Candidate) -> Completion | None:
        """Try one deployment, with its retries. A completion, or None to move on."""
        clock = self._core.clock
        retry_no = 0
        while not isinstance(res := self._admit(run, cand), Requeue):
            provider, call = run.call_for(cand)
            started = clock.now()
            try:
                result = self._send(provider, call, run.timeout_for(call))
            except ProviderError as err:
                if not self._back_off(run, cand, err, res, retry_no, started):
                    return None
                retry_no += 1
                continue
            completion, problem = run.succeeded(cand, result, started, None, retry_no)
            self._settle(run, res, cand, completion.cost_nano, completion.usage,
                         "ok" if problem is None else "error", completion.request_id)
            if problem is None:
                return completion
            run.structured_error(completion, problem)
            return None
        return None

    def _stream_chunks(self, run: RequestRun) -> Iterator[StreamChunk | Completion]:
        """Chunks from the first deployment that starts streaming, then the final `Completion`
        (the `Stream` keeps it). Falls back only while nothing has reached the caller."""
        session, chunks, first = self._start_streaming(run)
        try:
            yield first
            yield from chunks
        finally:
            chunks.close()
        assert session.completion is not None
        yield session.completion

    def _start_streaming(
        self, run: RequestRun,
    ) -> tuple[SyncStreamSession, Generator[StreamChunk, None, None], StreamChunk]:
        """The first attempt to produce a chunk (hedged, when the request hedges); the
        failures before it are retried and fallen back from."""
        plan = run.hedge_plan(self._hedge)
        if plan is not None:
            won = self._race(run, *plan)
            if won is not None:
                return won
        while (cand := run.next_candidate()) is not None:
            started = self._first_chunk_from(run, cand)
            if started is not None:
                return started
        raise run.exhausted()

    def _first_chunk_from(
        self, run: RequestRun, cand: Candidate,
    ) -> tuple[SyncStreamSession, Generator[StreamChunk, None, None], StreamChunk] | None:
        """Open a stream on one deployment, with its retries, up to its first chunk."""
        clock = self._core.clock
        retry_no = 0
        while not isinstance(res := self._admit(run, cand), Requeue):
            provider, call = run.call_for(cand)
            started = clock.now()
            session = SyncStreamSession(self, run, cand, provider, call, res, started, retry_no)
            chunks = session.chunks()
            try:
                return session, chunks, next(chunks)
            except ProviderError as err:
                chunks.close()
                if not self._back_off(run, cand, err, res, retry_no, started):
                    return None
                retry_no += 1
        return None

    def _race(
        self, run: RequestRun, first: Candidate, second: Candidate, after: float, *,
        stream: bool | None = None,
    ) -> tuple[SyncStreamSession, Generator[StreamChunk, None, None], StreamChunk] | None:
        """Hedge (see `HedgePolicy`): each leg waits for its first token on a thread of its own;
        the first to produce output wins and the caller goes on reading it here, the other is
        cancelled by closing its connection (and books what it cost)."""
        clock = self._core.clock
        import queue  # only hedged requests need it

        reports: queue.Queue[SyncLeg] = queue.Queue()
        legs: list[SyncLeg] = []

        def start(cand: Candidate) -> None:
            res = self._reserve(run, cand)
            if isinstance(res, Requeue):
                return
            provider, call = run.call_for(cand, stream=stream)
            session = SyncStreamSession(self, run, cand, provider, call, res, clock.now(), 0)
            leg = SyncLeg(cand, res, session, session.chunks())
            leg.thread = threading.Thread(target=leg.pull_first, args=(reports,), daemon=True,
                                          name=f"starcoder-router-hedge-{cand.deployment.name}")
            legs.append(leg)
            leg.thread.start()

        start(first)
        early: SyncLeg | None = None
        if legs:
            try:
                early = reports.get(timeout=after)
            except queue.Empty:
                early = None
        if early is None or early.error is not None:
            start(second)
        else:
            run.queue.appendleft(second)  # not needed now; still a fallback
        winner: SyncLeg | None = None
        unheard = len(legs)
        while unheard and winner is None:
            leg = early if early is not None else reports.get()
            early = None
            unheard -= 1
            if leg.error is None:
                winner = leg
            elif isinstance(leg.error, ProviderError):
                self._release(leg.res)
                run.failed(leg.cand, leg.error, 0, leg.session.started)
            else:
                raise leg.error
        for leg in legs:
            if leg is not winner and leg.error is None:
                leg.cancel()
        for leg in legs:
            if leg is not winner and leg.thread is not None:
                # Usually the closed connection ends the loser at once. One still waiting for
                # its server cannot be interrupted from here: it books itself when that ends,
                # and the winner does not wait for it.
                leg.thread.join(timeout=_LOSER_GRACE_S)
        if winner is None or winner.first is None:
            return None
        return winner.session, winner.chunks, winner.first
