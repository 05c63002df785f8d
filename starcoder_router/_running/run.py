"""One request in flight: the queue of candidates, the attempts so far, and the rules for what
to do after each failure, with the bookkeeping of costs, usage and ledger entries. No I/O: the
sync and async routers send, sleep and call the store around it, each in its own loop.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import deque
from typing import TYPE_CHECKING, NamedTuple

from .._autocomplete import plan_for, shape
from .._errors import (
    AuthenticationError,
    BadRequestError,
    BudgetExceededError,
    ContextLengthError,
    NoRouteError,
    NotFoundError,
    ProviderError,
    StarcoderRouterError,
    StructuredOutputError,
)
from .._ids import new_id
from .._providers.base import Provider
from .._providers.call import Call, ProviderResult
from .._routing.cost import actual_cost_nano
from .._routing.decision import BudgetRouting, Candidate, RoutingDecision
from .._routing.fit import PromptCounts
from .._routing.request import CompletionRequest
from .._routing.structured import validate_structured
from .._stores.base import BudgetKey, LedgerEntry
from .hooks import CoolingWait, run_hooks
from .results import Attempt, AttemptOutcome, Completion, Usage
from .retry import HedgePolicy, retry_wait

if TYPE_CHECKING:
    from .core import RouterCore

__all__ = ["RequestRun", "Step"]

logger = logging.getLogger("starcoder_router")

# Reservations outlive the request deadline by this much, so a slow settle never races expiry,
# yet a crashed process frees its budget soon after.
_RESERVATION_MARGIN_S = 30.0


class Step(NamedTuple):
    """What to do after a failed attempt: retry the same deployment after `wait` seconds, or
    move on (`wait is None`)."""

    wait: float | None


class RequestRun:
    """One request in flight: the queue of candidates, the attempts so far, and the rules for
    what to do after each failure. Drivers call `next_candidate`, then `call_for`, send, and
    report back with `succeeded` or `failed`."""

    def __init__(self, core: RouterCore, request: CompletionRequest, decision: RoutingDecision,
                 counts: PromptCounts, budget_keys: tuple[BudgetKey, ...]):
        self.core = core
        self.request = request
        self.decision = decision
        self.counts = counts
        self.budget_keys = budget_keys
        self.id = new_id()
        self.started = core.clock.now()
        self.deadline = self.started + (request.timeout or core.retry.timeout_s)
        self.queue: deque[Candidate] = deque(decision.ranked)
        self.attempts: list[Attempt] = []
        self.tried: set[str] = set()
        self.excluded_providers: set[str] = set()
        self.last_error: ProviderError | None = None
        self.downgraded = False
        # Deployments skipped while cooling down, and why (for `NoRouteError`); time waited.
        self.skipped: dict[str, str] = {}
        self._waited: dict[str, float] = {}
        # Autocomplete post-processing (`_autocomplete`), None for a request without a mode.
        self.shaping = plan_for(request)
        # A newer request of its autocomplete session replaced this one (`sessions_run.py`):
        # a call it abandons has still cost the prompt.
        self.superseded = False

    # -- choosing -----------------------------------------------------------------------------

    def next_candidate(self) -> Candidate | None:
        while self.queue:
            cand = self.queue.popleft()
            if cand.deployment.provider in self.excluded_providers:
                continue
            return cand
        return None

    def cooling_wait(self, cand: Candidate) -> float | None:
        """0 when `cand` may be called now; seconds to wait for its circuit to let a probe
        through; None to skip it: the wait would pass `HealthPolicy.max_wait_s` (in all, for
        this request) or the deadline, or another candidate is ready now."""
        health = self.core.health
        name = cand.deployment.name
        now = self.core.clock.now()
        if health.try_acquire(name, now):
            return 0.0
        view = health.view(now).get(name)
        until = view.cooling_until if view is not None and view.cooling_until else now
        wait = max(0.0, until - now) + 0.001
        waited = self._waited.get(name, 0.0)
        if (waited + wait > health.policy.max_wait_s or now + wait >= self.deadline
                or self.queue_has_ready(now)):
            reason = view.reason if view is not None and view.reason else "circuit open"
            in_s = max(0.0, until - now)
            at = (self.core.clock.wall() + dt.timedelta(seconds=in_s)).isoformat(
                timespec="seconds")
            self.skipped[name] = (f"cooling down until {at} (in {in_s:.1f} s) after {reason}; "
                                  f"requests wait at most {health.policy.max_wait_s:g} s "
                                  f"(HealthPolicy.max_wait_s)")
            return None
        self._waited[name] = waited + wait
        logger.debug("waiting %.3f s for %s to cool down (%s)", wait, name,
                     view.reason if view is not None else "")
        if self.core.hooks.on_wait:
            run_hooks(self.core.hooks.on_wait, CoolingWait(name, wait, until - now,
                                                           view.reason if view else ""))
        return wait

    def queue_has_ready(self, now: float) -> bool:
        return any(self.core.health.state(c.deployment.name, now) != "open" for c in self.queue)

    def now(self) -> float:
        return self.core.clock.now()

    def remaining(self) -> float:
        return self.deadline - self.core.clock.now()

    def call_for(self, cand: Candidate, *, stream: bool | None = None) -> tuple[Provider, Call]:
        """The adapter and call for `cand`; `stream` overrides the request's (hedged legs of a
        plain `complete()` stream to see their first token)."""
        dep = cand.deployment
        endpoint = self.core.endpoint(dep.provider, dep.base_url)
        assert cand.rendered is not None
        request = self.request
        if stream is not None and stream != request.stream:
            request = request.model_copy(update={"stream": stream})
        call = Call(dep, request, cand.rendered, endpoint, cand.prompt_tokens, cand.count_kind)
        return self.core.adapter(dep.provider), call

    def hedge_plan(self, hedge: HedgePolicy | None) -> tuple[Candidate, Candidate, float] | None:
        """When this request should hedge: the two legs and the threshold in seconds. Takes
        both candidates off the queue."""
        wanted = self.request.hedge
        if hedge is None or wanted is False:
            return None
        if wanted is None and self.decision.objective != "latency":
            return None
        legs = [c for c in self.queue if c.deployment.supports("streaming")
                and c.deployment.provider not in self.excluded_providers][:2]
        if len(legs) < 2 or legs[0] is not self.queue[0]:
            return None
        for leg in legs:
            self.queue.remove(leg)
        name = legs[0].deployment.name
        after = hedge.after_s or self.core.health.ttft_quantile(
            name, hedge.quantile, hedge.min_samples) or hedge.default_after_s
        return legs[0], legs[1], after

    def timeout_for(self, call: Call) -> float:
        return max(0.001, min(call.endpoint.timeout, self.remaining()))

    # -- budgets ------------------------------------------------------------------------------

    def reserve_amount(self, cand: Candidate) -> int:
        """The worst-case cost to hold for `cand`: exact when a tokenizer is available (a byte
        bound can over-reserve threefold), else the byte bound, which can never under-reserve."""
        assert cand.worst_case_nano is not None
        if cand.count_kind == "bound" and self.core.counter.exact and cand.rendered is not None:
            n, _ = self.counts.count(cand.rendered.prompt)
            return actual_cost_nano(cand.deployment, n, self.request.max_tokens,
                                    cand.expected_latency_s or 0.0)
        return cand.worst_case_nano

    def reservation_ttl(self) -> float:
        return max(1.0, self.remaining()) + _RESERVATION_MARGIN_S

    def budget_exhausted(self, cand: Candidate, err: BudgetExceededError) -> bool:
        """Apply `on_budget_exhausted` after `cand` could not be admitted. True when a new queue
        (downgraded or local-only) was built and the driver should go on; False to raise."""
        mode = self.core.policy.on_budget_exhausted
        if mode == "reject" or self.downgraded:
            return False
        self.downgraded = True
        remaining = err.status.remaining_nano
        budget = BudgetRouting(
            max_worst_case_nano=remaining if mode == "downgrade" else None,
            local_only=mode == "local_only",
            force_cheapest=True,
            note=f"budget {err.status.name!r} exhausted: {mode}",
        )
        decision = self.core.decide(self.request, counts=self.counts, budget=budget)
        if self.core.hooks.on_route:
            run_hooks(self.core.hooks.on_route, decision)
        self.queue = deque(decision.ranked)
        self.decision = decision
        return bool(self.queue)

    # -- outcomes -----------------------------------------------------------------------------

    def record(self, cand: Candidate, outcome: AttemptOutcome, started: float, *,
               error: ProviderError | None = None, ttft: float | None = None, cost: int = 0,
               usage: Usage | None = None, retry: int = 0) -> Attempt:
        attempt = Attempt(cand.deployment.name, outcome, self.core.clock.now() - started, error,
                          ttft, cost, usage, retry)
        self.attempts.append(attempt)
        if self.core.hooks.on_attempt:
            run_hooks(self.core.hooks.on_attempt, attempt)
        return attempt

    def failed(self, cand: Candidate, err: ProviderError, retry_no: int, started: float) -> Step:
        """Book a failed attempt (no cost) and say whether to retry it or move on."""
        core = self.core
        name = cand.deployment.name
        now = core.clock.now()
        self.last_error = err
        self.tried.add(name)
        self.record(cand, "error", started, error=err, retry=retry_no)
        logger.info("attempt on %s failed: %s", name, type(err).__name__)
        if err.retryable:
            core.health.record_failure(name, now, err.summary())
        else:
            core.health.release_probe(name)
        if isinstance(err, ContextLengthError):
            self._context_overflow(cand, err)
            return Step(None)
        if isinstance(err, NotFoundError):
            core.health.disable(name, now + core.health.policy.not_found_cooldown_s,
                                "model not found (404)")
            return Step(None)
        if isinstance(err, (AuthenticationError, BadRequestError)):
            # The same key, or the same dialect, fails on every deployment of this provider;
            # another provider may still succeed. With none left, the driver raises at once.
            self.excluded_providers.add(cand.deployment.provider)
            return Step(None)
        if len(self.attempts) >= core.retry.max_attempts or now >= self.deadline:
            self.queue.clear()
            return Step(None)
        wait = retry_wait(core.retry, retry_no + 1, err)
        if wait is not None and now + wait < self.deadline and core.health.state(name, now + wait) \
                != "open":
            return Step(wait)
        return Step(None)

    def _context_overflow(self, cand: Candidate, err: ContextLengthError) -> None:
        """Our window setting was wrong: remember the smaller window, and re-fit the request for
        every remaining deployment (never resend a payload fitted for another window)."""
        dep = cand.deployment
        learned = err.context_window
        if learned is None or learned >= dep.context_window:
            sent = cand.prompt_tokens or 0
            if cand.count_kind == "bound" and cand.rendered is not None:
                sent, _ = self.counts.count(cand.rendered.prompt)
            learned = min(dep.context_window - 1, sent + self.request.max_tokens - 1)
        if learned > 0 and self.core.health.learn_window(dep.name, learned):
            logger.warning("%s serves a smaller window than configured: %d tokens, not %d",
                           dep.name, learned, dep.context_window)
        others = {c.deployment.name for c in self.queue} - self.tried
        if not others:
            self.queue.clear()
            return
        decision = self.core.decide(self.request, counts=self.counts, only=others)
        self.queue = deque(decision.ranked)

    def succeeded(self, cand: Candidate, result: ProviderResult, started: float,
                  ttft: float | None, retry_no: int) -> tuple[Completion, str | None]:
        """Cost the answer and build the completion. Also returns what is wrong with
        structured output (the driver raises after settling the spend)."""
        core = self.core
        now = core.clock.now()
        latency = now - started
        core.health.record_success(cand.deployment.name, now, latency, ttft)
        usage = self.usage_of(cand, result)
        if self.shaping is not None:
            # Usage stays what was generated (and billed); only the text is cut.
            result.text, cut = shape(self.shaping, result.text)
            if cut:
                result.finish_reason = "stop"
        cost = actual_cost_nano(cand.deployment, usage.prompt_tokens, usage.completion_tokens,
                                latency)
        problem = None
        fmt = self.request.response_format
        if fmt is not None:
            problem = validate_structured(result.text, fmt)
        outcome: AttemptOutcome = "ok" if problem is None else "error"
        attempt = self.record(cand, outcome, started, ttft=ttft, cost=cost, usage=usage,
                              retry=retry_no)
        completion = Completion(
            text=result.text,
            finish_reason=result.finish_reason,
            usage=usage,
            cost_nano=cost,
            deployment=cand.deployment,
            decision=self.decision,
            attempts=tuple(self.attempts),
            latency_s=attempt.latency_s,
            ttft_s=ttft,
            request_id=result.request_id,
            model=result.model,
            trimmed=cand.trimmed,
            warnings=tuple(result.warnings),
            raw_finish_reason=result.raw_finish_reason,
            mode=self.shaping.mode if self.shaping is not None else None,
        )
        if problem is None and core.hooks.on_success:
            run_hooks(core.hooks.on_success, completion)
        return completion, problem

    def cut_short(self, cand: Candidate, text: str, generated: str, started: float,
                  ttft: float | None, retry_no: int) -> Completion:
        """A stream that autocomplete ended on our side (the block closed): a successful
        completion of `text`, costed as any early stop, by the prompt and the `generated` text
        (what the provider produced before the call was closed)."""
        core = self.core
        core.health.record_success(cand.deployment.name, core.clock.now(),
                                   core.clock.now() - started, ttft)
        cost, usage = self.partial_cost(cand, generated, started)
        attempt = self.record(cand, "ok", started, ttft=ttft, cost=cost, usage=usage,
                              retry=retry_no)
        completion = Completion(
            text=text, finish_reason="stop", usage=usage, cost_nano=cost,
            deployment=cand.deployment, decision=self.decision, attempts=tuple(self.attempts),
            latency_s=attempt.latency_s, ttft_s=ttft, trimmed=cand.trimmed,
            mode=self.shaping.mode if self.shaping is not None else None,
        )
        if core.hooks.on_success:
            run_hooks(core.hooks.on_success, completion)
        return completion

    def usage_of(self, cand: Candidate, result: ProviderResult) -> Usage:
        """The provider's counts, or ours when it gave none."""
        if result.prompt_tokens is not None and result.completion_tokens is not None:
            return Usage(result.prompt_tokens, result.completion_tokens, "provider")
        prompt = result.prompt_tokens
        if prompt is None:
            assert cand.rendered is not None
            prompt, _ = self.counts.count(cand.rendered.prompt)
        completion = result.completion_tokens
        if completion is None:
            completion = self.core.counter.count(result.text)
        return Usage(prompt, completion, "counted")

    def partial_cost(self, cand: Candidate, text: str, started: float) -> tuple[int, Usage]:
        """What an interrupted or cancelled stream cost: the prompt plus the output delivered."""
        assert cand.rendered is not None
        prompt, _ = self.counts.count(cand.rendered.prompt)
        usage = Usage(prompt, self.core.counter.count(text), "counted")
        cost = actual_cost_nano(cand.deployment, usage.prompt_tokens, usage.completion_tokens,
                                self.core.clock.now() - started)
        return cost, usage

    def ledger_entry(self, cand: Candidate, cost: int, usage: Usage | None, outcome: str,
                     provider_request_id: str | None = None) -> LedgerEntry:
        dep = cand.deployment
        return LedgerEntry(
            request_id=self.id,
            time=self.core.clock.wall(),
            deployment=dep.name,
            provider=dep.provider,
            model=dep.model,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            cost_nano=cost,
            outcome=outcome,  # type: ignore[arg-type]
            tenant=self.request.tenant,
            tags=self.request.tags,
            provider_request_id=provider_request_id,
        )

    def failed_before_call(self, err: StarcoderRouterError) -> None:
        """A request that ends before any call (a budget refused it): tell the hooks."""
        if self.core.hooks.on_failure:
            run_hooks(self.core.hooks.on_failure, err)

    def exhausted(self) -> StarcoderRouterError:
        """The error to raise when no deployment is left: the last provider error, with every
        attempt attached; or NoRouteError if nothing could even be tried."""
        err = self.last_error
        if err is None:
            no_route = NoRouteError(self.decision, self.skipped)
            if self.core.hooks.on_failure:
                run_hooks(self.core.hooks.on_failure, no_route)
            return no_route
        err.attempts = tuple(self.attempts)
        if self.core.hooks.on_failure:
            run_hooks(self.core.hooks.on_failure, err)
        return err

    def structured_error(self, completion: Completion, problem: str) -> StructuredOutputError:
        dep = completion.deployment
        err = StructuredOutputError(
            f"{dep.name} returned output that {problem}", text=completion.text,
            completion=completion, provider=dep.provider, model=dep.model, deployment=dep.name,
            request_id=completion.request_id,
        )
        self.last_error = err
        return err

