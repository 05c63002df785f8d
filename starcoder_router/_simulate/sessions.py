"""Editor sessions in simulated time: supersession, typed-ahead reuse and the exact-repeat
cache, as the router does them (`_autocomplete/sessions.py`), over a workload's `session` lines.

With the features on, a request of a session is, in this order:

* **reused** when it types through the suggestion its session holds (`Prepared.accepts`: the
  line's `accepts_previous`, else drawn at `[simulate] accept_rate`) and that suggestion is
  still reusable: its request was neither superseded nor refused, and began at most
  `reuse_window_s` ago. It costs nothing, makes no upstream call and is counted as answered at
  its arrival (following the earlier request when that one still runs);
* **cached** when it is greedy (`temperature` 0) and asks exactly what a request answered at
  most `reuse_window_s` ago asked (at most `cache_entries` remembered, the least recently used
  go first): no cost, no call;
* else **sent**. With `sessions` on, the request of its session still running (if any) is
  superseded at once: stopped, and booked at its prompt and the output written so far
  (`driver.py`); a cached answer supersedes it too, as the editor has moved on.

The simulator has no completion text, so "types through the suggestion" is that drawn fact,
not a comparison of text. Requests without a session run exactly as with the features off.
State is bounded: `max_sessions` sessions (least recently used go first), a few numbers each,
plus the requests in flight and the cache's keys.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Literal, NamedTuple

from .._autocomplete.sessions import AutocompletePolicy
from .._routing.cost import nano_to_usd
from .._text import text_table
from .records import Prepared

__all__ = ["SUPERSEDED", "AutocompleteCounts", "AutocompleteFigures", "Begin", "SessionModel",
           "autocomplete_table"]

# The refusal reason of a superseded request: its caller got no completion.
SUPERSEDED = "superseded by a newer request of its session"

Features = Literal["off", "on"]


class AutocompleteCounts:
    """One policy run's calls upstream and requests answered without one."""

    __slots__ = ("cached", "reused", "superseded", "upstream")

    def __init__(self) -> None:
        self.upstream = 0
        self.reused = 0
        self.cached = 0
        self.superseded = 0


class Begin(NamedTuple):
    """What to do with a new request: answer it now (`"reuse"`/`"cache"`) or send it (None),
    and which running request of its session to supersede first (its number)."""

    answer: Literal["reuse", "cache"] | None
    supersede: int | None


_SEND = Begin(None, None)


class _Session:
    __slots__ = ("holds", "running", "since")

    def __init__(self) -> None:
        self.running: int | None = None  # the request of the session running upstream
        self.holds = False  # a suggestion to type through: running, or finished with one
        self.since = 0.0  # when that suggestion's request began


class SessionModel:
    """One policy run's sessions and cache (see the module's docstring)."""

    def __init__(self, policy: AutocompletePolicy, counts: AutocompleteCounts):
        self.policy = policy
        self.counts = counts
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._running: dict[int, tuple[_Session, bytes | None]] = {}
        self._cache: OrderedDict[bytes, float] = OrderedDict()

    def begin(self, number: int, p: Prepared, t: float) -> Begin:
        """Request `number` of session `p.session` arrives at `t`."""
        assert p.session is not None
        policy = self.policy
        session = self._session(p.session)
        fresh = t - session.since <= policy.reuse_window_s
        if policy.reuse and p.accepts and session.holds and fresh:
            self.counts.reused += 1
            return Begin("reuse", None)
        older = session.running if policy.sessions else None
        if older is not None:
            session.running = None
            session.holds = False
        if self._cached(p.repeat_key, t):
            self.counts.cached += 1
            session.holds, session.since = True, t
            return Begin("cache", older)
        session.running, session.holds, session.since = number, True, t
        self._running[number] = (session, p.repeat_key)
        return Begin(None, older) if older is not None else _SEND

    def finished(self, number: int, served: bool, t: float) -> None:
        """Request `number`, sent upstream, ended at `t` (`served`: with a completion)."""
        found = self._running.pop(number, None)
        if found is None:
            return
        session, key = found
        if session.running == number:
            session.running = None
            session.holds = served
        if served and key is not None and self.policy.cache_entries:
            cache = self._cache
            cache[key] = t
            cache.move_to_end(key)
            while len(cache) > self.policy.cache_entries:
                cache.popitem(last=False)

    def _cached(self, key: bytes | None, t: float) -> bool:
        if key is None:
            return False
        at = self._cache.get(key)
        if at is None:
            return False
        if t - at > self.policy.reuse_window_s:
            del self._cache[key]
            return False
        self._cache.move_to_end(key)
        return True

    def _session(self, name: str) -> _Session:
        sessions = self._sessions
        session = sessions.get(name)
        if session is None:
            session = sessions[name] = _Session()
            if len(sessions) > self.policy.max_sessions:
                sessions.popitem(last=False)
        else:
            sessions.move_to_end(name)
        return session


class AutocompleteFigures(NamedTuple):
    """One policy's totals with the autocomplete features off or on."""

    policy: str
    features: Features
    requests: int
    upstream_requests: int
    cost_usd: float
    reused: int
    cached: int
    superseded: int

    @property
    def served_locally_share(self) -> float:
        """The share of requests answered by reuse or the cache."""
        return (self.reused + self.cached) / self.requests if self.requests else 0.0

    def as_json(self) -> dict[str, Any]:
        out = self._asdict()
        out["served_by_reuse_or_cache_share"] = round(self.served_locally_share, 4)
        return out


def figures_of(policy: str, features: Features, requests: int, cost_nano: int,
               counts: AutocompleteCounts) -> AutocompleteFigures:
    return AutocompleteFigures(policy, features, requests, counts.upstream,
                               nano_to_usd(cost_nano), counts.reused, counts.cached,
                               counts.superseded)


def autocomplete_table(figures: Sequence[AutocompleteFigures]) -> str:
    """Per policy, features off against on, for the terminal."""
    by_policy: dict[str, dict[str, AutocompleteFigures]] = {}
    for f in figures:
        by_policy.setdefault(f.policy, {})[f.features] = f
    rows = [("policy", "upstream off", "upstream on", "cost off", "cost on", "saved",
             "reuse/cache", "superseded")]
    for name, both in by_policy.items():
        off, on = both.get("off"), both.get("on")
        saved = "-"
        if off is not None and on is not None and off.cost_usd:
            saved = f"{100 * (off.cost_usd - on.cost_usd) / off.cost_usd:.0f}%"
        rows.append((
            name,
            "-" if off is None else str(off.upstream_requests),
            "-" if on is None else str(on.upstream_requests),
            "-" if off is None else _usd(off.cost_usd),
            "-" if on is None else _usd(on.cost_usd),
            saved,
            "-" if on is None else f"{100 * on.served_locally_share:.1f}%",
            "-" if on is None else str(on.superseded),
        ))
    return text_table(rows)


def _usd(v: float) -> str:
    return f"${v:,.4f}" if v < 10 else f"${v:,.2f}"
