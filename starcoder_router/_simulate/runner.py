"""`simulate()`: a workload under several policies, side by side.

Example::

    from starcoder_router import read_workload, simulate

    result = simulate(read_workload("examples/workload.jsonl").requests,
                      config="examples/router.toml")
    for s in result.summaries:
        print(s.name, s.cost_usd, s.refused)
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import os
import random
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Literal, NamedTuple

from .._autocomplete.sessions import AutocompletePolicy
from .._config import load_config
from .._errors import InvalidRequestError
from .._routing.catalog import Catalog
from .._routing.health import HealthPolicy
from .._routing.policy import CostPolicy
from .._routing.tokens import EstimatingCounter, TokenCounter, load_token_counter
from .._running.retry import RetryPolicy
from .engine import ScenarioLoop
from .memo import PreparedMemo
from .model import SimulationSettings, draw_output_tokens, load_settings
from .records import Prepared, ScenarioRun
from .scenarios import SCENARIO_NAMES, build_scenarios
from .sessions import AutocompleteCounts, AutocompleteFigures, SessionModel, figures_of
from .summary import PolicySummary, summary_of
from .synthetic import SyntheticCounter
from .workload import WorkloadFile, WorkloadRequest

__all__ = ["DEFAULT_START", "SimulationResult", "prepare", "prepared", "simulate"]

# A fixed Monday far enough ahead that no spend store takes its periods for finished ones.
DEFAULT_START = dt.datetime(2030, 1, 7, tzinfo=dt.UTC)


class SimulationResult(NamedTuple):
    """Every policy's summary and run (its per-request outcomes only when they were kept), the
    deployments' windows, and every request's prompt size in workload order. With the
    autocomplete features simulated, each policy's totals with them off and/or on."""

    summaries: tuple[PolicySummary, ...]
    runs: dict[str, ScenarioRun]
    windows: dict[str, int]
    start: dt.datetime
    seed: int
    prompt_tokens: Sequence[int] = ()
    autocomplete: tuple[AutocompleteFigures, ...] = ()


def prepared(requests: Iterable[WorkloadRequest], *, counter: SyntheticCounter,
             seed: int, smallest_window: int = 0,
             accept_rate: float = 0.3) -> Iterator[Prepared]:
    """Render and count each request once, and fix its output length (drawn when the line
    does not say), so every policy sees the same requests. Lazily, in the given order; the
    requests must come in arrival order. A synthetic FIM request longer than
    `smallest_window` is marked trimmable. A request of a session is drawn to type through
    its session's previous suggestion at `accept_rate` when its line does not say."""
    rng = random.Random(seed)
    # Its own stream: drawing acceptances leaves every other draw as it was without sessions.
    accepting = random.Random(f"accepts:{seed}")
    memo = PreparedMemo(counter, smallest_window)
    last = -math.inf
    for wr in requests:
        if wr.timestamp < last:
            raise InvalidRequestError(
                f"workload requests must come in arrival order: timestamp {wr.timestamp} "
                f"after {last} (read_workload and stream_workload sort them)")
        last = wr.timestamp
        made = memo.get(wr)
        output = wr.output_tokens if wr.output_tokens is not None else \
            draw_output_tokens(wr.kind, wr.max_tokens, rng)
        session = wr.session_key
        if session is None:
            yield Prepared(wr.timestamp, made.request, wr.kind, wr.tenant or "-", made.tokens,
                           min(output, wr.max_tokens), made.trimmable)
            continue
        accepts = wr.accepts_previous if wr.accepts_previous is not None else \
            accepting.random() < accept_rate
        key = made.repeat_key() if wr.temperature == 0 else None
        yield Prepared(wr.timestamp, made.request, wr.kind, wr.tenant or "-", made.tokens,
                       min(output, wr.max_tokens), made.trimmable, session, accepts, key)


def prepare(requests: Sequence[WorkloadRequest], *, counter: SyntheticCounter,
            seed: int) -> list[Prepared]:
    """`prepared` as a list."""
    return list(prepared(requests, counter=counter, seed=seed))


