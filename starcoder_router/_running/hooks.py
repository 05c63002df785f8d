"""Hooks: plain callables the router calls at each step, held per router (no global registry).

Example::

    Router(hooks=Hooks(on_success=[lambda c: metrics.observe(c.cost_usd)]))

A hook that raises is logged and ignored: observability must never fail a request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from .._errors import StarcoderRouterError
    from .._routing.decision import RoutingDecision
    from .results import Attempt, Completion

__all__ = ["CoolingWait", "Hooks"]

logger = logging.getLogger("starcoder_router")


class CoolingWait(NamedTuple):
    """The router is about to wait `seconds` for `deployment`, whose circuit is open (`reason`)
    and lets a probe through in `cooling_s` seconds."""

    deployment: str
    seconds: float
    cooling_s: float
    reason: str


class Hooks(NamedTuple):
    """Callables run on each routing decision, attempt, success and final failure, and before
    each wait for a cooling deployment."""

    on_route: Sequence[Callable[[RoutingDecision], Any]] = ()
    on_attempt: Sequence[Callable[[Attempt], Any]] = ()
    on_success: Sequence[Callable[[Completion], Any]] = ()
    on_failure: Sequence[Callable[[StarcoderRouterError], Any]] = ()
    on_wait: Sequence[Callable[[CoolingWait], Any]] = ()


def run_hooks(hooks: Sequence[Callable[[Any], Any]], value: Any) -> None:
    for hook in hooks:
        try:
            hook(value)
        except Exception:
            logger.exception("hook %r failed; ignored", hook)
