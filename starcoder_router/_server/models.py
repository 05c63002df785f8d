"""Model names a client may send, and what each one means to the router.

* `starcoder2` (or no model): the config's policy as written.
* `starcoder2:cheapest`, `starcoder2:quality`, `starcoder2:fast`, `starcoder2:balanced`: that
  objective.
* a variant id such as `starcoder2-7b` (or Ollama's spelling `starcoder2:7b`): that size only,
  the router still picks the provider; `starcoder2-7b:quality` combines both.

Example::

    >>> resolve_model("starcoder2-7b:fast", variants={"starcoder2-7b"})
    ModelChoice(objective='latency', variant='starcoder2-7b')
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import NamedTuple

from .._routing.policy import Objective

__all__ = ["BASE_NAME", "ModelChoice", "UnknownModelError", "model_names", "resolve_model"]

BASE_NAME = "starcoder2"

_OBJECTIVES: dict[str, Objective] = {
    "cheapest": "cheapest",
    "quality": "quality",
    "fast": "latency",
    "latency": "latency",
    "balanced": "balanced",
}
_LISTED_OBJECTIVES = ("cheapest", "quality", "fast", "balanced")


class UnknownModelError(LookupError):
    """The client named a model the gateway does not offer."""

    def __init__(self, name: str, known: Iterable[str]):
        self.name = name
        listed = ", ".join(known) or "none (no configured deployment can serve now)"
        super().__init__(f"the model {name!r} does not exist; available: {listed}")


class ModelChoice(NamedTuple):
    """What a model name asks for: an objective (None: the policy's) and a variant (None: any)."""

    objective: Objective | None = None
    variant: str | None = None


def resolve_model(name: str | None, *, variants: Collection[str]) -> ModelChoice:
    """The choice a model name stands for; `UnknownModelError` for names we do not serve.

    `variants` are those some deployment can serve now: with none, no name is served."""
    if not variants:
        raise UnknownModelError(name or BASE_NAME, [])
    if not name or name == BASE_NAME:
        return ModelChoice()
    if name.endswith(":latest"):  # Ollama clients add the default tag
        name = name.removesuffix(":latest")
        if name == BASE_NAME:
            return ModelChoice()
    head, sep, tail = name.rpartition(":")
    if sep and tail in _OBJECTIVES:
        if head == BASE_NAME:
            return ModelChoice(_OBJECTIVES[tail], None)
        if head in variants:
            return ModelChoice(_OBJECTIVES[tail], head)
    if name in variants:
        return ModelChoice(None, name)
    if sep and head == BASE_NAME and f"{BASE_NAME}-{tail}" in variants:
        return ModelChoice(None, f"{BASE_NAME}-{tail}")  # Ollama's "starcoder2:7b"
    raise UnknownModelError(name, model_names(variants))


def model_names(variants: Iterable[str]) -> list[str]:
    """Every name the model lists show for the variants that can be served, the virtual ones
    first (none at all when no variant can be served)."""
    served = sorted(set(variants))
    if not served:
        return []
    return [BASE_NAME] + [f"{BASE_NAME}:{o}" for o in _LISTED_OBJECTIVES] + served
