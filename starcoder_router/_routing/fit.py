"""Fitting a rendered prompt into a deployment's window, trimming FIM context when allowed.

The order of evidence is cheapest first: the UTF-8 byte bound proves most fits for free; only
when it is not enough do we count (exactly with a tokenizer, conservatively without). A FIM
request that still does not fit loses far-away context first: whole repository files (the last
listed first), then the lines of prefix and suffix farthest from the cursor. The FIM sentinels are
never cut, because we trim the parts and render again rather than cutting the rendered text.
"""

from __future__ import annotations

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
    counter = counts.counter
    kind: CountKind = "exact" if counter.exact else "estimate"
    frame, _ = counts.count(render_fim(FimParts("", "", (), parts.repo_name, parts.path)).prompt)
    # +1: a file separator stands before <fim_prefix> whenever files are kept.
    available = budget - frame - 1
    file_costs = counter.count_many([f"{FILE_SEP}{f.path}\n{f.text}" for f in parts.files])
    pre_lines = parts.prefix.splitlines(keepends=True)
    suf_lines = parts.suffix.splitlines(keepends=True)
    line_costs = counter.count_many(pre_lines + suf_lines)
    pre_costs, suf_costs = line_costs[: len(pre_lines)], line_costs[len(pre_lines):]

    for _ in range(_MAX_REFITS):
        if available <= 0:
            return None
        candidate = _allocate(parts, available, file_costs, pre_lines, pre_costs,
                              suf_lines, suf_costs)
        new_rendered = render_fim(candidate, ())._replace(stop=rendered.stop)
        n, _ = counts.count(new_rendered.prompt)
        if n <= budget:
            report = TrimReport(
                dropped_files=tuple(f.path for f in parts.files[len(candidate.files):]),
                prefix_lines_dropped=len(pre_lines) - len(candidate.prefix.splitlines(True)),
                suffix_lines_dropped=len(suf_lines) - len(candidate.suffix.splitlines(True)),
                chars_dropped=len(rendered.prompt) - len(new_rendered.prompt),
                tokens_before=before,
                tokens_after=n,
            )
            return Fit(new_rendered, n, kind, report)
        # Per-line counts differ a little from the whole text's count at line joins: shrink by
        # the observed overshoot (at least one token) and allocate again.
        available -= max(1, n - budget)
    return None


def _allocate(parts: FimParts, available: int, file_costs: list[int], pre_lines: list[str],
              pre_costs: list[int], suf_lines: list[str], suf_costs: list[int]) -> FimParts:
    pre_total, suf_total = sum(pre_costs), sum(suf_costs)
    code = pre_total + suf_total
    kept_files = len(parts.files)
    files_total = sum(file_costs)
    while kept_files and code + files_total > available:
        kept_files -= 1
        files_total -= file_costs[kept_files]
    if code <= available:
        return parts._replace(files=parts.files[:kept_files])
    # Keep the lines nearest the cursor; the suffix gets at least a quarter of the room
    # (or all it needs), the prefix the rest.
    suf_room = min(suf_total, max(available // 4, available - pre_total))
    pre_room = available - suf_room
    prefix = _keep_tail(pre_lines, pre_costs, pre_room)
    suffix = _keep_head(suf_lines, suf_costs, suf_room)
    return FimParts(prefix, suffix, (), parts.repo_name, parts.path)


def _keep_tail(lines: list[str], costs: list[int], room: int) -> str:
    used, start = 0, len(lines)
    while start > 0 and used + costs[start - 1] <= room:
        start -= 1
        used += costs[start]
    if start == len(lines) and lines and room > 0:
        # The cursor's own line is too long: keep its end, cut by characters.
        line, cost = lines[-1], max(costs[-1], 1)
        keep = max(0, len(line) * room // cost)
        return line[len(line) - keep:] if keep else ""
    return "".join(lines[start:])


def _keep_head(lines: list[str], costs: list[int], room: int) -> str:
    used, end = 0, 0
    while end < len(lines) and used + costs[end] <= room:
        used += costs[end]
        end += 1
    if end == 0 and lines and room > 0:
        line, cost = lines[0], max(costs[0], 1)
        return line[: len(line) * room // cost]
    return "".join(lines[:end])
