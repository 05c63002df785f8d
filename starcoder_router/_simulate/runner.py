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
import os
import random
from collections.abc import Callable, Sequence
from typing import NamedTuple

from .._config import load_config
from .._routing.catalog import Catalog
from .._routing.health import HealthPolicy
from .._routing.policy import CostPolicy
from .._routing.render import render
from .._routing.tokens import EstimatingCounter, TokenCounter, load_token_counter
from .._running.retry import RetryPolicy
from .engine import simulate_scenario
from .model import SimulationSettings, draw_output_tokens, load_settings
from .records import Prepared, Scenario, ScenarioRun
from .scenarios import SCENARIO_NAMES, build_scenarios
from .summary import PolicySummary, summarize
from .synthetic import SyntheticCounter
from .workload import WorkloadRequest

__all__ = ["DEFAULT_START", "SimulationResult", "prepare", "simulate"]

# A fixed Monday far enough ahead that no spend store takes its periods for finished ones.
DEFAULT_START = dt.datetime(2030, 1, 7, tzinfo=dt.UTC)


class SimulationResult(NamedTuple):
    """Every policy's summary and per-request outcomes, and the deployments' windows."""

    summaries: tuple[PolicySummary, ...]
    runs: dict[str, ScenarioRun]
    windows: dict[str, int]
    start: dt.datetime
    seed: int


def prepare(requests: Sequence[WorkloadRequest], *, counter: TokenCounter,
            seed: int) -> list[Prepared]:
    """Render and count each request once, and fix its output length (drawn when the line
    does not say), so every policy sees the same requests."""
    rng = random.Random(seed)
    out = []
    for wr in requests:
        req = wr.to_request()
        output = wr.output_tokens if wr.output_tokens is not None else \
            draw_output_tokens(wr.kind, wr.max_tokens, rng)
        out.append(Prepared(wr.timestamp, req, wr.kind, wr.tenant or "-",
                            counter.count(render(req).prompt), min(output, wr.max_tokens)))
    return out


def simulate(
    requests: Sequence[WorkloadRequest],
    *,
    config: str | os.PathLike[str] | None = None,
    policies: Sequence[str] = SCENARIO_NAMES,
    settings: SimulationSettings | None = None,
    start: dt.datetime = DEFAULT_START,
    progress: Callable[[str, int], None] | None = None,
) -> SimulationResult:
    """Simulate `requests` under each of `policies` (see `scenarios`), with the catalog,
    policy, retry and health settings of `config` (the defaults without one)."""
    catalog, policy = Catalog.default(), CostPolicy()
    retry: RetryPolicy | None = None
    health: HealthPolicy | None = None
    inner: TokenCounter = EstimatingCounter()
    if config is not None:
        cfg = load_config(config)
        catalog, policy, retry, health = cfg.catalog, cfg.policy, cfg.retry, cfg.health
        if cfg.tokenizer:
            inner = load_token_counter(cfg.tokenizer)
        settings = settings or load_settings(config)
    settings = settings or SimulationSettings()
    counter = SyntheticCounter(inner)
    prepared = prepare(requests, counter=counter, seed=settings.seed)
    summaries = []
    runs: dict[str, ScenarioRun] = {}
    for scenario in build_scenarios(catalog, policy, policies):
        tick = _ticker(progress, scenario)
        state = random.getstate()
        # The retry back-off's jitter draws from the `random` module: seed it so a run is
        # reproducible, and put it back as it was.
        random.seed(settings.seed)
        try:
            ran = simulate_scenario(
                scenario, prepared, settings=settings, counter=counter, start=start,
                retry=retry, health=health, progress=tick)
        finally:
            random.setstate(state)
        runs[scenario.name] = ran
        summaries.append(summarize(scenario, ran.outcomes, ran.exhausted))
    windows = {d.name: d.context_window for d in catalog.deployments}
    return SimulationResult(tuple(summaries), runs, windows, start, settings.seed)


def _ticker(progress: Callable[[str, int], None] | None,
            scenario: Scenario) -> Callable[[int], None] | None:
    if progress is None:
        return None
    return lambda done: progress(scenario.name, done)
