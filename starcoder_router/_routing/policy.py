"""Cost policies: what the router optimises, the limits it respects, and budgets.

Example::

    CostPolicy(
        objective="cheapest",
        max_cost_per_request_usd=0.002,
        min_quality=("humaneval", 35),
        budgets=[Budget(limit_usd=5, period="day"), Budget(limit_usd=1, period="day",
                                                            scope="tenant")],
        on_budget_exhausted="downgrade",
        soft_limit=0.8,
    )
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, StrictBool, field_validator, model_validator

from .._errors import ConfigError
from .._validation import FrozenModel
from .catalog import Catalog, normalize_benchmark

__all__ = ["Budget", "CostPolicy", "Objective", "Period", "QualityFloor", "Scope",
           "check_benchmarks"]

Objective = Literal["cheapest", "quality", "latency", "balanced"]
Period = Literal["hour", "day", "week", "month", "total"]
Scope = Literal["global", "tenant", "tag"]


class QualityFloor(FrozenModel):
    """Only deployments whose variant scores at least `score` on `benchmark`."""

    benchmark: str
    score: float

    @model_validator(mode="before")
    @classmethod
    def _from_pair(cls, data: Any) -> Any:
        if isinstance(data, (tuple, list)) and len(data) == 2:
            return {"benchmark": data[0], "score": data[1]}
        return data

    @field_validator("benchmark")
    @classmethod
    def _normalize(cls, value: str) -> str:
        return normalize_benchmark(value)


class Budget(FrozenModel):
    """A spending limit over a calendar period.

    `scope="global"` counts every request; `"tenant"` counts each tenant separately (or only
    `tenant` when it is set), and requests without a tenant together in one bucket of their own
    (the budget's name: `tenant:*/day`) unless the policy has `require_tenant=True`; `"tag"`
    counts requests carrying `tag`. Periods are calendar periods in `timezone` (UTC by default):
    `hour`, `day`, `week` (from Monday), `month`, or `total`.
    """

    limit_usd: float = Field(gt=0)
    period: Period = "day"
    scope: Scope = "global"
    name: str = ""
    tenant: str | None = None
    tag: str | None = None
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @field_validator("tenant", "tag")
    @classmethod
    def _named(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or value == "*"):
            raise ValueError("must be a non-blank name other than '*'")
        return value

    @model_validator(mode="after")
    def _check(self) -> Budget:
        if self.scope == "tag" and not self.tag:
            raise ValueError("a budget with scope 'tag' needs a tag")
        if self.scope != "tenant" and self.tenant is not None:
            raise ValueError("tenant is only allowed with scope 'tenant'")
        if self.scope != "tag" and self.tag is not None:
            raise ValueError("tag is only allowed with scope 'tag'")
        if not self.name:
            target = self.tenant or self.tag or ("*" if self.scope == "tenant" else "")
            label = f"{self.scope}:{target}" if target else self.scope
            object.__setattr__(self, "name", f"{label}/{self.period}")
        return self


class CostPolicy(FrozenModel):
    """How the router chooses among eligible deployments, and the limits it never crosses.

    * `objective`: `cheapest` (default; by expected cost), `quality` (best score on
      `quality_benchmark`), `latency` (lowest expected latency), or `balanced`.
    * `max_cost_per_request_usd`: drop deployments whose worst-case cost is higher.
    * `min_quality`: a `(benchmark, score)` floor.
    * `allow_providers` / `deny_providers` / `prefer_providers`, `prefer_local`.
    * `budgets`, `on_budget_exhausted` (`reject`, `downgrade` or `local_only`) and `soft_limit`
      (past that share of any budget the objective becomes `cheapest`).
    * `expected_output_tokens`: what the expected cost assumes the model writes (default:
      `max_tokens`, the worst case).
    * `require_tenant`: refuse requests without a `tenant` (`InvalidRequestError`) instead of
      counting them in the no-tenant bucket of each tenant budget.
    * `count_local_spend`: book what local deployments that state `usd_per_hour` cost (their
      effective price per token, shown by `RoutingDecision.explain()`) against budgets and in
      the ledger, and hold it while they run. Off by default: local requests cost budgets
      nothing. `cheapest` ranks by the effective price either way.
    """

    objective: Objective = "cheapest"
    max_cost_per_request_usd: float | None = Field(default=None, gt=0)
    min_quality: QualityFloor | None = None
    quality_benchmark: str = "humaneval"
    allow_providers: frozenset[str] | None = None
    deny_providers: frozenset[str] = frozenset()
    prefer_providers: tuple[str, ...] = ()
    prefer_local: bool = False
    budgets: tuple[Budget, ...] = ()
    on_budget_exhausted: Literal["reject", "downgrade", "local_only"] = "reject"
    soft_limit: float | None = Field(default=None, gt=0, le=1)
    expected_output_tokens: int | None = Field(default=None, gt=0)
    require_tenant: bool = False
    count_local_spend: StrictBool = False

    @field_validator("quality_benchmark")
    @classmethod
    def _normalize(cls, value: str) -> str:
        return normalize_benchmark(value)

    @model_validator(mode="after")
    def _check(self) -> CostPolicy:
        if self.allow_providers is not None and self.allow_providers & self.deny_providers:
            both = ", ".join(sorted(self.allow_providers & self.deny_providers))
            raise ValueError(f"providers both allowed and denied: {both}")
        names = [b.name for b in self.budgets]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"budget names must be unique; repeated: {', '.join(dupes)}")
        return self

    @property
    def ranking_benchmark(self) -> str:
        """The benchmark the `quality` and `balanced` objectives rank by."""
        return self.min_quality.benchmark if self.min_quality else self.quality_benchmark


def check_benchmarks(policy: CostPolicy, catalog: Catalog, *, source: str | None = None) -> None:
    """Refuse a policy naming a benchmark no variant of `catalog` has a score for: a typo such as
    `"humanevl"` would otherwise make every deployment ineligible, and only at route time."""
    wanted = [("min_quality", policy.min_quality.benchmark)] if policy.min_quality else []
    if "quality_benchmark" in policy.model_fields_set:
        wanted.append(("quality_benchmark", policy.quality_benchmark))
    known = sorted({name for v in catalog.variants.values() for name in v.scores})
    for field, benchmark in wanted:
        if benchmark not in known:
            problem = (f"unknown benchmark {benchmark!r}; the catalog has scores for "
                       f"{', '.join(known) or 'none'}")
            error = ConfigError(problem if source else f"CostPolicy({field}=...): {problem}",
                                source=source, field=f"policy.{field}")
            error.detail = problem
            raise error
