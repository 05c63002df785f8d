"""Sends each probe's requests through the router's own provider adapters and transport, and
hands the replies to the judgements in `probes.py`.

One `Session` per deployment: it builds calls exactly as routing would (the adapter's request
body, the endpoint's key and headers), waits out a 429 once, and keeps the account of what was
spent, from the usage the provider reports (refused requests are not billed).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._errors import (
    AuthenticationError,
    BadRequestError,
    ContextLengthError,
    NotFoundError,
    ProviderError,
    RateLimitError,
)
from .._providers.base import Provider
from .._providers.call import Call, Endpoint, ProviderResult
from .._providers.errormap import UNREADABLE, in_context, unreadable_reply
from .._routing.catalog import Deployment
from .._routing.cost import actual_cost_nano, nano_to_usd
from .._routing.render import FILE_SEP, Rendered
from .._routing.request import CompletionRequest, ResponseFormat
from .._routing.tokens import TokenCounter
from .._transports.base import SyncTransport, WireResponse
from . import probes as P
from .probes import Bisect, Finding

__all__ = ["DeploymentReport", "Session", "run_probes"]

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
    usage_missing: int = 0  # replies without usage, costed at their bound

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
        prompt = result.prompt_tokens if result.prompt_tokens is not None else \
            len(call.rendered.prompt.encode())  # UTF-8 bytes bound the token count
        completion = result.completion_tokens if result.completion_tokens is not None else \
            call.request.max_tokens
        cost = actual_cost_nano(self.dep, prompt, completion)
        self.report.spent_nano += cost
        reported = reported_cost_usd(reply.body)
        if reported is not None:
            self.cost_reports += 1
            self.reported_cost_usd += reported
            self.expected_cost_nano += cost


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


# -- the probes -------------------------------------------------------------------------------

REACH_PROMPT = "def hello():\n"
LATENCY_PROMPT = "def fibonacci(n):\n"
STRUCTURED_PROMPT = 'Answer with a JSON object such as {"a": 1}:\n'


def run_probes(session: Session) -> DeploymentReport:
    """Every probe against the session's deployment, in order; the report keeps the findings."""
    out = session.report.findings
    reach = session.send(REACH_PROMPT, 4)
    out.append(_judge_reach(reach))
    if reach.result is None:
        out.extend(Finding(p.name, "skipped", "not reachable") for p in P.PROBES[1:])
        return session.report
    out.append(P.judge_model(session.dep, reach.result.model))
    streams = [session.send(LATENCY_PROMPT, P.LATENCY_TOKENS, stream=True)
               for _ in range(P.STREAM_SAMPLES)]
    counter = session.counter
    exact = [counter.count(p) for p in (REACH_PROMPT, LATENCY_PROMPT)] \
        if counter is not None and counter.exact else []
    out.append(P.judge_usage(
        ("plain", _usage(reach), len(REACH_PROMPT.encode()), 4),
        ("streamed", _usage(streams[0]), len(LATENCY_PROMPT.encode()), P.LATENCY_TOKENS),
        exact=exact))
    out.append(_latency(streams))
    out.append(probe_window(session))
    out.append(probe_stops(session))
    out.append(_special_stop(session))
    out.append(_fim(session))
    out.append(_structured(session))
    out.append(_retry_after(session))
    out.append(_billed(session))
    return session.report


def _judge_reach(reply: Reply) -> Finding:
    err = reply.error
    if err is None:
        return Finding("reach", "ok", f"answered in {reply.elapsed * 1000:.0f} ms")
    what = ("key refused" if isinstance(err, AuthenticationError) else
            "model not found" if isinstance(err, NotFoundError) else
            "unreachable or failed")
    return Finding("reach", "failed", f"{what}: {err}")


def _usage(reply: Reply) -> tuple[int | None, int | None] | None:
    r = reply.result
    return None if r is None else (r.prompt_tokens, r.completion_tokens)


