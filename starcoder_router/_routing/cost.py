"""Cost maths, in integer nano-dollars so sums are exact and budgets never drift.

A price of $0.20 per million tokens is 200 nano-dollars per token; one nano-dollar is far below
any price's precision, so rounding each term to a whole nano-dollar loses nothing a cent can see.
"""

from __future__ import annotations

from .catalog import Deployment

__all__ = [
    "NANO_PER_USD",
    "actual_cost_nano",
    "nano_to_usd",
    "token_cost_nano",
    "usd_to_nano",
    "worst_case_nano",
]

NANO_PER_USD = 1_000_000_000


def usd_to_nano(usd: float) -> int:
    return round(usd * NANO_PER_USD)


def nano_to_usd(nano: int) -> float:
    return nano / NANO_PER_USD


def token_cost_nano(tokens: int, usd_per_mtok: float) -> int:
    """`tokens` at `usd_per_mtok` dollars per million, in nano-dollars."""
    return round(tokens * usd_per_mtok * 1000)


def worst_case_nano(dep: Deployment, prompt_tokens: int, max_tokens: int,
                    seconds: float = 0.0) -> int:
    """Prompt tokens at the input price plus all of `max_tokens` at the output price (plus
    `seconds` of the deployment's hourly cost, for hourly-priced hosted hardware)."""
    return actual_cost_nano(dep, prompt_tokens, max_tokens, seconds)


def actual_cost_nano(dep: Deployment, prompt_tokens: int, completion_tokens: int,
                     seconds: float = 0.0) -> int:
    """What a request costs at the deployment's token prices, plus `seconds` of its hourly
    price when it is hosted. A local machine's hourly price is turned into a price per token
    from its observed throughput instead (`selfhosted.py`): timing each request would charge
    the hour once per concurrent request."""
    # `token_cost_nano` twice, written out: every routing decision costs each candidate twice.
    cost = (round(prompt_tokens * dep.input_usd_per_mtok * 1000)
            + round(completion_tokens * dep.output_usd_per_mtok * 1000))
    hourly = dep.usd_per_hour
    if hourly and not dep.is_local:
        cost += round(hourly * seconds / 3600 * NANO_PER_USD)
    return cost
