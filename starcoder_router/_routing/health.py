"""Deployment health: circuit breakers, latency averages and learned context windows.

State lives in one `HealthTracker` per router (never module-level), updated after each attempt.
Times come from the router's clock. A circuit opens after `failure_threshold` consecutive
failures, or when the failure rate over `window_s` passes `failure_rate` (with at least
`min_requests` calls; the window keeps at most `window_max_requests` outcomes, so memory and
the work per outcome stay bounded however busy the deployment); after `cooldown_s` it lets
one probe through (half-open); a success closes it, a failure opens it again.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Literal

from pydantic import Field

from .._validation import FrozenModel
from .decision import DeploymentHealth

__all__ = ["HealthPolicy", "HealthTracker"]

CircuitState = Literal["closed", "open", "half_open"]


class HealthPolicy(FrozenModel):
    """When to stop sending to a failing deployment and when to try it again."""

    failure_threshold: int = Field(default=5, ge=1)
    failure_rate: float = Field(default=0.5, gt=0, le=1)
    min_requests: int = Field(default=10, ge=1)
    window_s: float = Field(default=60.0, gt=0)
    window_max_requests: int = Field(default=1000, ge=1)
    cooldown_s: float = Field(default=15.0, ge=0)
    # The longest a request waits for a cooling deployment to take a probe. Past it (or past
    # the request's deadline) the router moves on to the next deployment at once, and when
    # every candidate is cooling it raises `NoRouteError` saying which, why and until when.
    max_wait_s: float = Field(default=1.0, ge=0)
    not_found_cooldown_s: float = Field(default=600.0, ge=0)
    ewma_alpha: float = Field(default=0.2, gt=0, le=1)


class _State:
    """One deployment's record (mutable, guarded by the tracker's lock)."""

    __slots__ = ("consecutive", "failures", "latency", "open_until", "outcomes", "probing",
                 "reason", "ttft", "ttfts")

    def __init__(self) -> None:
        self.consecutive = 0
        self.outcomes: deque[tuple[float, bool]] = deque()
        self.failures = 0  # among `outcomes`
        self.open_until: float | None = None
        self.probing = False
        self.latency: float | None = None
        self.ttft: float | None = None
        self.ttfts: deque[float] = deque(maxlen=200)
        self.reason = ""


class HealthTracker:
    """Per-deployment health for one router. Thread-safe; cheap on the success path."""

    def __init__(self, policy: HealthPolicy | None = None):
        self.policy = policy or HealthPolicy()
        self._states: dict[str, _State] = {}
        self._windows: dict[str, int] = {}
        self._lock = threading.Lock()
        self.version = 0  # bumps whenever learned windows change

    def _state(self, name: str) -> _State:
        st = self._states.get(name)
        if st is None:
            st = self._states[name] = _State()
        return st

    def record_success(self, name: str, now: float, latency: float,
                       ttft: float | None = None) -> None:
        a = self.policy.ewma_alpha
        with self._lock:
            st = self._state(name)
            st.consecutive = 0
            st.open_until = None
            st.probing = False
            st.latency = latency if st.latency is None else a * latency + (1 - a) * st.latency
            if ttft is not None:
                st.ttft = ttft if st.ttft is None else a * ttft + (1 - a) * st.ttft
                st.ttfts.append(ttft)
            self._push(st, now, True)

    def record_failure(self, name: str, now: float, reason: str) -> None:
        p = self.policy
        with self._lock:
            st = self._state(name)
            st.consecutive += 1
            self._push(st, now, False)
            failures = st.failures
            rate_trip = len(st.outcomes) >= p.min_requests and \
                failures / len(st.outcomes) >= p.failure_rate
            if st.probing or st.consecutive >= p.failure_threshold or rate_trip:
                st.open_until = now + p.cooldown_s
                if st.probing:
                    st.reason = f"its probe failed ({reason})"
                elif st.consecutive >= p.failure_threshold:
                    st.reason = (f"{st.consecutive} failure{'s' if st.consecutive > 1 else ''} "
                                 f"in a row, the last {reason}")
                else:
                    st.reason = (f"{failures} of its last {len(st.outcomes)} calls failed "
                                 f"within {p.window_s:g} s, the last {reason}")
            st.probing = False

    def disable(self, name: str, until: float, reason: str) -> None:
        """Take a deployment out until `until` (e.g. its model was retired: 404)."""
        with self._lock:
            st = self._state(name)
            st.open_until = until
            st.probing = False
            st.reason = reason

    def _push(self, st: _State, now: float, ok: bool) -> None:
        st.outcomes.append((now, ok))
        st.failures += not ok
        horizon = now - self.policy.window_s
        limit = self.policy.window_max_requests
        while st.outcomes and (st.outcomes[0][0] < horizon or len(st.outcomes) > limit):
            st.failures -= not st.outcomes.popleft()[1]

    def state(self, name: str, now: float) -> CircuitState:
        st = self._states.get(name)
        if st is None or st.open_until is None:
            return "closed"
        return "open" if now < st.open_until else "half_open"

    def try_acquire(self, name: str, now: float) -> bool:
        """May a request go to `name` now? A half-open circuit admits one probe at a time."""
        st = self._states.get(name)
        if st is None or st.open_until is None:
            return True
        with self._lock:
            if st.open_until is None:
                return True
            if now < st.open_until or st.probing:
                return False
            st.probing = True
            return True

    def release_probe(self, name: str) -> None:
        """A probe ended without a verdict (e.g. cancelled): let another through."""
        st = self._states.get(name)
        if st is not None:
            st.probing = False

    def view(self, now: float) -> dict[str, DeploymentHealth]:
        """What the routing decision needs: latencies, and who is cooling down until when."""
        out: dict[str, DeploymentHealth] = {}
        for name, st in self._states.items():
            cooling = None
            if st.open_until is not None and (now < st.open_until or st.probing):
                cooling = st.open_until if now < st.open_until else now + 0.05
            out[name] = DeploymentHealth(st.latency, st.ttft, cooling, st.reason)
        return out

    def ttft_quantile(self, name: str, q: float, min_samples: int) -> float | None:
        """The `q` quantile of recent times to first token, once there are enough samples."""
        st = self._states.get(name)
        if st is None or len(st.ttfts) < min_samples:
            return None
        ordered = sorted(st.ttfts)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def learn_window(self, name: str, window: int) -> bool:
        """Remember that `name` serves a smaller window than configured. True if it changed."""
        with self._lock:
            if self._windows.get(name, 1 << 30) <= window:
                return False
            self._windows[name] = window
            self.version += 1
            return True

    def windows(self) -> dict[str, int]:
        return dict(self._windows)
