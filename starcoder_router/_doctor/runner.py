"""The probes in order: each sends its requests through a `Session` and hands the replies to the
judgements in `probes.py`. A search stops at its bound; an unreachable deployment skips the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._errors import AuthenticationError, BadRequestError, ContextLengthError, NotFoundError
from .._providers.base import Provider
from .._providers.call import Endpoint
from .._routing.catalog import Deployment
from .._routing.cost import nano_to_usd
from .._routing.render import FILE_SEP
from .._routing.request import ResponseFormat
from .._transports.base import SyncTransport
from . import probes as P
from .probes import Bisect, Finding
from .session import DeploymentReport, Reply, Session

__all__ = ["probe_deployment", "probe_special_stop", "probe_stops", "probe_window", "run_probes"]

# -- the probes -------------------------------------------------------------------------------

REACH_PROMPT = "def hello():\n"
LATENCY_PROMPT = "def fibonacci(n):\n"
STRUCTURED_PROMPT = 'Answer with a JSON object such as {"a": 1}:\n'
STOPS_PROMPT = "def"


def run_probes(session: Session) -> DeploymentReport:
    """Every probe against the session's deployment, in order; the report keeps the findings.
    An interrupt (Ctrl-C) ends the run where it is: the report keeps what was found and spent
    until then, and the probes not run say so."""
    report = session.report
    try:
        _run_probes(session)
    except KeyboardInterrupt:
        report.interrupted = True
        done = {f.probe for f in report.findings}
        report.findings.extend(Finding(p.name, "skipped", "interrupted") for p in P.PROBES
                               if p.name not in done)
    return report


def _run_probes(session: Session) -> DeploymentReport:
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
    out.append(probe_special_stop(session))
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
        if seen is None:
            return Finding("window", "undecided", f"takes {claimed + 1} tokens without an error "
                           "but reports no prompt count: it may have dropped some silently")
        if seen + 2 < claimed:  # it read less than it was sent
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
        reply = s.send(STOPS_PROMPT, 1, stop=_stops(n), max_stop=n)
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


def probe_special_stop(s: Session) -> Finding:
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
