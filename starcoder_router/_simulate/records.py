"""The simulator's records: a scenario to run, a request made ready for it, and what happened."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple

from .._routing.catalog import Catalog
from .._routing.decision import Candidate
from .._routing.policy import CostPolicy
from .._routing.request import CompletionRequest

if TYPE_CHECKING:
    from .tally import Tally

__all__ = ["Prepared", "Ranker", "RequestOutcome", "Scenario", "ScenarioRun"]

Ranker = Callable[[Sequence[Candidate]], list[Candidate]]


class Scenario(NamedTuple):
    """One policy to simulate: the deployments it may use, the policy, whether FIM requests
    may be trimmed, and optionally a ranking that replaces the policy's."""

    name: str
    description: str
    catalog: Catalog
    policy: CostPolicy
    allow_trim: bool = True
    rank: Ranker | None = None


class Prepared(NamedTuple):
    """A workload line made ready once for every scenario. `trimmable`: a synthetic
    fill-in-the-middle prompt too long for some window (see `SimCore.start_prepared`).
    `session`, `accepts` and `repeat_key` are read only with the autocomplete features on
    (`sessions.py`): the session, whether the user typed through its previous suggestion, and
    the digest of a greedy request's prompt and parameters (None when it samples)."""

    arrival: float
    request: CompletionRequest
    kind: str
    tenant: str
    prompt_tokens: int
    output_tokens: int
    trimmable: bool = False
    session: str | None = None
    accepts: bool = False
    repeat_key: bytes | None = None


class RequestOutcome(NamedTuple):
    """What happened to one request under one scenario."""

    number: int
    arrival: float
    finished: float
    tenant: str
    kind: str
    prompt_tokens: int
    deployment: str | None
    cost_nano: int
    attempts: int
    trimmed_tokens: int
    refused: str | None
    quality: float | None
    budgets: tuple[str, ...] = ()

    @property
    def latency(self) -> float:
        return self.finished - self.arrival


class ScenarioRun(NamedTuple):
    """One scenario's outcomes (in workload order; empty unless they were asked to be kept),
    when each budget period first refused a reservation (seconds after the start), each budget
    period's limit, and the numbers gathered as it ran (see `tally`)."""

    outcomes: list[RequestOutcome]
    exhausted: dict[str, float]
    limits_nano: dict[str, int]
    tally: Tally | None = None

    def numbers(self) -> Tally:
        """The run's tally; for a run made from a list of outcomes, tallied from it."""
        if self.tally is not None:
            return self.tally
        from .tally import tally_of_outcomes

        return tally_of_outcomes(self.outcomes, self.limits_nano)
