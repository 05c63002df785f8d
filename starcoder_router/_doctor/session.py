"""One deployment's probe requests: built exactly as routing builds them (the adapter's request
body, the endpoint's key and headers), sent on the router's own transport, a 429 waited out once,
and the account of what they cost from the usage the provider reports (refused requests are not
billed).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .._errors import ProviderError, RateLimitError
from .._providers.base import Provider
from .._providers.call import Call, Endpoint, ProviderResult
from .._providers.errormap import UNREADABLE, in_context, unreadable_reply
from .._routing.catalog import Deployment
from .._routing.cost import actual_cost_nano
from .._routing.render import Rendered
from .._routing.request import CompletionRequest, ResponseFormat
from .._routing.tokens import TokenCounter
from .._transports.base import SyncTransport, WireResponse
from .probes import Finding

__all__ = ["REQUEST_TIMEOUT_S", "DeploymentReport", "Reply", "Session", "reported_cost_usd"]

REQUEST_TIMEOUT_S = 30.0  # one probe request; a window-sized prompt on a slow CPU server fits
MAX_RETRY_WAIT_S = 5.0


@dataclass
class Reply:
    """One probe request's outcome: a result or an error, timings, and the raw body."""

    result: ProviderResult | None = None
    error: ProviderError | None = None
    body: bytes = b""
    ttft: float | None = None
    elapsed: float = 0.0
    deltas: int = 0


@dataclass
class DeploymentReport:
    """Everything measured for one deployment."""

    deployment: Deployment
    findings: list[Finding] = field(default_factory=list)
    requests: int = 0
    spent_nano: int = 0
    usage_missing: int = 0  # replies without usage (or cut off), costed at their bound
    interrupted: bool = False  # Ctrl-C ended the run before every probe was done

    def finding(self, probe: str) -> Finding | None:
        return next((f for f in self.findings if f.probe == probe), None)


class Session:
    """Probe requests to one deployment, with the account of what they cost."""

    def __init__(self, dep: Deployment, adapter: Provider, endpoint: Endpoint,
                 transport: SyncTransport, *, counter: TokenCounter | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        self.dep, self.adapter, self.endpoint, self.transport = dep, adapter, endpoint, transport
        self.counter = counter  # with the real tokenizer, usage is checked against its counts
        self.sleep = sleep
        self.report = DeploymentReport(dep)
        self.rate_limits: list[RateLimitError] = []
        self.reported_cost_usd = 0.0
        self.expected_cost_nano = 0  # for the replies that reported a cost
        self.cost_reports = 0

    def send(self, prompt: str, max_tokens: int, *, stop: Sequence[str] = (),
             stream: bool = False, fmt: ResponseFormat | None = None,
             max_stop: int | None = None) -> Reply:
        """One greedy request; a 429 is waited out once (at most `MAX_RETRY_WAIT_S`)."""
        reply = self._send_once(prompt, max_tokens, stop, stream, fmt, max_stop)
        if isinstance(reply.error, RateLimitError):
            self.rate_limits.append(reply.error)
            self.sleep(min(reply.error.retry_after or 1.0, MAX_RETRY_WAIT_S))
            reply = self._send_once(prompt, max_tokens, stop, stream, fmt, max_stop)
            if isinstance(reply.error, RateLimitError):
                self.rate_limits.append(reply.error)
        return reply

    def _call(self, prompt: str, max_tokens: int, stop: Sequence[str], stream: bool,
              fmt: ResponseFormat | None, max_stop: int | None) -> Call:
        dep = self.dep if max_stop is None else self.dep.model_copy(update={"max_stop": max_stop})
        request = CompletionRequest(prompt=prompt, max_tokens=max_tokens, stop=tuple(stop),
                                    stream=stream, temperature=0.0, seed=0,
                                    response_format=fmt, special_tokens="keep")
        # Exactly these stops, none of the prompt format's own: the probes must see what the
        # server does with them.
        endpoint = self.endpoint._replace(timeout=min(self.endpoint.timeout, REQUEST_TIMEOUT_S))
        return Call(dep, request, Rendered("prompt", prompt, tuple(stop)), endpoint)

    def _send_once(self, prompt: str, max_tokens: int, stop: Sequence[str], stream: bool,
                   fmt: ResponseFormat | None, max_stop: int | None) -> Reply:
        call = self._call(prompt, max_tokens, stop, stream, fmt, max_stop)
        self.report.requests += 1
        started = time.monotonic()
        reply = Reply()
        try:
            if stream:
                self._stream(call, reply, started)
            else:
                self._plain(call, reply)
        except ProviderError as exc:
            reply.error = in_context(exc, call)
        except UNREADABLE as exc:
            reply.error = unreadable_reply(exc, call)
        except KeyboardInterrupt:
            # Cut off in flight: the provider may bill it, so it counts at its bound.
            self.report.usage_missing += 1
            self.report.spent_nano += actual_cost_nano(self.dep, *_bound(call))
            raise
        reply.elapsed = time.monotonic() - started
        if reply.result is not None:
            self._account(call, reply)
        return reply

    def _plain(self, call: Call, reply: Reply) -> None:
        wire = self.adapter.build(call)
        ep = call.endpoint
        response = self.transport.send(wire, timeout=ep.timeout, connect_timeout=ep.connect_timeout)
        reply.body = response.body
        if response.status >= 400:
            raise self.adapter.error(call, response)
        reply.result = self.adapter.parse(call, response)

    def _stream(self, call: Call, reply: Reply, started: float) -> None:
        ep = call.endpoint
        handle = self.transport.open(self.adapter.build(call), timeout=ep.timeout,
                                     connect_timeout=ep.connect_timeout,
                                     total_timeout=ep.timeout)
        try:
            if handle.status >= 400:
                raise self.adapter.error(call, WireResponse(handle.status, handle.headers,
                                                            handle.read()))
            decoder = self.adapter.stream_decoder(call)
            for line in handle.lines():
                if decoder.finished:
                    break
                if decoder.feed(line):
                    reply.deltas += 1
                    if reply.ttft is None:
                        reply.ttft = time.monotonic() - started
            reply.result = decoder.result()
        finally:
            handle.close()

    def _account(self, call: Call, reply: Reply) -> None:
        result = reply.result
        assert result is not None
        if result.prompt_tokens is None or result.completion_tokens is None:
            self.report.usage_missing += 1
        prompt_bound, completion_bound = _bound(call)
        prompt = result.prompt_tokens if result.prompt_tokens is not None else prompt_bound
        completion = result.completion_tokens if result.completion_tokens is not None else \
            completion_bound
        cost = actual_cost_nano(self.dep, prompt, completion)
        self.report.spent_nano += cost
        reported = reported_cost_usd(reply.body)
        if reported is not None:
            self.cost_reports += 1
            self.reported_cost_usd += reported
            self.expected_cost_nano += cost


def _bound(call: Call) -> tuple[int, int]:
    """The most a request can be billed for: its prompt's UTF-8 bytes (no fewer than its tokens)
    and max_tokens."""
    return len(call.rendered.prompt.encode()), call.request.max_tokens


def reported_cost_usd(body: bytes) -> float | None:
    """The cost a provider puts in its reply, if any (DeepInfra: `usage.estimated_cost`, or
    `inference_status.cost` on its native API)."""
    if not body:
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    for outer, key in (("usage", "estimated_cost"), ("inference_status", "cost")):
        part = data.get(outer)
        value = part.get(key) if isinstance(part, dict) else None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
            return float(value)
    return None