def _latency(streams: Sequence[Reply]) -> Finding:
    ttfts, steps = [], []
    for s in streams:
        if s.result is None or s.ttft is None:
            continue
        ttfts.append(s.ttft)
        tokens = s.result.completion_tokens or s.deltas
        if tokens > 1:
            steps.append((s.elapsed - s.ttft) / (tokens - 1))
    return P.judge_latency(ttfts, steps)


def probe_window(s: Session) -> Finding:
    """One request just over the claimed window, one at it, then a bounded bisection when the
    server holds less. Each request asks for one token, so the total is the prompt plus one."""
    claimed = s.dep.context_window
    calibrate = s.send(P.repeated(8), 1)
    if calibrate.result is None:
        return Finding("window", "undecided", f"the calibration request failed: {calibrate.error}")
    counted = calibrate.result.prompt_tokens
    extra = max(0, counted - 8) if counted is not None else 0  # tokens the server adds (BOS)

    def fits(total: int) -> tuple[bool | None, Reply]:
        reply = s.send(P.repeated(total - 1 - extra), 1)
        if reply.result is not None:
            return True, reply
        if isinstance(reply.error, ContextLengthError):
            return False, reply
        return None, reply

    over, reply = fits(claimed + 1)
    if over is None:
        return Finding("window", "undecided", f"the request over the window failed: {reply.error}")
    if over:
        seen = reply.result.prompt_tokens if reply.result else None
        if seen is not None and seen + 2 < claimed:  # it read less than it was sent
            return Finding("window", "differs", f"truncates silently: {claimed + 1} tokens sent, "
                           f"{seen} read", seen + 1)
        return Finding("window", "ok", f"takes {claimed + 1} tokens, more than the "
                       f"{claimed} claimed (claim kept)")
    assert isinstance(reply.error, ContextLengthError)
    named = reply.error.context_window
    target = named if named is not None and named < claimed else claimed
    at, reply = fits(target)
    if at and target == claimed:
        return Finding("window", "ok", f"enforces {claimed}" + (
            " (named in its error)" if named == claimed else ""), claimed)
    if at:
        return Finding("window", "differs", f"enforces {target}, not {claimed} (named in its "
                       "error, confirmed)", target)
    if at is None:
        return Finding("window", "undecided", f"the request at the window failed: {reply.error}")
    search = Bisect(8 + extra + 1, target - 1, steps=P.WINDOW_STEPS)
    while (n := search.next()) is not None:
        ok, reply = fits(n)
        if ok is None:
            return Finding("window", "undecided", f"a search request failed: {reply.error}")
        search.record(n, accepted=ok)
    where = str(search.lo) if search.exact else f"between {search.lo} and {search.hi}"
    return Finding("window", "differs", f"enforces {where}, not {claimed} (learned "
                   f"{search.lo})", search.lo)


def _stops(n: int) -> list[str]:
    return [f"<<stop{i}>>" for i in range(n)]


def probe_stops(s: Session) -> Finding:
    """How many stop sequences the server accepts: the claimed limit and one more, then a
    bounded search. A refusal counts only when its message speaks of stops."""
    claimed = s.dep.max_stop or s.adapter.max_stop
    undecided: list[str] = []

    def accepts(n: int) -> bool | None:
        reply = s.send("def", 1, stop=_stops(n), max_stop=n)
        if reply.result is not None:
            return True
        if isinstance(reply.error, BadRequestError) and "stop" in str(reply.error).lower():
            return False
        undecided.append(f"{n} stops: {reply.error}")
        return None

    def search(lo: int, hi: int) -> Finding:
        b = Bisect(lo, hi, steps=5)
        while (n := b.next()) is not None:
            ok = accepts(n)
            if ok is None:
                return Finding("stops", "undecided", undecided[-1])
            b.record(n, accepted=ok)
        where = str(b.lo) if b.exact else f"between {b.lo} and {b.hi}"
        claim = f"{claimed} claimed" if claimed else "no limit claimed"
        if b.lo == 0:
            return Finding("stops", "differs", f"refuses any stop sequence ({claim})", None)
        return Finding("stops", "differs", f"accepts {where} ({claim})", b.lo)

    if claimed is None:
        ok = accepts(P.STOP_CEILING)
        if ok is None:
            return Finding("stops", "undecided", undecided[-1])
        return Finding("stops", "ok", f"accepts {P.STOP_CEILING}, no limit claimed") if ok \
            else search(0, P.STOP_CEILING - 1)
    at = accepts(claimed)
    if at is None:
        return Finding("stops", "undecided", undecided[-1])
    if not at:
        return search(0, claimed - 1)
    more = accepts(claimed + 1)
    if more is None:
        return Finding("stops", "undecided", undecided[-1])
    if not more:
        return Finding("stops", "ok", f"accepts {claimed}, refuses {claimed + 1}", claimed)
    top = accepts(P.STOP_CEILING)
    if top is None:
        return Finding("stops", "undecided", undecided[-1])
    if top:
        return Finding("stops", "differs", f"accepts {P.STOP_CEILING}, more than the {claimed} "
                       "claimed", P.STOP_CEILING)
    return search(claimed + 1, P.STOP_CEILING - 1)


