"""How many requests a local server runs at once, read from the server itself.

* llama.cpp's `llama-server`: `GET /props` has `total_slots` (its `--parallel`), and `GET /slots`
  (on unless started with `--no-slots`) lists each slot with `is_processing`
  (llama.cpp `tools/server/README.md`, "GET /props" and "GET /slots"; the slot object is
  `server_slot::to_json` in `tools/server/server-context.cpp`).
* vLLM: `GET /metrics` (Prometheus text) has the gauges `vllm:num_requests_running` and
  `vllm:num_requests_waiting` (vLLM `docs/source/design/v1/metrics.md`); a waiting request
  means the server is full. vLLM does not publish its `--max-num-seqs`, so its capacity is the
  deployment's `parallel`.
* Ollama publishes nothing: its capacity is `OLLAMA_NUM_PARALLEL` as the deployment's `parallel`.

Probes run in one background thread, at most once per deployment per TTL, each with a short
timeout, and only because the configuration names the server: never on the request path and
never because of what a client sent. Parsers take hostile bytes and return None on anything
they do not recognise.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import threading
from collections.abc import Callable
from typing import NamedTuple

__all__ = [
    "ServerSlots",
    "SlotProber",
    "parse_llama_props",
    "parse_llama_slots",
    "parse_vllm_metrics",
    "probe_urls",
]

logger = logging.getLogger("starcoder_router")

# No real server runs more slots than this; a larger figure is a broken or hostile reply.
MAX_SLOTS = 4096
# The most of a probe's reply we read (a /metrics page is a few tens of KiB).
MAX_PROBE_BYTES = 1 << 20

Fetch = Callable[[str, float], bytes]


class ServerSlots(NamedTuple):
    """What a probe learned: `total` slots (None: the server does not say), `busy` ones and
    requests `waiting` for one (None: unknown)."""

    total: int | None = None
    busy: int | None = None
    waiting: int | None = None


def _count(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if 0 <= value <= MAX_SLOTS else None


def parse_llama_props(body: bytes) -> ServerSlots | None:
    """`total_slots` from llama-server's `/props` reply."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    total = _count(data.get("total_slots"))
    return ServerSlots(total=total) if total else None


def parse_llama_slots(body: bytes) -> ServerSlots | None:
    """Slots and busy slots from llama-server's `/slots` reply (a list, one object a slot)."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, list) or not data or len(data) > MAX_SLOTS:
        return None
    busy = 0
    for slot in data:
        if not isinstance(slot, dict) or not isinstance(slot.get("is_processing"), bool):
            return None
        busy += slot["is_processing"]
    return ServerSlots(total=len(data), busy=busy)


_VLLM_GAUGES = {"vllm:num_requests_running": "busy", "vllm:num_requests_waiting": "waiting"}


def parse_vllm_metrics(text: bytes | str) -> ServerSlots | None:
    """Running and waiting requests from vLLM's `/metrics` (summed over its label sets: one
    per model or engine)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    sums: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("vllm:num_requests_"):
            continue
        name, _, rest = line.partition("{")
        if rest:
            _, closed, rest = rest.rpartition("}")
            if not closed:
                continue
        else:
            name, _, rest = line.partition(" ")
        field = _VLLM_GAUGES.get(name.strip())
        parts = rest.split()
        if field is None or not parts:
            continue
        try:
            value = float(parts[0])
        except ValueError:
            continue
        if not math.isfinite(value) or value < 0:
            continue
        sums[field] = sums.get(field, 0.0) + value
    if "busy" not in sums:
        return None
    busy = min(int(sums["busy"]), MAX_SLOTS)
    waiting = min(int(sums["waiting"]), MAX_SLOTS) if "waiting" in sums else None
    return ServerSlots(busy=busy, waiting=waiting)


def _server_root(base_url: str) -> str:
    root = base_url.rstrip("/")
    return root[: -len("/v1")] if root.endswith("/v1") else root


def probe_urls(provider: str, base_url: str | None
               ) -> tuple[tuple[str, Callable[[bytes], ServerSlots | None]], ...]:
    """The URLs to read for a provider's slots, each with its parser, in order of preference."""
    if not base_url:
        return ()
    root = _server_root(base_url)
    if provider == "llamacpp":
        return ((root + "/slots", parse_llama_slots), (root + "/props", parse_llama_props))
    if provider == "vllm":
        return ((root + "/metrics", parse_vllm_metrics),)
    return ()


def _urllib_fetch(url: str, timeout: float) -> bytes:
    import urllib.request  # loads http.client and email: only once a probe runs

    with urllib.request.urlopen(url, timeout=timeout) as reply:  # noqa: S310 (configured URL)
        body: bytes = reply.read(MAX_PROBE_BYTES + 1)
    if len(body) > MAX_PROBE_BYTES:
        raise ValueError("probe reply too large")
    return body


class _Entry(NamedTuple):
    slots: ServerSlots | None
    at: float


class SlotProber:
    """Cached probe results per deployment, refreshed in the background after `ttl_s`.

    `get()` never waits: it returns what is known (None at first) and, when that is older than
    the TTL, asks the worker thread to read the server again. `close()` stops the thread."""

    def __init__(self, *, ttl_s: float, timeout_s: float, now: Callable[[], float],
                 fetch: Fetch | None = None):
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self._now = now
        self._fetch = fetch or _urllib_fetch
        self._lock = threading.Lock()
        self._cache: dict[str, _Entry] = {}
        self._pending: set[str] = set()
        self._jobs: queue.SimpleQueue[tuple[str, str, str] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False

    def get(self, name: str, provider: str, base_url: str | None) -> ServerSlots | None:
        """The last probe's result for `name` (maybe stale), scheduling a new one if due."""
        now = self._now()
        with self._lock:
            entry = self._cache.get(name)
            due = entry is None or now - entry.at >= self.ttl_s
            if due and name not in self._pending and not self._closed and base_url \
                    and probe_urls(provider, base_url):
                self._pending.add(name)
                self._jobs.put((name, provider, base_url))
                if self._thread is None:
                    self._thread = threading.Thread(target=self._work, daemon=True,
                                                    name="starcoder-router-slot-probe")
                    self._thread.start()
        return entry.slots if entry is not None else None

    def fresh(self, name: str) -> ServerSlots | None:
        """The last result if it is younger than the TTL."""
        with self._lock:
            entry = self._cache.get(name)
        if entry is None or self._now() - entry.at >= self.ttl_s:
            return None
        return entry.slots

    def probe_now(self, name: str, provider: str, base_url: str | None) -> ServerSlots | None:
        """Read the server at once in this thread (the worker and tests use it)."""
        found: ServerSlots | None = None
        for url, parse in probe_urls(provider, base_url):
            try:
                found = parse(self._fetch(url, self.timeout_s))
            except (OSError, ValueError) as exc:  # urllib's URLError is an OSError
                logger.debug("slot probe of %s at %s failed: %s", name, url, type(exc).__name__)
                found = None
            if found is not None:
                break
        with self._lock:
            self._cache[name] = _Entry(found, self._now())
            self._pending.discard(name)
        return found

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                self.probe_now(*job)
            except Exception:  # a parser bug must not kill the worker
                logger.exception("slot probe of %s failed", job[0])
                with self._lock:
                    self._pending.discard(job[0])

    def close(self) -> None:
        with self._lock:
            self._closed = True
            thread, self._thread = self._thread, None
        if thread is not None:
            self._jobs.put(None)
            # A probe under way ends within its timeout (a name lookup may take longer); the
            # daemon thread then reads the stop mark and ends. Closing waits only briefly.
            thread.join(timeout=min(0.2, self.timeout_s))
