"""Sessions: the requests of one editor on one file, where a newer request makes an older one
stale, and where typed-ahead reuse and the exact-repeat cache look first.

`SessionTable.begin` says what to do with a new request:

* answer it now, from a recent completion it types through (`reuse.py`) or from the
  exact-repeat cache (`cache.py`);
* follow a request of its session still running, whose text so far begins with what was typed
  since: the new caller gets the rest as it arrives, and the running request goes on;
* or send it, under a `Ticket` that the next request of the session may supersede: the table
  marks the ticket and calls the `abort` its driver bound to it (cancel the task, stop reading).

`finish` remembers how a request ended. Everything here is bounded: sessions (least recently
used go first), recent completions per session (by count and age), requests following one
another, and the cache. No I/O; the routers drive it (`_running/sessions_run.py`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from pydantic import Field

from .._validation import FrozenModel
from .cache import CompletionCache, cache_key, deterministic, signature
from .reuse import Prompt, Tap, continuation, prompt_of, typed_since

if TYPE_CHECKING:
    from .._routing.request import CompletionRequest

__all__ = ["OFF", "AutocompletePolicy", "Begin", "Follow", "SessionTable", "Ticket"]

# The session name that opts a request out of sessions, reuse and the cache.
OFF = "off"

# Requests following one another in a session (each the one before): past this, a new request
# supersedes them instead.
_MAX_CHAIN = 8


class AutocompletePolicy(FrozenModel):
    """Sessions, typed-ahead reuse and the exact-repeat cache (the `[autocomplete]` table).

    * `sessions`: a newer request of a session supersedes the older one still running;
    * `reuse`: a request typing through a recent or running completion of its session is
      answered from it;
    * `cache_entries`: answers kept for exact repeats of deterministic requests (0: none),
      at most `cache_bytes` of text;
    * `reuse_window_s`, `recent_per_session`: how long and how many completions per session
      stay reusable; `max_sessions`: sessions remembered (least recently used go first).

    In the SDK all of this applies only to requests that carry a `session` (the cache is off
    unless `cache_entries` is set); the gateway gives every completion request a session.

        Router(autocomplete=AutocompletePolicy(cache_entries=1024))
    """

    sessions: bool = True
    reuse: bool = True
    cache_entries: int = Field(default=0, ge=0, le=1_000_000)
    cache_bytes: int = Field(default=16 * 1024 * 1024, ge=0)
    reuse_window_s: float = Field(default=30.0, gt=0)
    recent_per_session: int = Field(default=4, ge=0, le=64)
    max_sessions: int = Field(default=10_000, ge=1, le=10_000_000)


class Ticket:
    """One request sent upstream under a session. `superseded` turns true (once) when a newer
    request of the session replaces it; `abort`, bound by the driver, then stops it. `tap`
    carries its text to requests that follow it."""

    __slots__ = ("_abort", "_lock", "key", "prompt", "sig", "superseded", "tap")

    def __init__(self, key: str, prompt: Prompt | None, sig: bytes):
        self.key = key
        self.prompt = prompt
        self.sig = sig
        self.superseded = False
        self.tap = Tap()
        self._abort: Callable[[], None] | None = None
        self._lock = threading.Lock()

    def bind(self, abort: Callable[[], None] | None) -> None:
        """Set (or clear) how to stop this request; called at once if already superseded."""
        with self._lock:
            self._abort = abort
            now = abort is not None and self.superseded
        if now and abort is not None:
            abort()

    def supersede(self) -> None:
        with self._lock:
            if self.superseded:
                return
            self.superseded = True
            abort = self._abort
        if abort is not None:
            abort()


class Follow(NamedTuple):
    """Follow `leader`: its text with `typed` stripped is this request's answer."""

    leader: Ticket
    typed: str


class Begin(NamedTuple):
    """What to do with a new request: answer it with `served` (a completion of an earlier
    request and how much of its text to strip, `"reuse"` or `"cache"`), `follow` a running
    request, or send it (under `ticket` when it has a session)."""

    ticket: Ticket | None = None
    served: tuple[Any, str, str] | None = None
    follow: Follow | None = None
    cache_key: bytes | None = None


class _Recent(NamedTuple):
    prompt: Prompt
    sig: bytes
    completion: Any
    text: str
    at: float


