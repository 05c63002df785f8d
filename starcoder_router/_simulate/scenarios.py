"""The policies `simulate` compares: the configured one and four baselines.

* `configured`: the config's policy, as the router runs it.
* `largest`: every request to the largest variant (by parameters, base models; instruct
  variants of the same size serve chat).
* `7b`: every request to StarCoder2-7B.
* `cheapest-summed`: the cheapest deployment by input plus output price per token, as general
  routers rank, with no quality floor.
* `no-trim`: the configured policy, but fill-in-the-middle requests are never trimmed.

The baselines keep the configured budgets, so budget exhaustion shows in each of them; the two
single-variant ones drop the quality floor and the per-request cost cap, which would otherwise
refuse what they exist to send.
"""

from __future__ import annotations

from collections.abc import Sequence

from .._errors import ConfigError
from .._routing.catalog import Catalog, Deployment
from .._routing.decision import Candidate
from .._routing.policy import CostPolicy
from .model import SCENARIO_NAMES
from .records import Scenario

__all__ = ["SCENARIO_NAMES", "build_scenarios", "summed_price"]

def summed_price(dep: Deployment) -> float:
    """Input plus output dollars per million tokens: how general routers rank by price."""
    return dep.input_usd_per_mtok + dep.output_usd_per_mtok


def _by_summed_price(cands: Sequence[Candidate]) -> list[Candidate]:
    return sorted(cands, key=lambda c: (summed_price(c.deployment), c.deployment.name))


def _only_variants(catalog: Catalog, variants: set[str]) -> Catalog:
    drop = [d.name for d in catalog.deployments if d.variant not in variants]
    return catalog.without(*drop)


def build_scenarios(catalog: Catalog, policy: CostPolicy,
                    names: Sequence[str] = SCENARIO_NAMES) -> list[Scenario]:
    """The scenarios called `names`, in that order."""
    unknown = [n for n in names if n not in SCENARIO_NAMES]
    if unknown:
        raise ConfigError(f"unknown policy {unknown[0]!r}; choose from "
                          f"{', '.join(SCENARIO_NAMES)}")
    open_policy = policy.model_copy(update={"min_quality": None,
                                            "max_cost_per_request_usd": None})
    served = {d.variant for d in catalog.deployments}
    sizes = {v: catalog.variant(v).parameters for v in served}
    largest = max(sizes.values()) if sizes else 0
    big = {v for v, n in sizes.items() if n == largest}
    seven = {v for v in sizes if v.endswith("-7b")}
    made = {
        "configured": lambda: Scenario("configured", "the configured policy", catalog, policy),
        "largest": lambda: Scenario(
            "largest", "everything to the largest variant", _only_variants(catalog, big),
            open_policy),
        "7b": lambda: Scenario("7b", "everything to StarCoder2-7B",
                               _only_variants(catalog, seven), open_policy),
        "cheapest-summed": lambda: Scenario(
            "cheapest-summed", "cheapest by summed per-token price", catalog,
            policy.model_copy(update={"min_quality": None}), rank=_by_summed_price),
        "no-trim": lambda: Scenario("no-trim", "the configured policy without trimming",
                                    catalog, policy, allow_trim=False),
    }
    return [made[n]() for n in names]
