"""One faulty scenario, run by the scenario tests, the leak checks and the soak: three priced
deployments on the fault server (two OpenAI-compatible, one Ollama), driven through `Router`,
`AsyncRouter` on either transport, plain or streaming, with every outcome checked.

    outcome = run_sync(router, n=40, stream=False)      # or: await run_async(...)
    outcome.check()                                     # deadlines, texts, costs
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass, field
from typing import Any

from fault_server import FaultServer, SpawnedFaultServer
from fault_support import TrackingStore, assert_costed, budget_policy

from starcoder_router import (
    AsyncRouter,
    Catalog,
    Completion,
    HealthPolicy,
    RetryPolicy,
    Router,
    StarcoderRouterError,
    StreamInterruptedError,
)
from starcoder_router._transports.base import DEADLINE_SLACK_S

TIMEOUT = 2.0          # each request's deadline
ATTEMPT_TIMEOUT = 0.3  # each provider call's: a hang or a drip falls back after this
MAX_TOKENS = 6


def router_args(server: FaultServer | SpawnedFaultServer, store: TrackingStore,
                **extra: Any) -> dict[str, Any]:
    """Three deployments, cheapest first: `a` (OpenAI), `b` (Ollama), `c` (OpenAI)."""
    deps = [server.deployment("a", input_usd_per_mtok=0.1, output_usd_per_mtok=0.2),
            server.deployment("b", protocol="ollama", input_usd_per_mtok=0.2,
                              output_usd_per_mtok=0.4),
            server.deployment("c", input_usd_per_mtok=0.4, output_usd_per_mtok=0.8)]
    settings = {"timeout": ATTEMPT_TIMEOUT, "connect_timeout": ATTEMPT_TIMEOUT}
    args: dict[str, Any] = dict(
        catalog=Catalog.default().with_deployments(*deps),
        policy=budget_policy("openai-compatible", "ollama"), store=store,
        providers={"openai-compatible": settings, "ollama": settings},
        tokenizer=False, env={},
        retry=RetryPolicy(max_retries=0, backoff_initial_s=0.01, backoff_max_s=0.05,
                          jitter_s=0, timeout_s=TIMEOUT),
        # The breaker would skip a deployment after a burst of faults; these runs want every
        # request to meet them.
        health=HealthPolicy(failure_threshold=10**9, min_requests=10**9))
    return {**args, **extra}


@dataclass
class Outcome:
    """What a run saw: completions (kept unless `keep=False`, for leak checks), errors by type,
    the slowest request and any broken promise."""

    keep: bool = True
    completions: list[Completion] = field(default_factory=list)
    served: collections.Counter[str] = field(default_factory=collections.Counter)
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    slowest: float = 0.0
    late: int = 0
    problems: list[str] = field(default_factory=list)

    def check(self) -> None:
        assert not self.problems, self.problems[:5]
        assert not self.late, f"{self.late} requests overran the deadline: {self.slowest:.2f}s"

    def record(self, started: float, completion: Completion | None = None,
               chunks: list[str] | None = None, error: BaseException | None = None) -> None:
        took = time.monotonic() - started
        self.slowest = max(self.slowest, took)
        self.late += took > TIMEOUT + DEADLINE_SLACK_S
        if completion is not None:
            self._check_completion(completion, chunks)
            return
        assert error is not None
        self.errors[type(error).__name__] += 1
        if not isinstance(error, StarcoderRouterError):
            self.problems.append(f"escaped the tree: {error!r}")
        elif isinstance(error, StreamInterruptedError) and chunks is not None \
                and error.delivered_text != "".join(chunks):
            self.problems.append("an interrupted stream misreports what it delivered")

    def _check_completion(self, c: Completion, chunks: list[str] | None) -> None:
        self.served[c.deployment.name] += 1
        if self.keep:
            self.completions.append(c)
        try:
            assert_costed(c, MAX_TOKENS)
        except AssertionError as exc:
            self.problems.append(f"miscosted: {exc}")
        # The text came from the deployment that is said to have served it, and a stream
        # delivered exactly the costed text (nothing replayed from a fallback).
        if not c.text.startswith(f"[{c.deployment.name}-"):
            self.problems.append(f"{c.deployment.name} served {c.text!r}")
        if chunks is not None and "".join(chunks) != c.text:
            self.problems.append(f"streamed {chunks!r} but costed {c.text!r}")


def one_sync(router: Router, outcome: Outcome, *, stream: bool, prompt: str,
             hedge: bool | None = None) -> None:
    started = time.monotonic()
    chunks: list[str] = []
    try:
        if stream:
            with router.stream(prompt=prompt, max_tokens=MAX_TOKENS, hedge=hedge) as s:
                for chunk in s:
                    chunks.append(chunk.text)
            assert s.completion is not None
            outcome.record(started, s.completion, chunks)
        else:
            outcome.record(started, router.complete(prompt=prompt, max_tokens=MAX_TOKENS,
                                                    hedge=hedge))
    except Exception as exc:
        outcome.record(started, chunks=chunks, error=exc)


async def one_async(router: AsyncRouter, outcome: Outcome, *, stream: bool, prompt: str,
                    hedge: bool | None = None) -> None:
    started = time.monotonic()
    chunks: list[str] = []
    try:
        if stream:
            async with router.stream(prompt=prompt, max_tokens=MAX_TOKENS, hedge=hedge) as s:
                async for chunk in s:
                    chunks.append(chunk.text)
            assert s.completion is not None
            outcome.record(started, s.completion, chunks)
        else:
            outcome.record(started, await router.complete(prompt=prompt, max_tokens=MAX_TOKENS,
                                                          hedge=hedge))
    except Exception as exc:
        outcome.record(started, chunks=chunks, error=exc)


def run_sync(router: Router, n: int, *, stream: bool) -> Outcome:
    outcome = Outcome()
    for i in range(n):
        one_sync(router, outcome, stream=stream, prompt=f"def f{i}(x):")
    return outcome


async def run_async(router: AsyncRouter, n: int, *, stream: bool,
                    concurrency: int = 8) -> Outcome:
    outcome = Outcome()
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with gate:
            await one_async(router, outcome, stream=stream, prompt=f"def f{i}(x):")

    await asyncio.gather(*(one(i) for i in range(n)))
    return outcome