class _Session:
    __slots__ = ("recent", "running")

    def __init__(self, recent: int) -> None:
        self.running: list[Ticket] = []
        self.recent: deque[_Recent] = deque(maxlen=recent)


class SessionTable:
    """Sessions of one router, with its exact-repeat cache."""

    def __init__(self, policy: AutocompletePolicy):
        self.policy = policy
        self.cache: CompletionCache[Any] = CompletionCache(policy.cache_entries,
                                                           policy.cache_bytes)
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._lock = threading.Lock()

    def begin(self, request: CompletionRequest, now: float) -> Begin:
        policy = self.policy
        if request.session == OFF:
            return Begin()
        key = _key(request)
        use_cache = policy.cache_entries > 0 and deterministic(request)
        if key is None and not use_cache:
            return Begin()
        sig = signature(request)
        ckey = cache_key(request, sig) if use_cache else None
        if ckey is not None:
            hit = self.cache.get(ckey)
            if hit is not None:
                return Begin(served=(hit, "", "cache"))
        if key is None:
            return Begin(cache_key=ckey)
        digests = prompt_of(request)
        prompt = digests.prompt() if digests is not None else None
        ticket = Ticket(key, prompt, sig)
        stale: list[Ticket] = []
        with self._lock:
            session = self._session(key)
            if digests is not None and policy.reuse:
                served = _recent_match(session, digests, sig, now - policy.reuse_window_s)
                if served is not None:
                    return Begin(served=served, cache_key=ckey)
                follow = _running_match(session, digests, sig)
                if follow is not None:
                    session.running.append(ticket)
                    return Begin(ticket=ticket, follow=follow, cache_key=ckey)
            if policy.sessions:
                # The same request again means the editor has not moved on: the one running
                # is not stale, and both go on (a deterministic one may meet the cache).
                stale = [t for t in session.running if t.prompt != prompt or t.sig != sig]
                session.running = [t for t in session.running if t not in stale]
            session.running.append(ticket)
            del session.running[:-_MAX_CHAIN]
        for old in stale:
            old.supersede()
        return Begin(ticket=ticket, cache_key=ckey)

    def finish(self, begin: Begin, completion: Any, text: str, finished: bool,
               cacheable: bool, now: float) -> None:
        """`begin`'s request ended with `completion` (None if it ended before any), `text` its
        answer, `finished` true for a whole answer (stopped or at its length), `cacheable`
        for a whole answer from upstream."""
        ticket = begin.ticket
        if begin.cache_key is not None and cacheable and completion is not None:
            self.cache.put(begin.cache_key, completion, text)
        if ticket is None:
            return
        with self._lock:
            session = self._sessions.get(ticket.key)
            if session is not None:
                if ticket in session.running:
                    session.running.remove(ticket)
                if (finished and text and ticket.prompt is not None and self.policy.reuse
                        and not ticket.superseded):
                    session.recent.append(_Recent(ticket.prompt, ticket.sig, completion, text,
                                                  now))
        ticket.tap.close(completion, finished)

    def _session(self, key: str) -> _Session:
        session = self._sessions.get(key)
        if session is None:
            session = self._sessions[key] = _Session(self.policy.recent_per_session)
            while len(self._sessions) > self.policy.max_sessions:
                self._sessions.popitem(last=False)
        else:
            self._sessions.move_to_end(key)
        return session


def _key(request: CompletionRequest) -> str | None:
    """The table's key for `request`'s session: one tenant never touches another's."""
    if request.session is None:
        return None
    return f"{request.tenant or ''}\x1f{request.session}"


def _recent_match(session: _Session, digests: Any, sig: bytes,
                  oldest: float) -> tuple[Any, str, str] | None:
    for recent in reversed(session.recent):
        if recent.at < oldest:
            break
        if recent.sig != sig:
            continue
        typed = typed_since(recent.prompt, digests)
        # Only typing reuses a finished answer: asking again at the same place may be asking
        # for another suggestion (an exact repeat of a deterministic request is the cache's).
        if typed and continuation(recent.text, typed) is not None:
            return recent.completion, typed, "reuse"
    return None


def _running_match(session: _Session, digests: Any, sig: bytes) -> Follow | None:
    for leader in reversed(session.running):
        if leader.sig != sig or leader.prompt is None or leader.superseded:
            continue
        typed = typed_since(leader.prompt, digests)
        if typed and leader.tap.text().startswith(typed):
            return Follow(leader, typed)
    return None