def _special_stop(s: Session) -> Finding:
    prompt = P.special_stop_prompt()
    free = s.send(prompt, P.SPECIAL_TOKENS_OUT)
    stopped = s.send(prompt, P.SPECIAL_TOKENS_OUT, stop=[FILE_SEP])
    a = (free.result.text, free.result.completion_tokens) if free.result else None
    b = (stopped.result.text, stopped.result.completion_tokens,
         stopped.result.raw_finish_reason) if stopped.result else None
    return P.judge_special_stop(a, b)


def _fim(s: Session) -> Finding:
    real, escaped = P.fim_prompts()
    a, b = s.send(real, 8), s.send(escaped, 1)
    return P.judge_fim((a.result.text, a.result.prompt_tokens) if a.result else None,
                       (b.result.text, b.result.prompt_tokens) if b.result else None)


def _structured(s: Session) -> Finding:
    if not s.dep.supports("structured_output"):
        return Finding("structured", "skipped", "not claimed in the catalog")
    reply = s.send(STRUCTURED_PROMPT, 32, fmt=ResponseFormat(type="json_object"))
    if reply.error is not None and not isinstance(reply.error, BadRequestError):
        return Finding("structured", "undecided", f"the request failed: {reply.error}")
    r = reply.result
    return P.judge_structured(r.text if r else None, r.finish_reason if r else None,
                              str(reply.error) if reply.error else None)


def _retry_after(s: Session) -> Finding:
    if not s.rate_limits:
        return Finding("retry-after", "undecided", "no 429 happened during the run")
    waits = [e.retry_after for e in s.rate_limits]
    if all(w is not None for w in waits):
        return Finding("retry-after", "ok", f"{len(waits)} x 429, each with a retry time "
                       f"({', '.join(f'{w:g} s' for w in waits if w is not None)})", waits)
    return Finding("retry-after", "differs", f"{len(waits)} x 429, "
                   f"{sum(w is None for w in waits)} without a retry time", waits)


def _billed(s: Session) -> Finding:
    if not s.cost_reports:
        why = "local: nothing billed" if s.dep.is_local else "the replies report no cost"
        return Finding("billed", "undecided", why)
    expected = nano_to_usd(s.expected_cost_nano)
    reported = s.reported_cost_usd
    detail = (f"reported ${reported:.8f}, usage x price ${expected:.8f} over "
              f"{s.cost_reports} replies")
    close = abs(reported - expected) <= max(1e-9, 0.05 * expected)
    return Finding("billed", "ok" if close else "differs", detail, {"reported_usd": reported,
                                                                     "expected_usd": expected})


def probe_deployment(dep: Deployment, adapter: Provider, endpoint: Endpoint,
                     transport: SyncTransport, **options: Any) -> DeploymentReport:
    """Run every probe against `dep` and return what was found."""
    return run_probes(Session(dep, adapter, endpoint, transport, **options))
