"""Helpers for the fault suite: a spend store that remembers every hold it gave out, and the
checks every faulty run must pass (costs exact, spend equal to the ledger, nothing held)."""

from __future__ import annotations

import collections
import math
import threading
from collections.abc import Sequence

from starcoder_router import (
    Budget,
    Completion,
    CostPolicy,
    Deployment,
    LedgerEntry,
    MemoryStore,
    Reservation,
)
from starcoder_router._providers.validate import COMPLETION_SLACK, PROMPT_SLACK
from starcoder_router._routing.cost import actual_cost_nano
from starcoder_router._stores.base import BudgetKey

BUDGET = Budget(limit_usd=1_000_000, period="total", name="faults")


def budget_policy(*providers: str) -> CostPolicy:
    return CostPolicy(allow_providers=frozenset(providers), budgets=(BUDGET,))


class TrackingStore(MemoryStore):
    """A real `MemoryStore` that also remembers which holds are still open, and any hold that
    was settled or released twice (or never given)."""

    def __init__(self) -> None:
        super().__init__(max_ledger_entries=1_000_000)
        self.open: set[str] = set()
        self.misuse: list[str] = []
        self.taken_on: dict[str, str] = {}
        self._track = threading.Lock()

    def reserve(self, keys: Sequence[BudgetKey], amount_nano: int, ttl_s: float) -> Reservation:
        res = super().reserve(keys, amount_nano, ttl_s)
        with self._track:
            self.open.add(res.id)
            # Where each hold was taken (a hedge leg's thread, or the caller's), for reports.
            self.taken_on[res.id] = threading.current_thread().name
        return res

    def open_holds(self) -> str:
        """The holds still open, by the thread that took them."""
        with self._track:
            where = collections.Counter(self.taken_on.get(rid, "?") for rid in self.open)
        return f"{len(self.open)} budget holds left open (taken on: {dict(where)})"

    def _close(self, res: Reservation) -> None:
        with self._track:
            if res.id not in self.open:
                self.misuse.append(res.id)
            self.open.discard(res.id)
            self.taken_on.pop(res.id, None)

    def settle(self, reservation: Reservation, actual_nano: int,
               entry: LedgerEntry | None = None) -> None:
        self._close(reservation)
        super().settle(reservation, actual_nano, entry)

    def release(self, reservation: Reservation, entry: LedgerEntry | None = None) -> None:
        self._close(reservation)
        super().release(reservation, entry)

    def spent_total(self) -> int:
        return self.spent(next(iter(self._buckets)) if self._buckets else "")

    def assert_balanced(self) -> None:
        """No hold left open or closed twice; spend equals the ledger, and no cost is negative."""
        assert not self.open, self.open_holds()
        assert not self.misuse, f"reservations settled twice or unknown: {self.misuse[:3]}"
        ledger = self.ledger()
        assert all(e.cost_nano >= 0 for e in ledger)
        assert self.spent_total() == sum(e.cost_nano for e in ledger)


def ceiling_nano(dep: Deployment, max_tokens: int) -> int:
    """The most a reply can cost once validated: a whole window of prompt (plus slack) and
    `max_tokens` (plus slack) of output."""
    return actual_cost_nano(dep, dep.context_window + PROMPT_SLACK, max_tokens + COMPLETION_SLACK)


def assert_costed(c: Completion, max_tokens: int) -> None:
    """The completion's cost is its usage times its deployment's prices, and sane."""
    u = c.usage
    assert isinstance(u.prompt_tokens, int) and isinstance(u.completion_tokens, int)
    assert u.prompt_tokens >= 0 and u.completion_tokens >= 0
    assert c.cost_nano == actual_cost_nano(c.deployment, u.prompt_tokens, u.completion_tokens)
    assert 0 <= c.cost_nano <= ceiling_nano(c.deployment, max_tokens)
    assert not math.isnan(c.cost_usd)
    assert isinstance(c.text, str)
