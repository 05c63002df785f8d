"""Deployment health shared by every router of a gateway and by every gateway on the same
Redis: when one router's circuit for a deployment opens, the others take it out until the same
moment.

An opened circuit is published on `{prefix}health` (and kept under `{prefix}health:{name}`
until it expires, for instances that start later). Each instance applies what the others
publish to all its routers. Times travel as wall-clock seconds, since monotonic clocks differ
between machines.

On a Redis Cluster (a `redis+cluster://` URL) the same commands work unchanged, with no script
and no key that must share a slot with another: classic `PUBLISH` is forwarded over the cluster
bus to every node, so a subscriber connected to any one node hears every instance (sharded
`SPUBLISH` would not be simpler: one channel has one shard anyway); each `SET` goes to the
master of its own key, and an instance that starts later finds the keys with `SCAN` on every
master (redis-py's `RedisCluster.scan_iter`). The `SET` and the `PUBLISH` are two commands, not
a pipeline, since a cluster pipeline routes by key and `PUBLISH` has none.

Routers keep their circuits in a `HealthTracker` that `AsyncRouter` does not expose yet;
`tracker_of` is the one place that reaches it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._ids import new_id
from .._stores import DEFAULT_REDIS_TIMEOUT_S

if TYPE_CHECKING:
    from .._routing.health import HealthTracker
    from .._running.async_router import AsyncRouter

__all__ = ["GatewayHealth", "SharedHealth", "tracker_of"]

logger = logging.getLogger("starcoder_router.server")

Apply = Callable[[str, float, str], None]  # (deployment, until as wall-clock time, reason)


def tracker_of(router: AsyncRouter) -> HealthTracker:
    """The router's circuit breakers."""
    return router.health


class SharedHealth:
    """Publish opened circuits to Redis and apply the ones other instances publish."""

    def __init__(self, url: str, *, prefix: str = "scr:",
                 timeout_s: float = DEFAULT_REDIS_TIMEOUT_S):
        from .._stores.redis import async_client

        # A RedisCluster for a `redis+cluster://` URL.
        self._redis: Any = async_client(url, timeout_s=timeout_s)
        self._wait_s = timeout_s / 2  # one wait for a message, shorter than a reply may take
        self._channel = prefix + "health"
        self._key = prefix + "health:"
        self.instance = new_id()
        self._tasks: set[asyncio.Task[None]] = set()
        self._listener: asyncio.Task[None] | None = None

    async def start(self, apply: Apply) -> None:
        """Apply what is already known, then listen for more in the background."""
        pubsub = self._redis.pubsub()
        await pubsub.subscribe(self._channel)
        async for key in self._redis.scan_iter(match=self._key + "*"):
            raw = await self._redis.get(key)
            if raw:
                self._receive(raw, apply)
        self._listener = asyncio.create_task(self._listen(pubsub, apply))

    async def _listen(self, pubsub: Any, apply: Apply) -> None:
        try:
            # Bounded waits, not `listen()`: with a socket timeout some redis-py versions end an
            # idle `listen()` with TimeoutError; an empty wait here just waits again.
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True,
                                                   timeout=self._wait_s)
                if message is not None and message.get("type") == "message":
                    self._receive(message["data"], apply)
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    def _receive(self, raw: str, apply: Apply) -> None:
        try:
            msg = json.loads(raw)
            until = float(msg["until"])
            if msg["from"] != self.instance and until > time.time():
                apply(str(msg["deployment"]), until, str(msg["reason"]))
        except (ValueError, KeyError, TypeError):
            logger.warning("ignored a malformed health message: %r", raw[:200])

    def publish(self, deployment: str, until: float, reason: str) -> None:
        """Tell the other instances (in the background: hooks cannot wait)."""
        msg = json.dumps({"from": self.instance, "deployment": deployment, "until": until,
                          "reason": reason})
        ttl_ms = max(1, int((until - time.time()) * 1000))
        task = asyncio.get_running_loop().create_task(self._send(deployment, msg, ttl_ms))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, deployment: str, msg: str, ttl_ms: int) -> None:
        try:
            await self._redis.set(self._key + deployment, msg, px=ttl_ms)
            await self._redis.publish(self._channel, msg)
        except Exception:
            logger.warning("could not share the health of %s", deployment, exc_info=True)

    async def aclose(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._redis.aclose()


class GatewayHealth:
    """The deployments taken out across a gateway's routers (and, with Redis, across gateways;
    with a SQLite store, across the workers of one machine):
    name -> (until, as wall-clock time; reason). Routers made later start with them."""

    def __init__(self, routers: Callable[[], list[AsyncRouter]], redis_url: str | None,
                 prefix: str, timeout_s: float = DEFAULT_REDIS_TIMEOUT_S,
                 local: Any = None):
        self._routers = routers
        self._down: dict[str, tuple[float, str]] = {}
        # Redis shares with every gateway on it; `local` (a `local_share.SQLiteSharedHealth`)
        # with the other workers of this machine; the two have the same interface.
        self.shared: Any = (SharedHealth(redis_url, prefix=prefix, timeout_s=timeout_s)
                            if redis_url else local)

    def after_failure(self, name: str) -> None:
        """An attempt on `name` failed. The router updates its circuit right after its hook
        runs, so look at it on the loop's next turn."""
        asyncio.get_running_loop().call_soon(self._spread, name)

    def _spread(self, name: str) -> None:
        """If a router's circuit for `name` is open now, take it out everywhere until then."""
        now = time.monotonic()
        for router in self._routers():
            tracker = tracker_of(router)
            if tracker.state(name, now) == "open":
                health = tracker.view(now)[name]
                if health.cooling_until is not None:
                    until = time.time() + health.cooling_until - now
                    self.take_out(name, until, health.reason)
                    if self.shared is not None:
                        self.shared.publish(name, until, health.reason)
                return

    def take_out(self, name: str, until: float, reason: str) -> None:
        """Open `name`'s circuit in every router until `until` (wall-clock time)."""
        known = self._down.get(name)
        if known is not None and known[0] >= until:
            return
        self._down[name] = (until, reason)
        for router in self._routers():
            self._disable(router, name, until, reason)

    def prepare(self, router: AsyncRouter) -> None:
        """A new router starts with what is already taken out."""
        now = time.time()
        for name, (until, reason) in self._down.items():
            if until > now:
                self._disable(router, name, until, reason)

    @staticmethod
    def _disable(router: AsyncRouter, name: str, until: float, reason: str) -> None:
        mono = time.monotonic() + until - time.time()
        tracker = tracker_of(router)
        health = tracker.view(time.monotonic()).get(name)
        if health is None or health.cooling_until is None or health.cooling_until < mono:
            tracker.disable(name, mono, reason)

    async def start(self) -> None:
        if self.shared is not None:
            await self.shared.start(self.take_out)

    async def aclose(self) -> None:
        if self.shared is not None:
            await self.shared.aclose()
