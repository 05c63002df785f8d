"""Fitting a rendered prompt into a deployment's window, trimming FIM context when allowed.

The order of evidence is cheapest first: the UTF-8 byte bound proves most fits for free; only
when it is not enough do we count (exactly with a tokenizer, conservatively without). A FIM
request that still does not fit loses far-away context first: whole repository files (the last
listed first), then the lines of prefix and suffix farthest from the cursor. The FIM sentinels are
never cut, because we trim the parts and render again rather than cutting the rendered text.
"""

from __future__ import annotations

from itertools import accumulate
from typing import NamedTuple

from .render import FILE_SEP, FimParts, Rendered, render_fim
from .tokens import CountKind, TokenCounter, utf8_length

__all__ = ["Fit", "NoFit", "PromptCounts", "TrimReport", "fit_prompt"]

_MAX_REFITS = 6


class TrimReport(NamedTuple):
    """What trimming removed to make a FIM request fit."""

    dropped_files: tuple[str, ...]
    prefix_lines_dropped: int
    suffix_lines_dropped: int
    chars_dropped: int
    tokens_before: int
    tokens_after: int

    def describe(self) -> str:
        bits = []
        if self.dropped_files:
            bits.append(f"dropped {len(self.dropped_files)} file(s)")
        if self.prefix_lines_dropped:
            bits.append(f"{self.prefix_lines_dropped} prefix line(s)")
        if self.suffix_lines_dropped:
            bits.append(f"{self.suffix_lines_dropped} suffix line(s)")
        what = ", ".join(bits) or f"{self.chars_dropped} chars"
        return f"trimmed {what}: {self.tokens_before} -> {self.tokens_after} tokens"


class Fit(NamedTuple):
    """A prompt that fits: its token count and how that count is known."""

    rendered: Rendered
    prompt_tokens: int
    count_kind: CountKind
    trimmed: TrimReport | None = None


class NoFit(NamedTuple):
    reason: str
    prompt_tokens: int
    count_kind: CountKind


class PromptCounts:
    """Counts for one request, memoised: many candidates share a window or a rendered prompt."""

    __slots__ = ("_counts", "_fits", "counter")

    def __init__(self, counter: TokenCounter):
        self.counter = counter
        self._counts: dict[str, int] = {}
        self._fits: dict[tuple[str, int, bool], Fit | NoFit] = {}

    def count(self, text: str) -> tuple[int, CountKind]:
        n = self._counts.get(text)
        if n is None:
            n = self._counts[text] = self.counter.count(text)
        return n, ("exact" if self.counter.exact else "estimate")


def fit_prompt(
    rendered: Rendered,
    *,
    window: int,
    max_tokens: int,
    counts: PromptCounts,
    allow_trim: bool = True,
) -> Fit | NoFit:
    """Fit `rendered` plus `max_tokens` of output into `window` tokens."""
    # Keyed by the prompt text (whose hash Python caches), not the object: a freed Rendered's
    # id can come back for a different prompt.
    key = (rendered.prompt, window - max_tokens, allow_trim)
    cached = counts._fits.get(key)
    if cached is not None:
        return cached
    result = _fit(rendered, window, max_tokens, counts, allow_trim)
    counts._fits[key] = result
    return result


def _fit(rendered: Rendered, window: int, max_tokens: int, counts: PromptCounts,
         allow_trim: bool) -> Fit | NoFit:
    budget = window - max_tokens
    bound = utf8_length(rendered.prompt)
    if bound <= budget:
        return Fit(rendered, bound, "bound")
    n, kind = counts.count(rendered.prompt)
    if n <= budget:
        return Fit(rendered, n, kind)
    too_big = f"prompt {n} tokens + max_tokens {max_tokens} > window {window}"
    if budget <= 0:
        return NoFit(f"max_tokens {max_tokens} leaves no room in window {window}", n, kind)
    if rendered.mode != "fim" or rendered.fim is None:
        return NoFit(too_big + " (only fill-in-the-middle requests can be trimmed)", n, kind)
    if not allow_trim:
        return NoFit(too_big + " (trimming not allowed)", n, kind)
    trimmed = _trim_fim(rendered, rendered.fim, budget, n, counts)
    if trimmed is None:
        return NoFit(too_big + " even after trimming all context", n, kind)
    return trimmed


def _trim_fim(rendered: Rendered, parts: FimParts, budget: int, before: int,
              counts: PromptCounts) -> Fit | None:
    """Count each piece once, choose the cuts by arithmetic over those counts, then verify the
    trimmed prompt with one exact count (again only if joins at the cuts cost more than planned).
    """
    counter = counts.counter
    kind: CountKind = "exact" if counter.exact else "estimate"
    frame, _ = counts.count(render_fim(FimParts("", "", (), parts.repo_name, parts.path)).prompt)
    # +1: a file separator stands before <fim_prefix> whenever files are kept.
    available = budget - frame - 1
    file_costs = [counts.count(f"{FILE_SEP}{f.path}\n{f.text}")[0] for f in parts.files]
    pieces = _PieceCounts(counter)
    pre_total = pieces.total(parts.prefix)
    suf_total = pieces.total(parts.suffix)
    for _ in range(_MAX_REFITS):
        if available <= 0:
            return None
        candidate = _allocate(parts, available, file_costs, pre_total, suf_total, pieces)
        new_rendered = render_fim(candidate, ())._replace(stop=rendered.stop)
        n, _ = counts.count(new_rendered.prompt)
        if n <= budget:
            report = TrimReport(
                dropped_files=tuple(f.path for f in parts.files[len(candidate.files):]),
                prefix_lines_dropped=_lines_dropped(parts.prefix, candidate.prefix),
                suffix_lines_dropped=_lines_dropped(parts.suffix, candidate.suffix),
                chars_dropped=len(rendered.prompt) - len(new_rendered.prompt),
                tokens_before=before,
                tokens_after=n,
            )
            return Fit(new_rendered, n, kind, report)
        # Counts of pieces differ a little from the whole text's count where pieces join:
        # shrink by the observed overshoot (at least one token) and allocate again.
        available -= max(1, n - budget)
    return None


