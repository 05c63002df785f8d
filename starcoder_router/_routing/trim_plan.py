"""Trim plans kept between requests: an editor's next keystroke reuses the last request's cuts.

Trimming a FIM request (`fit._trim_fim`) reads the cost of every block of prefix, suffix and
files, chooses the cuts, renders and counts again. An editor then sends the same request with one
more character at the cursor, far from the cuts. If the text the last plan dropped (the head of
the prefix, the tail of the suffix, the files it left out) is dropped again unchanged, the same
cuts make a prompt that differs from the last trimmed one only near the cursor, which the count
cache counts from the last one's pieces. Nothing is taken on trust: the reused prompt is counted
exactly like any other, and used only when it fits the budget and keeps about as much context as
the last plan did (a larger edit, such as a paste or a deletion, plans again from scratch).

Plans are found by the window budget and the ends of the request that trimming drops first (the
start of the prefix and the end of the suffix), so many editors can share one router.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import NamedTuple

from .render import FimParts

__all__ = ["TrimPlan", "TrimPlans"]

# Characters of each end that key a plan; longer ends are compared in full before reuse.
_KEY_CHARS = 128
# A reused plan must keep this close to the last plan's tokens (fewer means a larger edit, and
# trimming from scratch would keep more context).
SLACK_TOKENS = 32
_MAX_PLANS = 256
_MAX_CHARS = 4 << 20  # dropped text kept in all, so many large editors stay bounded in memory


class TrimPlan(NamedTuple):
    """The cuts one trim made: characters dropped from the start of the prefix and from the end
    of the suffix, the files kept, the texts dropped, and the trimmed prompt's token count."""

    prefix_drop: int
    suffix_drop: int
    kept_files: int
    dropped_head: str
    dropped_tail: str
    files: tuple[object, ...]
    repo_name: str | None
    path: str | None
    tokens: int

    def apply(self, parts: FimParts) -> FimParts | None:
        """`parts` cut as this plan cut the last request, or None when the text it dropped
        changed (or a file, the repository or the path did)."""
        if (parts.files != self.files or parts.repo_name != self.repo_name
                or parts.path != self.path
                or len(parts.prefix) < self.prefix_drop or len(parts.suffix) < self.suffix_drop
                or not parts.prefix.startswith(self.dropped_head)
                or not parts.suffix.endswith(self.dropped_tail)):
            return None
        suffix = parts.suffix[:len(parts.suffix) - self.suffix_drop]
        return FimParts(parts.prefix[self.prefix_drop:], suffix, parts.files[:self.kept_files],
                        parts.repo_name, parts.path)


def _key(parts: FimParts, budget: int) -> tuple[int, str, str, str | None]:
    return budget, parts.prefix[:_KEY_CHARS], parts.suffix[-_KEY_CHARS:], parts.path


class TrimPlans:
    """The last trim plan per editor (bounded, least recently used out first; thread-safe)."""

    def __init__(self, max_plans: int = _MAX_PLANS, max_chars: int = _MAX_CHARS):
        self._plans: OrderedDict[tuple[int, str, str, str | None], TrimPlan] = OrderedDict()
        self._lock = threading.Lock()
        self._max = max_plans
        self._max_chars = max_chars
        self._chars = 0

    def find(self, parts: FimParts, budget: int) -> TrimPlan | None:
        key = _key(parts, budget)
        with self._lock:
            plan = self._plans.get(key)
            if plan is not None:
                self._plans.move_to_end(key)
        return plan

    def remember(self, parts: FimParts, kept: FimParts, budget: int, tokens: int) -> None:
        """Keep the cuts that turned `parts` into `kept` (`kept.prefix` a tail of the prefix,
        `kept.suffix` a head of the suffix, `kept.files` the first files)."""
        pre = len(parts.prefix) - len(kept.prefix)
        suf = len(parts.suffix) - len(kept.suffix)
        if (pre < 0 or suf < 0 or not parts.prefix.endswith(kept.prefix)
                or not parts.suffix.startswith(kept.suffix)):
            return
        plan = TrimPlan(pre, suf, len(kept.files), parts.prefix[:pre],
                        parts.suffix[len(parts.suffix) - suf:], parts.files, parts.repo_name,
                        parts.path, tokens)
        key = _key(parts, budget)
        size = _size(plan)
        if size > self._max_chars:
            return
        with self._lock:
            old = self._plans.pop(key, None)
            if old is not None:
                self._chars -= _size(old)
            self._plans[key] = plan
            self._chars += size
            while len(self._plans) > self._max or self._chars > self._max_chars:
                _, dropped = self._plans.popitem(last=False)
                self._chars -= _size(dropped)

    def clear(self) -> None:
        with self._lock:
            self._plans.clear()
            self._chars = 0


def _size(plan: TrimPlan) -> int:
    """Characters a plan holds on its own (the files are the request's, shared)."""
    return len(plan.dropped_head) + len(plan.dropped_tail) + 2 * _KEY_CHARS
