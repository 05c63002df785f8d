"""Fitting a rendered prompt into a deployment's window, trimming FIM context when allowed.

The order of evidence is cheapest first: the UTF-8 byte bound proves most fits for free; only
when it is not enough do we count (exactly with a tokenizer, conservatively without). A FIM
request that still does not fit loses far-away context first: whole repository files (the last
listed first), then the lines of prefix and suffix farthest from the cursor. The FIM sentinels are
never cut, because we trim the parts and render again rather than cutting the rendered text.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from itertools import accumulate
from typing import NamedTuple, Protocol

from .render import FILE_SEP, FIM_MIDDLE, FIM_SUFFIX, REPO_NAME, FimParts, Rendered, render_fim
from .tokens import CountKind, TokenCounter, utf8_length
from .trim_plan import SLACK_TOKENS, TrimPlans

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
    """Counts for one request, memoised: many candidates share a window or a rendered prompt.

    With a counter that reports its cacheable pieces (`TokenizerCounter.costs`), a large text's
    pieces are kept too, so trimming reads the counts of prefix, suffix and files off the prompt's
    count instead of counting them again. `plans` are the router's trim plans, kept between
    requests (see `trim_plan`).

    Memos are keyed by the text's id, and each entry holds its text (so the id cannot be taken
    by another object while it is there): the candidates of one request share its rendered
    prompt object, and hashing a 32 KB prompt costs more than a count found in the cache."""

    __slots__ = ("_bound", "_costs", "_counts", "_fits", "_pieces", "counter", "plans")

    def __init__(self, counter: TokenCounter, plans: TrimPlans | None = None):
        self.counter = counter
        self.plans = plans
        self._counts: dict[int, tuple[str, int]] = {}
        self._fits: dict[tuple[int, int, bool], tuple[str, Fit | NoFit]] = {}
        self._pieces: dict[int, tuple[str, tuple[list[int], list[int]]]] = {}
        self._costs: tuple[_Costs | None] | None = None  # None: not looked up yet
        self._bound: tuple[str, int] = ("", 0)

    def bound(self, text: str) -> int:
        """`text`'s UTF-8 length, the byte bound (one encoding for every window of a non-ASCII
        prompt)."""
        last = self._bound
        if last[0] is not text:
            last = self._bound = (text, utf8_length(text))
        return last[1]

    def count(self, text: str) -> tuple[int, CountKind]:
        got = self._counts.get(id(text))
        if got is not None:
            n = got[1]
        else:
            if len(text) >= _PIECES_FROM and (costs := self.costs_function()) is not None:
                pieces = costs(text, fine=False)
                self._pieces[id(text)] = (text, pieces)
                n = sum(pieces[1])
            else:
                n = self.counter.count(text)
            self._counts[id(text)] = (text, n)
        return n, ("exact" if self.counter.exact else "estimate")

    def pieces(self, text: str) -> tuple[list[int], list[int]] | None:
        """Where the counted pieces of `text` start and their counts, when the counter has them."""
        self.count(text)
        got = self._pieces.get(id(text))
        return got[1] if got is not None else None

    def costs_function(self) -> _Costs | None:
        if self._costs is None:
            resolve = getattr(self.counter, "resolve", None)
            inner = resolve() if callable(resolve) else self.counter
            self._costs = (getattr(inner, "costs", None),)
        return self._costs[0]


class _Costs(Protocol):
    def __call__(self, text: str, *, fine: bool) -> tuple[list[int], list[int]]: ...


# Below this a text is counted whole: its pieces would only matter for trimming a huge prompt.
_PIECES_FROM = 4096


def fit_prompt(
    rendered: Rendered,
    *,
    window: int,
    max_tokens: int,
    counts: PromptCounts,
    allow_trim: bool = True,
) -> Fit | NoFit:
    """Fit `rendered` plus `max_tokens` of output into `window` tokens."""
    prompt = rendered.prompt
    if len(prompt) <= window - max_tokens and prompt.isascii():
        return Fit(rendered, len(prompt), "bound")  # the byte bound, as `_fit` would find it
    # Keyed by the prompt's id; the entry holds the prompt, so a freed one's id cannot come back
    # for a different prompt while the entry lives.
    key = (id(prompt), window - max_tokens, allow_trim)
    cached = counts._fits.get(key)
    if cached is not None:
        return cached[1]
    result = _fit(rendered, window, max_tokens, counts, allow_trim)
    counts._fits[key] = (prompt, result)
    return result


def _fit(rendered: Rendered, window: int, max_tokens: int, counts: PromptCounts,
         allow_trim: bool) -> Fit | NoFit:
    budget = window - max_tokens
    bound = counts.bound(rendered.prompt)
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
    plans = counts.plans
    if plans is not None:
        reused = _reuse_plan(plans, rendered, rendered.fim, budget, n, counts)
        if reused is not None:
            return reused
    trimmed = None
    if plans is not None:
        # A plan to be reused leaves a little room (under 2% of the budget), so that the next
        # keystrokes still fit under the same cuts instead of planning again every few.
        trimmed = _trim_fim(rendered, rendered.fim, budget - min(SLACK_TOKENS, budget // 64),
                            n, counts)
    if trimmed is None:
        trimmed = _trim_fim(rendered, rendered.fim, budget, n, counts)
    if trimmed is None:
        return NoFit(too_big + " even after trimming all context", n, kind)
    if plans is not None and trimmed.rendered.fim is not None:
        plans.remember(rendered.fim, trimmed.rendered.fim, budget, trimmed.prompt_tokens)
    return trimmed


def _reuse_plan(plans: TrimPlans, rendered: Rendered, parts: FimParts, budget: int, before: int,
                counts: PromptCounts) -> Fit | None:
    """The last request's cuts applied to this one, when they still drop the same text and the
    result, counted exactly, fits and keeps about as much as the last plan did."""
    plan = plans.find(parts, budget)
    if plan is None:
        return None
    kept = plan.apply(parts)
    if kept is None:
        return None
    new_rendered = render_fim(kept, ())._replace(stop=rendered.stop)
    n, kind = counts.count(new_rendered.prompt)
    if not plan.tokens - SLACK_TOKENS <= n <= budget:
        return None
    return Fit(new_rendered, n, kind, _report(rendered, parts, new_rendered, kept, before, n))


def _report(rendered: Rendered, parts: FimParts, new_rendered: Rendered, kept: FimParts,
            before: int, after: int) -> TrimReport:
    return TrimReport(
        dropped_files=tuple(f.path for f in parts.files[len(kept.files):]),
        prefix_lines_dropped=parts.prefix.count("\n", 0, len(parts.prefix) - len(kept.prefix)),
        suffix_lines_dropped=_suffix_lines_dropped(parts.suffix, kept.suffix),
        chars_dropped=len(rendered.prompt) - len(new_rendered.prompt),
        tokens_before=before,
        tokens_after=after,
    )


def _trim_fim(rendered: Rendered, parts: FimParts, budget: int, before: int,
              counts: PromptCounts) -> Fit | None:
    """Count each piece once, choose the cuts by arithmetic over those counts, then verify the
    trimmed prompt with one exact count (again only if joins at the cuts cost more than planned).
    """
    kind: CountKind = "exact" if counts.counter.exact else "estimate"
    frame, _ = counts.count(render_fim(FimParts("", "", (), parts.repo_name, parts.path)).prompt)
    # +1: a file separator stands before <fim_prefix> whenever files are kept.
    available = budget - frame - 1
    lines = _LineCosts(counts, rendered.prompt, parts)
    for _ in range(_MAX_REFITS):
        if available <= 0:
            return None
        candidate = _allocate(parts, available, lines)
        new_rendered = render_fim(candidate, ())._replace(stop=rendered.stop)
        n, _ = counts.count(new_rendered.prompt)
        if n <= budget:
            return Fit(new_rendered, n, kind,
                       _report(rendered, parts, new_rendered, candidate, before, n))
        # Counts of pieces differ a little from the whole text's count where pieces join:
        # shrink by the observed overshoot (at least one token) and allocate again.
        available -= max(1, n - budget)
    return None


def _suffix_lines_dropped(full: str, kept: str) -> int:
    tail = full[len(kept):]
    whole = tail.count("\n") + (1 if tail and not tail.endswith("\n") else 0)
    return whole - (1 if kept and not kept.endswith("\n") else 0)


def _allocate(parts: FimParts, available: int, lines: _LineCosts) -> FimParts:
    pre_total, suf_total = lines.prefix_total, lines.suffix_total
    code = pre_total + suf_total
    kept_files = len(parts.files)
    files_total = sum(lines.file_costs)
    while kept_files and code + files_total > available:
        kept_files -= 1
        files_total -= lines.file_costs[kept_files]
    if code <= available:
        return parts._replace(files=parts.files[:kept_files])
    # Keep the lines nearest the cursor; the suffix gets at least a quarter of the room
    # (or all it needs), the prefix the rest. One token per cut is kept back for the join.
    suf_room = min(suf_total, max(available // 4, available - pre_total))
    pre_room = available - suf_room
    prefix = lines.keep_tail(pre_room - 1)
    suffix = lines.keep_head(suf_room - 1) if suf_room < suf_total else parts.suffix
    return FimParts(prefix, suffix, (), parts.repo_name, parts.path)


_Units = tuple[list[int], list[int]]  # (line starts, costs); unit i is text[s[i]:s[i+1]]


class _LineCosts:
    """Counts per block of lines of a FIM request's prefix, suffix and files, read off the pieces
    its prompt was counted in (no new count); a cut is chosen over them, and only the block it
    falls in is split into lines. A counter without pieces (the estimator) counts each line."""

    def __init__(self, counts: PromptCounts, prompt: str, parts: FimParts):
        self._counts = counts
        self._parts = parts
        self._costs = counts.costs_function()
        pieces = counts.pieces(prompt) if self._costs is not None else None
        # Offsets of prefix, suffix and files in the prompt, as render_fim lays them out.
        suf_hi = len(prompt) - len(FIM_MIDDLE)
        suf_lo = suf_hi - len(parts.suffix)
        pre_hi = suf_lo - len(FIM_SUFFIX)
        pre_lo = pre_hi - len(parts.prefix)
        if pieces is None:
            self._pre = self._lines(parts.prefix)
            self._suf = self._lines(parts.suffix)
            self.file_costs = counts.counter.count_many(
                [f"{FILE_SEP}{f.path}\n{f.text}" for f in parts.files])
        else:
            self._pre = _region(pieces, prompt, pre_lo, pre_hi)
            self._suf = _region(pieces, prompt, suf_lo, suf_hi)
            at = len(REPO_NAME) + len(parts.repo_name) if parts.repo_name else 0
            self.file_costs = []
            for f in parts.files:
                end = at + len(FILE_SEP) + len(f.path) + 1 + len(f.text)
                self.file_costs.append(sum(_region(pieces, prompt, at, end)[1]))
                at = end
        self.prefix_total = sum(self._pre[1])
        self.suffix_total = sum(self._suf[1])

    def _lines(self, text: str) -> _Units:
        if not text:
            return [0], [0]
        if self._costs is not None:
            cuts, costs = self._costs(text, fine=True)
            return _to_line_starts(text, cuts, costs)
        lines = text.splitlines(keepends=True)
        starts = list(accumulate((len(x) for x in lines[:-1]), initial=0))
        return starts, self._counts.counter.count_many(lines)

    def keep_tail(self, room: int) -> str:
        """The longest run of whole lines ending the prefix that costs at most `room`."""
        text = self._parts.prefix
        if room <= 0 or not text:
            return ""
        starts, costs = self._pre
        used, k = 0, len(costs)
        while k and used + costs[k - 1] <= room:
            k -= 1
            used += costs[k]
        if k == 0:
            return text
        lo, hi = starts[k - 1], starts[k] if k < len(starts) else len(text)
        sub_starts, sub_costs = self._lines(text[lo:hi])
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

    def keep_head(self, room: int) -> str:
        """The longest run of whole lines starting the suffix that costs at most `room`."""
        text = self._parts.suffix
        if room <= 0 or not text:
            return ""
        starts, costs = self._suf
        used, k = 0, 0
        while k < len(costs) and used + costs[k] <= room:
            used += costs[k]
            k += 1
        if k == len(costs):
            return text
        lo, hi = starts[k], starts[k + 1] if k + 1 < len(starts) else len(text)
        sub_starts, sub_costs = self._lines(text[lo:hi])
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


def _region(pieces: tuple[list[int], list[int]], prompt: str, lo: int, hi: int) -> _Units:
    """The pieces of `prompt[lo:hi]` as line units of that text. A region always ends at a
    special token, so no piece crosses its end; one that crosses its start (the path line before
    the prefix) is charged in full, which errs on the safe side."""
    starts, costs = pieces
    if lo >= hi:
        return [0], [0]
    first = bisect_right(starts, lo) - 1
    last = bisect_left(starts, hi)
    cuts = [max(0, s - lo) for s in starts[first:last]]
    return _to_line_starts(prompt[lo:hi], cuts, costs[first:last])


def _to_line_starts(text: str, cuts: list[int], costs: list[int]) -> _Units:
    """A safe cut sits in the indentation of a line; its unit starts where that line does."""
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
