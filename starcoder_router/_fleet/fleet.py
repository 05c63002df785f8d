"""The fleet: replica groups, their rings, slot gates and probes, for one router.

`arrange()` reorders a routing decision's candidates within each replica group (the rest of the
ranking is untouched) and notes the chosen replica and why for `explain()`. The drivers take a
`Hold` on a deployment's gate just before sending (`acquire` / `aacquire`) and release it when
the attempt ends, on every path.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from .gate import Hold, SlotGate
from .groups import replica_groups
from .keys import affinity_key
from .policy import FleetPolicy
from .ring import BoundedLoadRing, load_bound
from .sessions import ActiveKeys
from .slots import Fetch, ServerSlots, SlotProber

if TYPE_CHECKING:
    from .._routing.catalog import Deployment
    from .._routing.decision import Candidate, RoutingDecision
    from .._routing.request import CompletionRequest

__all__ = ["Fleet"]

_NO_HOLD = Hold(None, "free slot")


class Fleet:
    """Replica choice and in-flight accounting for the deployments of one router."""

    def __init__(self, policy: FleetPolicy | None, deployments: Iterable[Deployment], *,
                 now: Callable[[], float], fetch: Fetch | None = None):
        self.policy = policy or FleetPolicy()
        deps = tuple(deployments)
        self.groups = replica_groups(deps, auto=self.policy.auto_groups)
        self._group_of = {name: g for g, names in self.groups.items() for name in names}
        self._rings = {g: BoundedLoadRing(names) for g, names in self.groups.items()}
        # Tracked: replicas, and any local deployment whose `parallel` is stated.
        self._deps = {d.name: d for d in deps
                      if d.name in self._group_of or (d.is_local and d.parallel)}
        self._gates = {name: SlotGate(d.parallel or self.policy.default_parallel)
                       for name, d in self._deps.items()}
        self._prober = SlotProber(ttl_s=self.policy.probe_ttl_s,
                                  timeout_s=self.policy.probe_timeout_s, now=now, fetch=fetch)
        self._active = {g: ActiveKeys(idle_s=self.policy.session_idle_s) for g in self.groups}
        self._now = now
        self._turns = {g: itertools.count() for g in self.groups}
        self._turn_lock = threading.Lock()

    @property
    def active(self) -> bool:
        return bool(self._gates)

    def close(self) -> None:
        self._prober.close()

    # -- capacity -----------------------------------------------------------------------------

    def gate(self, name: str) -> SlotGate | None:
        return self._gates.get(name)

    def in_flight(self, name: str) -> int:
        gate = self._gates.get(name)
        return gate.in_flight if gate is not None else 0

    def slots(self, name: str) -> int:
        """The deployment's capacity as known now (probed, else `parallel`, else the default);
        schedules a probe in the background when the last one is stale."""
        dep, gate = self._deps.get(name), self._gates.get(name)
        if dep is None or gate is None:
            return 0
        probed = self._prober.get(name, dep.provider, dep.base_url) if self.policy.probe \
            else None
        total = (probed.total if probed is not None else None) or dep.parallel \
            or self.policy.default_parallel
        if total != gate.capacity:
            gate.set_capacity(total)
        return total

    def has_free_slot(self, name: str) -> bool:
        gate = self._gates.get(name)
        if gate is None:
            return True
        if gate.in_flight >= self.slots(name):
            return False
        # vLLM says when it queues; a recent "waiting" means others filled it.
        recent: ServerSlots | None = self._prober.fresh(name)
        return not (recent is not None and recent.waiting)

    # -- ordering -----------------------------------------------------------------------------

    def arrange(self, decision: RoutingDecision) -> RoutingDecision:
        """`decision` with each replica group's candidates in the fleet's order, in the places
        the group held in the ranking, and a note per group saying which replica and why."""
        ranked = decision.ranked
        places: dict[str, list[int]] = {}
        for i, cand in enumerate(ranked):
            group = self._group_of.get(cand.deployment.name)
            if group is not None:
                places.setdefault(group, []).append(i)
        if not places:
            return decision
        new = list(ranked)
        notes = list(decision.notes)
        for group, idxs in places.items():
            members = [ranked[i] for i in idxs]
            ready = [c for c in members if c.cooling_until is None]
            cooling = [c for c in members if c.cooling_until is not None]
            order, note = self._order(group, ready, decision.request)
            for i, cand in zip(idxs, order + cooling, strict=True):
                new[i] = cand
            if note:
                notes.append(note)
        return dataclasses.replace(decision, ranked=tuple(new), notes=tuple(notes))

    def _order(self, group: str, ready: list[Candidate], request: CompletionRequest
               ) -> tuple[list[Candidate], str]:
        if not ready:
            return [], f"replica group {group}: every replica is cooling down"
        by_name = {c.deployment.name: c for c in ready}
        names = list(by_name)
        loads = {n: self.in_flight(n) for n in names}
        caps = {n: self.slots(n) for n in names}
        free = {n for n in names if self.has_free_slot(n)}
        strategy = self.policy.strategy
        ring_order = names
        if strategy == "affinity":
            kind, key = affinity_key(request)
            chosen, why, detail = self._place(group, key, names)
            detail = f"{kind} key, {detail}"
            ring_order = [n for n in self._rings[group].walk(key) if n in by_name]
            if chosen not in free and free:
                # Its replica is full: the next one clockwise with a free slot (a cold cache
                # beats a queue), not a wait.
                chosen = next(n for n in ring_order if n in free)
                why = "free slot"
        else:
            with self._turn_lock:
                turn = next(self._turns[group])
            rotated = names[turn % len(names):] + names[:turn % len(names)]
            if strategy == "least_loaded":
                rotated.sort(key=lambda n: loads[n] / caps[n])
                why = "least loaded"
            else:
                why = "round robin"
            ring_order = rotated
            chosen = rotated[0]
            if strategy == "least_loaded" and chosen not in free and free:
                chosen = next(n for n in rotated if n in free)
                why = "free slot"
            detail = strategy.replace("_", "-")
        rest = [n for n in ring_order if n != chosen]
        if strategy != "round_robin":
            # Replicas with a free slot before full ones; ring order (or load) within each.
            rest.sort(key=lambda n: n not in free)
        note = (f"replica group {group}: {chosen} by {why} ({detail}; "
                f"{loads[chosen]}/{caps[chosen]} slots busy)")
        return [by_name[n] for n in [chosen, *rest]], note

    def _place(self, group: str, key: str, names: list[str]) -> tuple[str, str, str]:
        """The replica for `key` among `names` (available): the one it is on while it is
        active, else the first on the ring under the bound of active keys. Records it."""
        now = self._now()
        table = self._active[group]
        # The table keeps a digest: keys come from clients and can be long.
        digest = hashlib.blake2b(key.encode("utf-8", "replace"), digest_size=16).digest()
        current = table.replica_of(digest, now)
        active = table.loads(now)
        if current is not None:
            active[current] -= 1  # the key itself is not a load on where it goes
        total = sum(active.get(n, 0) for n in names)
        if current in names:
            bound = load_bound(total, len(names), self.policy.epsilon)
            chosen, why = current, "affinity"
            home = next(n for n in self._rings[group].walk(key) if n in names)
        else:
            placed = self._rings[group].place(key, active, epsilon=self.policy.epsilon,
                                              available=names)
            assert placed is not None  # `names` is not empty
            chosen, why, home, bound = placed.replica, str(placed.reason), placed.home, \
                placed.bound
        table.assign(digest, chosen, now)
        return chosen, why, (f"home {home}, {active.get(chosen, 0) + 1}/{bound} active keys "
                             f"there")

    # -- holds --------------------------------------------------------------------------------

    def _wait_for(self, urgent: bool, limit: float) -> float:
        bound = self.policy.fim_wait_s if urgent else self.policy.other_wait_s
        return max(0.0, min(bound, limit))

    def acquire(self, name: str, *, urgent: bool, limit: float) -> Hold:
        """A slot on `name` for one attempt (blocking at most the class's bound, and never past
        `limit` seconds). A deployment the fleet does not track gets a no-op hold."""
        gate = self._gates.get(name)
        if gate is None:
            return _NO_HOLD
        return gate.acquire(urgent=urgent, wait_s=self._wait_for(urgent, limit))

    async def aacquire(self, name: str, *, urgent: bool, limit: float) -> Hold:
        """`acquire` for an event loop: waits without blocking it."""
        gate = self._gates.get(name)
        if gate is None:
            return _NO_HOLD
        return await gate.aacquire(urgent=urgent, wait_s=self._wait_for(urgent, limit))
