"""When to try a deployment again, and how long to wait first.

The waits are tenacity strategies (exponential backoff with jitter), used as the pure functions
they are; the sync and async routers each run their own short loop around them, so the success
path pays nothing for retry machinery. A provider's `Retry-After` wins over the backoff when it is
longer.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

from pydantic import Field

from .._errors import ProviderError
from .._validation import FrozenModel

__all__ = ["HedgePolicy", "RetryPolicy", "retry_wait"]


class RetryPolicy(FrozenModel):
    """Retries per deployment for retryable errors (429, 5xx, timeouts, connection errors,
    malformed answers), with exponential backoff and jitter, all inside the request deadline.

    `max_retries` counts tries after the first on one deployment; `max_attempts` caps tries
    across all deployments of one request; `timeout_s` is the default overall deadline.
    """

    max_retries: int = Field(default=2, ge=0)
    max_attempts: int = Field(default=8, ge=1)
    backoff_initial_s: float = Field(default=0.5, ge=0)
    backoff_max_s: float = Field(default=8.0, ge=0)
    jitter_s: float = Field(default=0.25, ge=0)
    max_retry_after_s: float = Field(default=60.0, ge=0)
    timeout_s: float = Field(default=60.0, gt=0)


class HedgePolicy(FrozenModel):
    """Hedged requests (off unless a router is given one): when the chosen deployment has not
    produced its first token within a threshold, start the next candidate too, keep whichever
    answers first and cancel the other. Both are costed: the loser pays for its prompt and
    whatever it streamed before it was cancelled.

    The threshold is `after_s` when set, else the chosen deployment's observed `quantile` of
    time to first token (once `min_samples` are known), else `default_after_s`. Requests hedge
    when they ask to (`hedge=True`), or by default when the policy's objective is `latency`.
    Hedged legs stream internally (to see the first token), so both candidates must support
    streaming.
    """

    after_s: float | None = Field(default=None, gt=0)
    quantile: float = Field(default=0.95, gt=0, lt=1)
    min_samples: int = Field(default=20, ge=1)
    default_after_s: float = Field(default=0.5, gt=0)


class _RetryState(NamedTuple):
    # tenacity's wait strategies read only `attempt_number` from their state argument.
    attempt_number: int


@functools.lru_cache(maxsize=16)
def _strategy(initial: float, maximum: float, jitter: float) -> Any:
    import tenacity  # imported on the first retry only: it is not needed on the success path

    backoff = tenacity.wait_exponential(multiplier=initial, max=maximum, exp_base=2)
    return backoff + tenacity.wait_random(0, jitter) if jitter else backoff


def retry_wait(policy: RetryPolicy, retry_no: int, error: ProviderError) -> float | None:
    """Seconds to wait before retry number `retry_no` (1-based) on the same deployment, or None
    when the error or the policy says not to retry there."""
    if not error.retryable or retry_no > policy.max_retries:
        return None
    wait = float(_strategy(policy.backoff_initial_s, policy.backoff_max_s,
                           policy.jitter_s)(_RetryState(retry_no)))
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None:
        if retry_after > policy.max_retry_after_s:
            return None
        wait = max(wait, float(retry_after))
    return wait
