"""The adapter every simulated deployment speaks: no HTTP, just the facts the simulator needs.

The router's request flow builds a request with the deployment's adapter, yields `Send`, and
reads the reply with the same adapter. In a simulation the adapter is this one: `build` names
the deployment and the exact prompt size in the request's headers, the simulator answers with
the output size (or an error status), and `parse` turns that into the `ProviderResult` a real
adapter would have produced from a real server's reply.
"""

from __future__ import annotations

from .._errors import ProviderError, ProviderServerError, RateLimitError
from .._providers.base import Provider
from .._providers.call import Call, ProviderResult
from .._routing.tokens import TokenCounter
from .._transports.base import WireRequest, WireResponse

__all__ = ["DEPLOYMENT", "PROMPT_TOKENS", "SimulatedProvider", "answer"]

DEPLOYMENT = "x-simulated-deployment"
PROMPT_TOKENS = "x-simulated-prompt-tokens"


class SimulatedProvider(Provider):
    """Stands in for every provider's adapter in a simulation."""

    name = "simulated"

    def __init__(self, counter: TokenCounter):
        self._counter = counter

    def build(self, call: Call) -> WireRequest:
        tokens = call.prompt_tokens
        if call.prompt_count_kind != "exact" or tokens is None:
            tokens = self._counter.count(call.rendered.prompt)
        return WireRequest("POST", f"simulated://{call.deployment.name}",
                           {DEPLOYMENT: call.deployment.name, PROMPT_TOKENS: str(tokens)})

    def parse(self, call: Call, response: WireResponse) -> ProviderResult:
        prompt, completion = (int(x) for x in response.body.split(b" "))
        fmt = call.request.response_format
        return ProviderResult(
            text="{}" if fmt is not None else "",  # valid for a JSON-object format
            finish_reason="length" if completion >= call.request.max_tokens else "stop",
            prompt_tokens=prompt, completion_tokens=completion,
            request_id=None, model=call.deployment.model)

    def error(self, call: Call, response: WireResponse) -> ProviderError:
        dep = call.deployment
        cls = RateLimitError if response.status == 429 else ProviderServerError
        return cls(f"simulated {response.status}", provider=dep.provider, model=dep.model,
                   deployment=dep.name, status_code=response.status)


def answer(wire: WireRequest, output_tokens: int | None, *, status: int = 200) -> WireResponse:
    """The simulated server's reply to `wire`: `output_tokens` written, or an error `status`."""
    if status != 200 or output_tokens is None:
        return WireResponse(status, {}, b"")
    return WireResponse(200, {}, f"{wire.headers[PROMPT_TOKENS]} {output_tokens}".encode())
