"""How simulated deployments behave: latency, failures and outages, and how long answers are.

The defaults are assumptions, not measurements; set your own in the router config::

    [simulate]
    seed = 7

    [simulate.deployments."fireworks/starcoder2-7b"]
    ttft_s = 0.4              # time to first token
    prefill_tokens_per_s = 9000
    tokens_per_s = 80         # output speed
    failure_rate = 0.02       # share of attempts that fail with a 503
    outages = [[3600, 4200]]  # seconds after the start when every attempt fails

Default speeds by variant size (hosted / local): up to 4B 150 / 40 output tokens per second,
up to 8B 100 / 25, larger 60 / 12; prefill 20,000 / 12,000 / 6,000 tokens per second hosted and
a tenth of that locally; time to first token 0.3 s hosted, 0.05 s local; failure rate 1% hosted,
0.2% local; a failed attempt answers after 0.3 s. A deployment's own `tokens_per_second` and
`ttft_s` (what `starcoder-router doctor --write` measured) replace the defaults for its output
speed and time to first token. Every latency is multiplied by a log-normal jitter (sigma 0.25).

Output lengths, when a line does not say, are log-normal (sigma 0.8) around a median of 24
tokens for fim, 64 for completion, 48 for structured and 160 for chat, at least 1 and at most
`max_tokens`.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Mapping
from typing import Any

from pydantic import Field

from .._errors import ConfigError
from .._routing.catalog import Catalog, Deployment
from .._validation import FrozenModel, read_toml, validate_config
from .names import SCENARIO_NAMES

__all__ = [
    "SCENARIO_NAMES",
    "DeploymentBehaviour",
    "SimulationSettings",
    "default_behaviour",
    "draw_output_tokens",
    "load_settings",
]

_OUTPUT_MEDIAN = {"fim": 24, "completion": 64, "structured": 48, "chat": 160}
_OUTPUT_SIGMA = 0.8
_JITTER_SIGMA = 0.25
_FAILED_ANSWER_S = 0.3


class DeploymentBehaviour(FrozenModel):
    """One deployment's simulated speed and reliability."""

    ttft_s: float = Field(ge=0)
    prefill_tokens_per_s: float = Field(gt=0)
    tokens_per_s: float = Field(gt=0)
    failure_rate: float = Field(default=0.0, ge=0, le=1)
    outages: tuple[tuple[float, float], ...] = ()

    def failing_at(self, t: float) -> bool:
        return bool(self.outages) and any(start <= t < end for start, end in self.outages)

    def latency(self, prompt_tokens: int, output_tokens: int, rng: random.Random) -> float:
        base = self.ttft_s + prompt_tokens / self.prefill_tokens_per_s \
            + output_tokens / self.tokens_per_s
        return base * math.exp(rng.gauss(0.0, _JITTER_SIGMA))


class SimulationSettings(FrozenModel):
    """The `[simulate]` section of a router config."""

    seed: int = 0
    deployments: dict[str, DeploymentBehaviour] = Field(default_factory=dict)
    failed_answer_s: float = Field(default=_FAILED_ANSWER_S, ge=0)
    # The share of an autocomplete session's requests that type through the suggestion before
    # them, when a line does not say (`accepts_previous`): about the share of suggestions users
    # accept (about 30% for Copilot: Ziegler et al., "Productivity assessment of neural code
    # completion", MAPS 2022).
    accept_rate: float = Field(default=0.3, ge=0, le=1)

    def behaviour(self, dep: Deployment, catalog: Catalog) -> DeploymentBehaviour:
        return self.deployments.get(dep.name) or default_behaviour(dep, catalog)


def default_behaviour(dep: Deployment, catalog: Catalog) -> DeploymentBehaviour:
    """The documented defaults for `dep`, by its variant's size and whether it is local."""
    params = catalog.variant(dep.variant).parameters
    if params <= 4e9:
        hosted, local, prefill = 150.0, 40.0, 20000.0
    elif params <= 8e9:
        hosted, local, prefill = 100.0, 25.0, 12000.0
    else:
        hosted, local, prefill = 60.0, 12.0, 6000.0
    if dep.is_local:
        return DeploymentBehaviour(ttft_s=0.05 if dep.ttft_s is None else dep.ttft_s,
                                   prefill_tokens_per_s=prefill / 10,
                                   tokens_per_s=dep.tokens_per_second or local,
                                   failure_rate=0.002)
    return DeploymentBehaviour(ttft_s=0.3 if dep.ttft_s is None else dep.ttft_s,
                               prefill_tokens_per_s=prefill,
                               tokens_per_s=dep.tokens_per_second or hosted, failure_rate=0.01)


def draw_output_tokens(kind: str, max_tokens: int, rng: random.Random) -> int:
    """How many tokens a request of `kind` writes, drawn from the documented distribution."""
    median = _OUTPUT_MEDIAN.get(kind, 64)
    n = round(median * math.exp(rng.gauss(0.0, _OUTPUT_SIGMA)))
    return max(1, min(max_tokens, n))


def load_settings(path: str | os.PathLike[str] | None) -> SimulationSettings:
    """The `[simulate]` section of the config file at `path` (defaults without one)."""
    if path is None:
        return SimulationSettings()
    source = os.fspath(path)
    raw: Any = read_toml(source).get("simulate", {})
    if not isinstance(raw, Mapping):
        raise ConfigError("must be a table", source=source, field="simulate")
    return validate_config(SimulationSettings, raw, source=source, prefix="simulate")

