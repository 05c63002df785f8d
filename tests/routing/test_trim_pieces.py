"""Trimming from piece counts against the previous trimming, which counted every line and then
re-rendered and re-counted the whole prompt for each candidate window (kept below as the
reference): both fit, the new count is exact, no file the old way kept is dropped, the new cut keeps
at least as much code near the cursor, give or take a line; and it encodes far less text."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from starcoder_router import CompletionRequest, EstimatingCounter, TokenizerCounter
from starcoder_router._routing.fit import Fit, PromptCounts, TrimReport, fit_prompt
from starcoder_router._routing.render import FILE_SEP, FimParts, Rendered, render, render_fim
from starcoder_router._routing.tokens import CountKind

_MAX_REFITS = 6


class _Counting:
    """Counts the characters an exact counter is asked to count."""

    exact = True

    def __init__(self, inner: TokenizerCounter):
        self.inner = inner
        self.chars = 0

    def count(self, text: str) -> int:
        self.chars += len(text)
        return self.inner.count(text)

    def count_many(self, texts: list[str]) -> list[int]:
        self.chars += sum(map(len, texts))
        return self.inner.count_many(texts)


# --- the previous trimming (commit a8a563d, starcoder_router/_routing/fit.py), as reference ---
def old_trim_fim(rendered: Rendered, parts: FimParts, budget: int, before: int,
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
        candidate = _old_allocate(parts, available, file_costs, pre_lines, pre_costs,
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


def _old_allocate(parts: FimParts, available: int, file_costs: list[int], pre_lines: list[str],
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


def _old_fit(rendered: Rendered, window: int, max_tokens: int, counter: object) -> Fit | None:
    counts = PromptCounts(counter)  # type: ignore[arg-type]
    budget = window - max_tokens
    before, _ = counts.count(rendered.prompt)
    assert rendered.fim is not None
    return old_trim_fim(rendered, rendered.fim, budget, before, counts)


def _requests(corpus: dict[str, list[tuple[str, str]]]) -> list[CompletionRequest]:
    rng = random.Random(11)
    texts = [t for files in corpus.values() for _, t in files]
    out = []
    for i in range(14):
        doc = "\n".join(rng.sample(texts, 3))
        cursor = rng.randrange(len(doc) // 4, len(doc))
        files = [(f"lib/m{j}.c", rng.choice(texts)[:9000]) for j in range(i % 3)]
        out.append(CompletionRequest(prefix=doc[:cursor], suffix=doc[cursor:cursor + 12_000],
                                     files=files, path="src/cur.py" if i % 2 else None,
                                     repo_name="acme/x" if i % 4 == 1 else None,
                                     max_tokens=128))
    return out


@pytest.mark.parametrize("window", [2048, 4096, 8192])
def test_same_result_as_counting_every_candidate(
        tokenizer_path: Path, code_corpus: dict[str, list[tuple[str, str]]], window: int) -> None:
    exact = TokenizerCounter.from_file(tokenizer_path)
    oracle = TokenizerCounter(exact._tokenizer, engine="tokenizers", cache_chars=0)
    encoded = 0
    engine = exact._cache._count_many

    def tally(texts: list[str]) -> list[int]:
        nonlocal encoded
        encoded += sum(map(len, texts))
        return engine(texts)

    exact._cache._count_many = tally
    new_chars = old_chars = 0
    for req in _requests(code_corpus):
        r = render(req)
        if oracle.count(r.prompt) + 128 <= window:
            continue
        old_counter = _Counting(oracle)
        old = _old_fit(r, window, 128, old_counter)
        exact.clear_cache()
        encoded = 0
        new = fit_prompt(r, window=window, max_tokens=128, counts=PromptCounts(exact))
        new_chars += encoded
        assert isinstance(new, Fit) and new.trimmed is not None and old is not None
        assert old.trimmed is not None
        # Exact and fitting.
        assert new.prompt_tokens == oracle.count(new.rendered.prompt)
        assert new.prompt_tokens + 128 <= window
        # No file the old way kept is dropped, and at least as much code is kept, give or take
        # a line: the old sum of separately counted lines over-counted where lines join, so it
        # often cut more.
        assert set(new.trimmed.dropped_files) <= set(old.trimmed.dropped_files)
        assert new.trimmed.prefix_lines_dropped <= old.trimmed.prefix_lines_dropped + 2
        assert new.trimmed.suffix_lines_dropped <= old.trimmed.suffix_lines_dropped + 2
        assert new.prompt_tokens >= old.prompt_tokens - 40
        old_chars += old_counter.chars
    # Counted from pieces, from an empty cache: the engine encodes little more than the prompt
    # once; the old way counted every line, then each candidate prompt again.
    assert new_chars < 0.75 * old_chars


def test_the_estimator_still_trims_by_whole_lines(tokenizer_path: Path) -> None:
    body = "".join(f"value_{i} = compute({i})\n" for i in range(3000))
    r = render(CompletionRequest(prefix=body, suffix=body[:20_000], max_tokens=64))
    fit = fit_prompt(r, window=4096, max_tokens=64, counts=PromptCounts(EstimatingCounter()))
    assert isinstance(fit, Fit) and fit.count_kind == "estimate" and fit.trimmed is not None
    exact = TokenizerCounter.from_file(tokenizer_path)
    assert exact.count(fit.rendered.prompt) + 64 <= 4096
    assert fit.rendered.fim is not None
    kept_prefix, kept_suffix = fit.rendered.fim.prefix, fit.rendered.fim.suffix
    assert body.endswith(kept_prefix) and kept_prefix.startswith("value_")
    assert body.startswith(kept_suffix) and kept_suffix.endswith("\n")
    assert fit.trimmed.prefix_lines_dropped == 3000 - kept_prefix.count("\n")
