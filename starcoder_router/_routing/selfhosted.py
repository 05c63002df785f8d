"""What a token costs on a machine paid by the hour: the effective price of a self-hosted
deployment that states `usd_per_hour`.

    price per million tokens = usd_per_hour / 3600 / tokens_per_second * 1,000,000

`tokens_per_second` counts prompt and output tokens per second of busy time, as the router
observes them (`throughput.ThroughputMeter`). Every token, read or written, is charged the same
share of the hour: what a request costs follows the traffic mix the machine really serves. Idle
time is charged to nobody: a machine busy half the day costs twice the shown price per token.

Before any observation the price rests on a prior, shown as such:

* the deployment's `tokens_per_second` when set (`starcoder-router doctor --write` measures
  it), else
* 400 tokens/s divided by the variant's size in billions of parameters (133 for a 3B model),
  the decode-speed guess the router's latency prior uses too.

Both are decode speeds, and a server reads prompt tokens many times faster than it writes, so
the prior overstates what prompt-heavy traffic costs: it leans towards hosted deployments until
the router has seen the machine work. The prior counts as `PRIOR_REQUESTS` observed requests:
the seconds per token (what the price is proportional to) are the prior's and the observed ones
weighted by that count and the (decayed) number of requests observed. So observations take over
smoothly, the estimate always lies between the prior and the observed figure, and it tends to
the observed figure as requests accumulate.

Example::

    price = self_hosted_price(dep, variant, meter.observed(dep.name))
    price.usd_per_mtok, price.basis   # 2.5, "observed over 40 requests / 12.0 s busy"
"""

from __future__ import annotations

from typing import NamedTuple

from .catalog import Deployment, Variant
from .cost import token_cost_nano
from .throughput import Observed

__all__ = ["MIN_TOKENS_PER_S", "PRIOR_REQUESTS", "SelfHostedPrice", "prior_tokens_per_second",
           "self_hosted_price"]

# The prior weighs as much as this many observed requests.
PRIOR_REQUESTS = 4.0
# Decode tokens/s of a 1B-parameter model; bigger models are proportionally slower.
_PRIOR_TOKENS_PER_S_PER_BILLION = 400.0
# A floor that keeps a price finite when a machine was busy and moved no tokens (only failures).
MIN_TOKENS_PER_S = 0.01


class SelfHostedPrice(NamedTuple):
    """A self-hosted deployment's effective price and what it rests on: the prior alone, or
    the prior and what was observed (`seen`). The words for `explain()` are made only when
    asked for, so pricing stays cheap on every routing decision."""

    usd_per_hour: float
    tokens_per_s: float
    prior_tps: float
    prior_configured: bool
    billions: float | None = None
    seen: Observed | None = None

    @property
    def observed(self) -> bool:
        return self.seen is not None

    @property
    def usd_per_mtok(self) -> float:
        return self.usd_per_hour / 3600 / self.tokens_per_s * 1_000_000

    @property
    def basis(self) -> str:
        """Where the price came from: `prior: ...` or `observed over N requests / T s busy`."""
        seen = self.seen
        if seen is not None:
            plural = "s" if seen.requests != 1 else ""
            return f"observed over {seen.requests} request{plural} / {seen.busy_s:.1f} s busy"
        return f"prior: {_prior_words(self)}; no requests observed yet"

    def cost_nano(self, tokens: int) -> int:
        """`tokens` (prompt and output alike) at this price, in nano-dollars."""
        return token_cost_nano(tokens, self.usd_per_mtok)

    def describe(self) -> str:
        return (f"${self.usd_per_hour:g}/h at {self.tokens_per_s:,.1f} tokens/s = "
                f"${self.usd_per_mtok:.4f} per million tokens ({self.basis})")


def _prior_words(price: SelfHostedPrice) -> str:
    if price.prior_configured:
        return f"tokens_per_second = {price.prior_tps:g} as configured"
    size = (f"a {price.billions:.3g}B model" if price.billions is not None
            else "a model of unknown size")
    return f"{price.prior_tps:.1f} tokens/s, the default for {size}"


def _prior(dep: Deployment, variant: Variant | None, usd_per_hour: float) -> SelfHostedPrice:
    """The price on the prior alone."""
    if dep.tokens_per_second:
        tps = dep.tokens_per_second
        return SelfHostedPrice(usd_per_hour, max(tps, MIN_TOKENS_PER_S), tps, True)
    billions = max((variant.parameters if variant is not None else 15e9) / 1e9, 1.0)
    tps = _PRIOR_TOKENS_PER_S_PER_BILLION / billions
    return SelfHostedPrice(usd_per_hour, max(tps, MIN_TOKENS_PER_S), tps, False,
                           billions if variant is not None else None)


def prior_tokens_per_second(dep: Deployment, variant: Variant | None) -> tuple[float, str]:
    """The throughput assumed before observations, and how it was chosen."""
    price = _prior(dep, variant, dep.usd_per_hour or 0.0)
    return price.prior_tps, _prior_words(price)


def self_hosted_price(dep: Deployment, variant: Variant | None,
                      observed: Observed | None) -> SelfHostedPrice | None:
    """The effective price of `dep`, or None unless it is local and states `usd_per_hour`."""
    if not dep.is_local or dep.usd_per_hour is None:
        return None
    prior = _prior(dep, variant, dep.usd_per_hour)
    if observed is None or observed.requests == 0:
        return prior
    # Blend seconds per token, not tokens per second: the price is linear in the former, and a
    # very fast prior then cannot outweigh what a slow machine is seen to do.
    s_prior = 1.0 / prior.prior_tps
    if observed.tokens > 0 or observed.busy_s > 0:
        s_seen = observed.busy_s / max(observed.tokens, 1.0)
    else:
        s_seen = s_prior
    w = PRIOR_REQUESTS / (PRIOR_REQUESTS + observed.weight)
    tps = 1.0 / (w * s_prior + (1 - w) * s_seen)
    return prior._replace(tokens_per_s=max(tps, MIN_TOKENS_PER_S), seen=observed)
