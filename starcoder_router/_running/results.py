"""What the router returns: completions, stream chunks, usage and the record of every attempt."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from .._providers.call import FinishReason
from .._routing.cost import nano_to_usd

if TYPE_CHECKING:
    from .._errors import ProviderError
    from .._routing.catalog import Deployment
    from .._routing.decision import RoutingDecision
    from .._routing.fit import TrimReport

__all__ = ["Attempt", "Completion", "FinishReason", "StreamChunk", "Usage"]

AttemptOutcome = Literal["ok", "error", "cancelled", "interrupted", "lost"]


class Usage(NamedTuple):
    """Token usage of one call. `source` is "provider" when the provider reported it, "counted"
    when we counted it ourselves (the provider omitted it)."""

    prompt_tokens: int
    completion_tokens: int
    source: Literal["provider", "counted"] = "provider"

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Attempt(NamedTuple):
    """One try of one deployment: how it went, how long it took and what it cost.

    `outcome` is "ok"; "error" (failed before output); "interrupted" (broke off after output);
    "cancelled" (the caller stopped reading); or "lost": a hedge leg cancelled because the
    other leg answered first, costed (prompt and any output) and booked as cancelled."""

    deployment: str
    outcome: AttemptOutcome
    latency_s: float
    error: ProviderError | None = None
    ttft_s: float | None = None
    cost_nano: int = 0
    usage: Usage | None = None
    retry: int = 0

    @property
    def cost_usd(self) -> float:
        return nano_to_usd(self.cost_nano)


@dataclass(frozen=True, repr=False)
class Completion:
    """A finished completion, costed.

    `mode` is the autocomplete mode that shaped the text (`auto` resolved), None without one.
    `served_from` says where the text came from: a call `"upstream"`, or, at no cost, an
    earlier completion the user typed through (`"reuse"`) or the exact-repeat cache (`"cache"`);
    those keep the earlier answer's deployment and routing decision (without its prompt text).
    `cost_usd` is computed from the provider's reported usage and the deployment's prices (or
    our own count when the provider omitted usage). `attempts` lists every try, including
    failures that preceded this answer; `total_cost_usd` adds their cost too.
    """

    text: str
    finish_reason: FinishReason
    usage: Usage
    cost_nano: int
    deployment: Deployment
    decision: RoutingDecision
    attempts: tuple[Attempt, ...]
    latency_s: float
    ttft_s: float | None = None
    request_id: str | None = None
    model: str | None = None
    trimmed: TrimReport | None = None
    warnings: tuple[str, ...] = ()
    raw_finish_reason: str | None = None
    mode: Literal["line", "block"] | None = None
    served_from: Literal["upstream", "reuse", "cache"] = "upstream"

    @property
    def cost_usd(self) -> float:
        return nano_to_usd(self.cost_nano)

    @property
    def counts_estimated(self) -> bool:
        """True when the router estimated the prompt's token count to route it (no tokenizer);
        `usage` is still what the provider reported, or our count when it reported none."""
        return self.decision.counts_estimated

    @property
    def total_cost_usd(self) -> float:
        """This answer's cost plus that of any earlier attempt that was billed."""
        return nano_to_usd(sum(a.cost_nano for a in self.attempts))

    def json(self) -> Any:
        """The text parsed as JSON (for structured-output requests)."""
        return json.loads(self.text)

    def __repr__(self) -> str:
        # One line for logs and the REPL; the full routing decision stays on `.decision`.
        text = self.text if len(self.text) <= 60 else self.text[:57] + "..."
        return (f"Completion(text={text!r}, deployment={self.deployment.name!r}, "
                f"finish_reason={self.finish_reason!r}, tokens={self.usage.prompt_tokens}+"
                f"{self.usage.completion_tokens}, cost_usd={self.cost_usd:.8f}, "
                f"attempts={len(self.attempts)}, latency_s={self.latency_s:.3f})")


@dataclass(slots=True)
class StreamChunk:
    """A piece of streamed text. The last chunk of a stream carries `finish_reason`; the stream's
    `completion` (after iteration) has the usage and cost."""

    text: str
    index: int
    finish_reason: FinishReason | None = None