def simulate(
    requests: Iterable[WorkloadRequest],
    *,
    config: str | os.PathLike[str] | None = None,
    policies: Sequence[str] = SCENARIO_NAMES,
    settings: SimulationSettings | None = None,
    start: dt.datetime = DEFAULT_START,
    progress: Callable[[str, int], None] | None = None,
    keep_outcomes: bool = True,
    autocomplete: Literal["off", "on", "both"] | None = None,
    autocomplete_policy: AutocompletePolicy | None = None,
) -> SimulationResult:
    """Simulate `requests` under each of `policies` (see `scenarios`), with the catalog,
    policy, retry and health settings of `config` (the defaults without one).

    `requests` is read once, lazily: a list (sorted here by arrival) or anything iterable in
    arrival order, such as `stream_workload(path)`, which reads a file of any length without
    holding it. Every policy runs side by side on the same request as it is read, and only
    totals are kept per policy; `keep_outcomes=False` also drops each request's outcome
    (`ScenarioRun.outcomes` stays empty), so memory no longer grows with the workload.

    `autocomplete` runs each policy with editor sessions, typed-ahead reuse and the
    exact-repeat cache (`sessions.py`) `"off"` (as the router without them), `"on"` (the
    summaries are then those with them on) or `"both"` (summaries with them off, and
    `SimulationResult.autocomplete` compares). None: `"both"` when a request has a session
    (known up front for a list or `stream_workload`), else `"off"`. The features are
    `autocomplete_policy`, else the config's `[autocomplete]`, else the defaults."""
    catalog, policy = Catalog.default(), CostPolicy()
    retry: RetryPolicy | None = None
    health: HealthPolicy | None = None
    inner: TokenCounter = EstimatingCounter()
    if config is not None:
        cfg = load_config(config)
        catalog, policy, retry, health = cfg.catalog, cfg.policy, cfg.retry, cfg.health
        autocomplete_policy = autocomplete_policy or cfg.autocomplete
        if cfg.tokenizer:
            inner = load_token_counter(cfg.tokenizer)
        settings = settings or load_settings(config)
    settings = settings or SimulationSettings()
    counter = SyntheticCounter(inner)
    scenarios = build_scenarios(catalog, policy, policies)
    if isinstance(requests, Sequence):
        requests = sorted(requests, key=lambda r: r.timestamp)  # stable: ties keep their order
    mode = _mode(autocomplete, requests)
    features = autocomplete_policy or AutocompletePolicy()
    loops: list[ScenarioLoop] = []
    for on in (False, True):
        if mode != ("off" if on else "on"):
            loops += [ScenarioLoop(s, settings=settings, counter=counter, start=start,
                                   retry=retry, health=health,
                                   keep_outcomes=keep_outcomes and not loops,
                                   sessions=SessionModel(features, AutocompleteCounts()) if on
                                   else None)
                      for s in scenarios]
    main = len(scenarios) if mode != "on" else 0
    sizes = array("q")
    label = scenarios[0].name if len(scenarios) == 1 else f"{len(scenarios)} policies"
    caller_state = random.getstate()
    # The retry back-off's jitter draws from the `random` module: each policy draws from its
    # own stream seeded alike, as if it ran alone, and the caller's state is put back after.
    random.seed(settings.seed)
    states = [random.getstate()] * len(loops)
    try:
        done = 0
        smallest = min((d.context_window for d in catalog.deployments), default=0)
        for chunk in _chunks(prepared(requests, counter=counter, seed=settings.seed,
                                      smallest_window=smallest,
                                      accept_rate=settings.accept_rate)):
            for i, loop in enumerate(loops):
                random.setstate(states[i])
                for n, p in enumerate(chunk, start=done):
                    loop.arrive(n, p)
                states[i] = random.getstate()
            sizes.extend(p.prompt_tokens for p in chunk)
            done += len(chunk)
            if progress is not None and done % _PROGRESS_EVERY < _CHUNK:
                progress(label, done)
        finished: list[ScenarioRun] = []
        for i, loop in enumerate(loops):
            random.setstate(states[i])
            finished.append(loop.finish())
    finally:
        random.setstate(caller_state)
    if progress is not None:
        progress(label, done)
    shown = slice(0, main) if main else slice(None)  # "on" alone: the runs with them on
    runs = {loop.scenario.name: run
            for loop, run in zip(loops[shown], finished[shown], strict=True)}
    summaries = tuple(summary_of(loop.scenario, run.numbers(), run.exhausted)
                      for loop, run in zip(loops[shown], finished[shown], strict=True))
    return SimulationResult(summaries, runs,
                            {d.name: d.context_window for d in catalog.deployments}, start,
                            settings.seed, sizes,
                            _figures(loops, finished, main) if mode != "off" else ())


def _figures(loops: Sequence[ScenarioLoop], runs: Sequence[ScenarioRun],
             main: int) -> tuple[AutocompleteFigures, ...]:
    """Each loop's totals; the first `main` ran with the features off."""
    return tuple(figures_of(loop.scenario.name, "on" if i >= main else "off",
                            run.numbers().requests, run.numbers().cost_nano, loop.counts)
                 for i, (loop, run) in enumerate(zip(loops, runs, strict=True)))


def _mode(asked: str | None, requests: Iterable[WorkloadRequest]) -> str:
    if asked is None:
        return "both" if _has_sessions(requests) else "off"
    if asked not in ("off", "on", "both"):
        raise InvalidRequestError(f"autocomplete must be 'off', 'on' or 'both', not {asked!r}")
    return asked


def _has_sessions(requests: Iterable[WorkloadRequest]) -> bool:
    """Whether a request has a session, when that is known without reading `requests`."""
    if isinstance(requests, WorkloadFile):
        return requests.has_sessions
    if isinstance(requests, list | tuple):
        return any(r.session_key is not None for r in requests)
    return False


# Requests are prepared a few at a time and each policy then takes the few in turn, so the
# random module's state is swapped per few requests, not per request.
_CHUNK = 64
_PROGRESS_EVERY = 1024


def _chunks(items: Iterator[Prepared]) -> Iterator[list[Prepared]]:
    while chunk := list(itertools.islice(items, _CHUNK)):
        yield chunk