def _lines_dropped(full: str, kept: str) -> int:
    return len(full.splitlines(True)) - len(kept.splitlines(True))


def _allocate(parts: FimParts, available: int, file_costs: list[int], pre_total: int,
              suf_total: int, pieces: _PieceCounts) -> FimParts:
    code = pre_total + suf_total
    kept_files = len(parts.files)
    files_total = sum(file_costs)
    while kept_files and code + files_total > available:
        kept_files -= 1
        files_total -= file_costs[kept_files]
    if code <= available:
        return parts._replace(files=parts.files[:kept_files])
    # Keep the lines nearest the cursor; the suffix gets at least a quarter of the room
    # (or all it needs), the prefix the rest. One token per cut is kept back for the join.
    suf_room = min(suf_total, max(available // 4, available - pre_total))
    pre_room = available - suf_room
    prefix = pieces.keep_tail(parts.prefix, pre_room - 1)
    suffix = pieces.keep_head(parts.suffix, suf_room - 1) if suf_room < suf_total \
        else parts.suffix
    return FimParts(prefix, suffix, (), parts.repo_name, parts.path)


class _PieceCounts:
    """Per-line (or per-block) counts of a text, each counted once, and cuts chosen over them.

    With an exact counter that can report cacheable pieces (`TokenizerCounter.costs`), blocks are
    counted (cached) and only the block where the cut falls is split into lines; otherwise each
    line is counted, as the estimator does not need pieces cut at safe places."""

    def __init__(self, counter: TokenCounter):
        resolve = getattr(counter, "resolve", None)
        inner = resolve() if callable(resolve) else counter
        self._counter: TokenCounter = inner
        self._costs = getattr(inner, "costs", None)
        self._memo: dict[tuple[str, bool], tuple[list[int], list[int]]] = {}

    def total(self, text: str) -> int:
        return sum(self.units(text, fine=False)[1])

    def units(self, text: str, *, fine: bool) -> tuple[list[int], list[int]]:
        """(line starts, costs): unit i is text[starts[i]:starts[i+1]]; starts[0] == 0."""
        key = (text, fine)
        got = self._memo.get(key)
        if got is None:
            got = self._memo[key] = self._units(text, fine)
        return got

    def _units(self, text: str, fine: bool) -> tuple[list[int], list[int]]:
        if not text:
            return [0], [0]
        if self._costs is None:
            lines = text.splitlines(keepends=True)
            offsets = list(accumulate((len(x) for x in lines[:-1]), initial=0))
            return offsets, self._counter.count_many(lines)
        cuts, costs = self._costs(text, fine=fine)
        # A safe cut sits in the indentation of a line; the unit starts where that line does.
        starts: list[int] = []
        merged: list[int] = []
        for cut, cost in zip(cuts, costs, strict=True):
            start = text.rfind("\n", 0, cut + 1) + 1 if cut else 0
            if starts and start <= starts[-1]:
                merged[-1] += cost
            else:
                starts.append(start)
                merged.append(cost)
        return starts, merged

    def keep_tail(self, text: str, room: int) -> str:
        """The longest run of whole lines ending `text` that costs at most `room`."""
        if room <= 0 or not text:
            return ""
        starts, costs = self.units(text, fine=False)
        used, k = 0, len(costs)
        while k and used + costs[k - 1] <= room:
            k -= 1
            used += costs[k]
        if k == 0:
            return text
        lo, hi = starts[k - 1], starts[k] if k < len(starts) else len(text)
        sub_starts, sub_costs = self.units(text[lo:hi], fine=True)
        j = len(sub_costs)
        while j and used + sub_costs[j - 1] <= room:
            j -= 1
            used += sub_costs[j]
        if j < len(sub_costs):
            return text[lo + sub_starts[j]:]
        if hi < len(text):
            return text[hi:]
        # The cursor's own line is too long: keep its end, cut by characters.
        line = text[lo + sub_starts[-1]:]
        keep = len(line) * room // max(sub_costs[-1], 1)
        return line[len(line) - keep:] if keep else ""

    def keep_head(self, text: str, room: int) -> str:
        """The longest run of whole lines starting `text` that costs at most `room`."""
        if room <= 0 or not text:
            return ""
        starts, costs = self.units(text, fine=False)
        used, k = 0, 0
        while k < len(costs) and used + costs[k] <= room:
            used += costs[k]
            k += 1
        if k == len(costs):
            return text
        lo, hi = starts[k], starts[k + 1] if k + 1 < len(starts) else len(text)
        sub_starts, sub_costs = self.units(text[lo:hi], fine=True)
        j = 0
        while j < len(sub_costs) and used + sub_costs[j] <= room:
            used += sub_costs[j]
            j += 1
        if j == len(sub_costs):
            return text[:hi]
        if j or lo:
            return text[:lo + sub_starts[j]]
        # The line after the cursor is too long: keep its start, cut by characters.
        end = sub_starts[1] if len(sub_starts) > 1 else hi
        return text[: end * room // max(sub_costs[0], 1)]
