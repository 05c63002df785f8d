"""Exact counts that reuse work: text is cut where StarCoder 2's pre-tokenizer cannot merge across
the cut, and the counts of the pieces are cached.

Why a cut can be safe: BPE never merges across pre-tokenizer pieces, so when a cut falls on a
piece boundary that stays a boundary when the text is split there, the count of the text is the
sum of the counts of its parts. Special tokens are split out first (as `tokenizers` does), so each
one counts 1 and never joins its neighbours. Within plain text, take a whitespace run W that ends
just before an ASCII character x that is neither white space nor a digit. The GPT-2 split makes
`W[:-1]` one piece (`\\s+(?!\\S)` backs off by one character) and starts the next piece at `W[-1]`
(` ?\\p{L}+`, ` ?[^\\s\\p{L}\\p{N}]+` or a lone `\\s+`), and no piece reaches across: the cut just
before `W[-1]` is safe. Its left part still ends in `W[:-1]` taken whole (the run then ends the
text), and no part of the pattern looks behind. Sources: huggingface/tokenizers
`tokenizers/src/pre_tokenizers/byte_level.rs`, openai/gpt-2 `src/encoder.py`.

Editors' requests repeat almost all of their text, so pieces are blocks of lines cut at blank
lines (code's paragraphs; found by content, so an edit moves no cut elsewhere), and at every line
when a block would be long. The span an edit changed is looked up finer: its lines, and a long
line by its words (the cut before any white-space character that such an x follows), so a
keystroke costs the count of the word it changed. Test: tests/routing/test_count_cache.py checks
the sum against whole counts on real code and on random edits.

    cache = CountCache(engine.count_many)
    cache.count(big_prompt)          # counts each block once
    cache.count(big_prompt + "x")    # a dictionary look-up per block, then the changed block
"""

from __future__ import annotations

import itertools
import re
import threading
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

__all__ = ["CacheStats", "CountCache", "line_cuts"]

# A whitespace run containing a newline, then x. Cut = match end - 2, before the run's last char.
_LINE = re.compile(r"\n[\t\n\x0b\x0c\r ]*[!-/:-~]")
# Blocks end at an empty line; a blank line holding spaces is no block end, which only makes
# that block longer.
_BLANK = re.compile(r"\n\n[\t\n\x0b\x0c\r ]*[!-/:-~]")
# White space, then x: a cut before the white space.
_WORD = re.compile(r"[\t\n\x0b\x0c\r ][!-/:-~]")
_MAX_BLOCK = 2048
_RECENT_FROM = 4096
_RECENT_TEXTS = 512
_ENDS = 256  # characters of a text's head and tail that find its likely base
_MARGIN = 64  # more than the longest special token
_STEP = 4096
_FIRST_STEP = 64  # after a good hint the difference is usually near
_SCAN = 16  # below this a character loop beats another comparison
_ENTRY_OVERHEAD = 96  # bytes a cached entry costs beyond its text (key object, links, count)


class CacheStats(NamedTuple):
    hits: int
    misses: int
    evictions: int
    entries: int
    chars: int
    max_chars: int

    @property
    def hit_rate(self) -> float:
        looked = self.hits + self.misses
        return self.hits / looked if looked else 0.0


def line_cuts(text: str, start: int = 0, end: int | None = None) -> list[int]:
    """Safe cuts in `text[start:end]` at every line whose first non-blank character allows one."""
    stop = len(text) if end is None else end
    return [c for m in _LINE.finditer(text, start, stop) if (c := m.end() - 2) > start]


def word_cuts(text: str) -> list[int]:
    """Safe cuts in `text` before every white-space character that an ASCII character other than
    white space or a digit follows (the last character of its run)."""
    return [c for m in _WORD.finditer(text) if (c := m.start()) > 0]


def _blank_cuts(seg: str) -> list[int]:
    return [c for m in _BLANK.finditer(seg) if (c := m.end() - 2) > 0]


def _block_cuts(seg: str) -> list[int]:
    cuts = _blank_cuts(seg)
    if not cuts and len(seg) <= _MAX_BLOCK:
        return cuts
    out: list[int] = []
    prev = 0
    for c in [*cuts, len(seg)]:
        if c - prev > _MAX_BLOCK:
            out.extend(line_cuts(seg, prev, c))
        if c < len(seg):
            out.append(c)
        prev = c
    return out


def _common_prefix(x: str, y: str, hint: int = 0) -> int:
    """Length of the common prefix. `hint`: a length the prefix likely reaches (the last edit's
    place, for an editor's next request), tried first with one comparison.

    Python has no zero-copy view of a `str`, so each comparison copies a slice of `y` and compares
    it in place in `x` (`startswith` with a start: one copy, then memcmp)."""
    n = min(len(x), len(y))
    at = 0
    if hint > 0:
        guess = min(hint, n)
        if x.startswith(y[:guess]):
            at = guess
        else:
            n = guess  # the first difference lies before the guess
    step = _FIRST_STEP if at else _STEP
    while at < n:
        step = min(step, n - at)
        if not x.startswith(y[at:at + step], at):
            break
        at += step
        step = min(2 * step, _STEP)
    else:
        return n
    lo, hi = at, at + step - 1  # the first difference lies in x[at:at + step]
    while hi - lo > _SCAN:
        mid = (lo + hi + 1) // 2
        if x.startswith(y[lo:mid], lo):
            lo = mid
        else:
            hi = mid - 1
    while lo < hi and x[lo] == y[lo]:
        lo += 1
    return lo


def _common_suffix(x: str, y: str, limit: int, hint: int = 0) -> int:
    """Length of the common suffix, at most `limit`; `hint` as for `_common_prefix`."""
    lx, ly = len(x), len(y)
    n = limit
    k = 0
    if hint > 0:
        guess = min(hint, n)
        if x.endswith(y[ly - guess:]):
            k = guess
        else:
            n = guess
    step = _FIRST_STEP if k else _STEP
    while k < n:
        step = min(step, n - k)
        if not x.endswith(y[ly - k - step:ly - k], 0, lx - k):
            break
        k += step
        step = min(2 * step, _STEP)
    else:
        return n
    lo, hi = k, k + step - 1  # the first difference from the end lies in the last step
    while hi - lo > _SCAN:
        mid = (lo + hi + 1) // 2
        if x.endswith(y[ly - mid:ly - lo], 0, lx - lo):
            lo = mid
        else:
            hi = mid - 1
    while lo < hi and x[lx - lo - 1] == y[ly - lo - 1]:
        lo += 1
    return lo


_PER_END = 2
_SPLIT_FROM = 256  # characters: a changed block shorter than this is not cut into lines
_WORDS_FROM = 96  # characters: a changed line shorter than this is counted whole
_CLOSE = 256  # characters: a base that differs from a text by no more is taken at once
_HINT_BACK = 64  # characters: an editor's next edit may start this far before the last one


class _Recent(NamedTuple):
    """A large text counted lately, with its pieces, and the lengths of the head and tail it
    shared with the text it was counted from (0 if none): its edit lies between them, and an
    editor's next edit most likely at the same place."""

    text: str
    pieces: tuple[list[int], list[int]]
    head: int
    tail: int
    head_key: str  # text[:_ENDS] and text[-_ENDS:], as indexed (their hashes kept with them)
    tail_key: str


def _index(index: dict[str, tuple[str, ...]], key: str, text: str) -> None:
    index[key] = (text, *(t for t in index.get(key, ()) if t is not text))[:_PER_END]


def _unindex(index: dict[str, tuple[str, ...]], key: str, text: str) -> None:
    got = index.get(key)
    if got is None or not any(t is text for t in got):
        return
    rest = tuple(t for t in got if t is not text)
    if rest:
        index[key] = rest
    else:
        del index[key]


def _shared(text: str, base: _Recent) -> tuple[int, int]:
    """The lengths of the common head and the common tail (not overlapping it) of `text` and a
    recent text, tried first where that one's own edit was."""
    b = base.text
    head = _common_prefix(text, b, base.head - _HINT_BACK)
    return head, _common_suffix(text, b, min(len(text), len(b)) - head, base.tail - _HINT_BACK)


class CountCache:
    """Bounded, thread-safe cache of exact counts of text pieces, least recently used out first.

    `count_many` is the exact engine; it runs outside the lock (the engines release the GIL).
    `specials` are the tokenizer's special-token strings. Memory is bounded by `max_chars`: each
    entry is charged its length plus a fixed overhead, and pieces longer than a tenth of the bound
    are counted but not kept. Besides, large texts counted whole lately are kept with their pieces
    (at most `max_chars / 2` characters of them).
    """

    def __init__(self, count_many: Callable[[list[str]], list[int]], *,
                 specials: Sequence[str] = (), max_chars: int = 8 << 20):
        self._count_many = count_many
        # Longest first, so that a special token that starts another one never wins.
        ordered = sorted(specials, key=len, reverse=True)
        self._special = re.compile("|".join(map(re.escape, ordered))) if ordered else None
        self._lead = "<" if ordered and all(t.startswith("<") for t in ordered) else None
        self.max_chars = max_chars
        self._entries: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()
        self._chars = 0
        self._hits = self._misses = self._evictions = 0
        # Whole large texts counted lately, with their pieces: the router counts a prompt in a
        # worker thread and then routes it on the event loop, which finds it here; and the next
        # request of the same editor, found by its head or tail, reuses most of them. Keyed by
        # the text's id (the entry holds the text, so the id stays its own): hashing a 32 KB
        # prompt costs more than finding it by its ends and comparing.
        self._recent: OrderedDict[int, _Recent] = OrderedDict()
        self._recent_chars = 0
        # The last `_PER_END` texts with each head and tail, newest first: an editor's trimmed
        # prompt shares its head or tail with its untrimmed one, and each is best counted from
        # its own predecessor.
        self._by_head: dict[str, tuple[str, ...]] = {}
        self._by_tail: dict[str, tuple[str, ...]] = {}

    def count(self, text: str) -> int:
        if len(text) >= _RECENT_FROM:
            return sum(self.costs(text)[1])
        pieces, specials = self._pieces(text, fine=False)
        return specials + sum(self._lookup(pieces))

    def costs(self, text: str, *, fine: bool = False) -> tuple[list[int], list[int]]:
        """Offsets where the pieces of `text` start (the first is 0) and their exact counts, which
        add up to `count(text)`. `fine` cuts at every line that allows it, not only at blocks."""
        if fine or not _RECENT_FROM <= len(text) <= self.max_chars // 32:
            return self._costs(text, fine)
        n = len(text)
        head_key, tail_key = text[:_ENDS], text[-_ENDS:]
        bases: dict[int, _Recent] = {}
        with self._lock:
            recent = self._recent
            for b in (*self._by_head.get(head_key, ()), *self._by_tail.get(tail_key, ())):
                if b is text or (len(b) == n and b == text):
                    recent.move_to_end(id(b))
                    return recent[id(b)].pieces
                bases[id(b)] = recent[id(b)]
        got = None
        head = tail = 0
        if bases:
            # The base that shares most with `text`: an editor's last request rather than
            # another view of it (its trimmed or untrimmed prompt), which leaves more to count.
            # Nearest in length first: that is the last request, one keystroke away.
            order = sorted(bases.values(), key=lambda r: abs(len(r.text) - n)) \
                if len(bases) > 1 else bases.values()
            best = None
            for r in order:
                h, t = _shared(text, r)
                if best is None or h + t > head + tail:
                    head, tail, best = h, t, r
                if n - h - t <= _CLOSE:  # an edit at one place: no better base
                    break
            assert best is not None
            got = self._costs_from(text, best.text, best.pieces, head, tail)
        if got is None:
            got = self._costs(text, fine)
        self._remember(_Recent(text, got, head, tail, head_key, tail_key))
        return got

    def _remember(self, entry: _Recent) -> None:
        text = entry.text
        with self._lock:
            if id(text) in self._recent:
                return
            self._recent[id(text)] = entry
            _index(self._by_head, entry.head_key, text)
            _index(self._by_tail, entry.tail_key, text)
            self._recent_chars += len(text)
            while self._recent_chars > self.max_chars // 2 or len(self._recent) > _RECENT_TEXTS:
                _, old = self._recent.popitem(last=False)
                self._recent_chars -= len(old.text)
                _unindex(self._by_head, old.head_key, old.text)
                _unindex(self._by_tail, old.tail_key, old.text)

    def _costs_from(self, text: str, base: str, pieces: tuple[list[int], list[int]],
                    head: int, tail: int) -> tuple[list[int], list[int]] | None:
        """`text`'s pieces from those of a recent `base` it mostly shares: the pieces before
        and after the changed span are reused (shifted), only the span between is cut and
        counted. A reused boundary lies `_MARGIN` characters inside the shared text, further than
        the longest special token reaches, so it stays a safe cut in `text`."""
        if head + tail < len(text) // 2:
            return None
        starts, costs = pieces
        i = max(0, bisect_right(starts, head - _MARGIN) - 1)
        j = bisect_left(starts, len(base) - tail + _MARGIN)
        if j <= i:
            return None
        shift = len(text) - len(base)
        with self._lock:
            self._hits += i + len(starts) - j  # pieces reused count as hits
        lo, hi = starts[i], starts[j] + shift if j < len(starts) else len(text)
        mid_starts, mid_costs = (self._costs(text[lo:hi], False, by_line=True) if hi > lo
                                 else ([], []))
        out = starts[:i]
        out += map(lo.__add__, mid_starts)
        out += map(shift.__add__, starts[j:]) if shift else starts[j:]
        return out, [*costs[:i], *mid_costs, *costs[j:]]

    def _costs(self, text: str, fine: bool, *,
               by_line: bool = False) -> tuple[list[int], list[int]]:
        starts: list[int] = []
        for seg_start, seg, special in self._segments(text):
            if special:
                starts.append(seg_start)
                continue
            cuts = line_cuts(seg) if fine else _block_cuts(seg)
            starts.append(seg_start)
            starts.extend(seg_start + c for c in cuts)
        bounds = [*starts, len(text)]
        pieces = [text[a:b] for a, b in itertools.pairwise(bounds)]
        return starts, self._lookup(pieces, specials=self._special, by_line=by_line)

    def cheap(self, text: str) -> bool:
        """Whether counting `text` now would cost little: it is short, was counted whole lately,
        or shares its head or tail with a text that was (then only the changed span is cut)."""
        if len(text) < _RECENT_FROM or len(text) > self.max_chars // 32:
            return len(text) < _RECENT_FROM
        with self._lock:
            return text[:_ENDS] in self._by_head or text[-_ENDS:] in self._by_tail

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(self._hits, self._misses, self._evictions, len(self._entries),
                              self._chars, self.max_chars)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._recent.clear()
            self._by_head.clear()
            self._by_tail.clear()
            self._recent_chars = 0
            self._chars = 0

    def _segments(self, text: str) -> Iterable[tuple[int, str, bool]]:
        """(offset, text, is a special token) in order; special tokens split the text."""
        special, lead = self._special, self._lead
        if special is None or (lead is not None and lead not in text):
            return ((0, text, False),)
        if lead is None:
            return self._segments_slow(text, special)
        out: list[tuple[int, str, bool]] = []
        pos = 0
        # Every special token starts with "<": find those (fast) and try the pattern there only.
        at = text.find("<")
        while at >= 0:
            m = special.match(text, at)
            if m is None:
                at = text.find("<", at + 1)
                continue
            if at > pos:
                out.append((pos, text[pos:at], False))
            out.append((at, m.group(0), True))
            pos = m.end()
            at = text.find("<", pos)
        if pos < len(text):
            out.append((pos, text[pos:], False))
        return out

    @staticmethod
    def _segments_slow(text: str, special: re.Pattern[str]) -> list[tuple[int, str, bool]]:
        out: list[tuple[int, str, bool]] = []
        pos = 0
        for m in special.finditer(text):
            if m.start() > pos:
                out.append((pos, text[pos:m.start()], False))
            out.append((m.start(), m.group(0), True))
            pos = m.end()
        if pos < len(text):
            out.append((pos, text[pos:], False))
        return out

    def _pieces(self, text: str, *, fine: bool) -> tuple[list[str], int]:
        pieces: list[str] = []
        specials = 0
        for _, seg, special in self._segments(text):
            if special:
                specials += 1
                continue
            cuts = line_cuts(seg) if fine else _block_cuts(seg)
            if not cuts:
                pieces.append(seg)
                continue
            bounds = [0, *cuts, len(seg)]
            pieces.extend(seg[a:b] for a, b in itertools.pairwise(bounds))
        return pieces, specials

    def _lookup(self, pieces: list[str], specials: re.Pattern[str] | None = None, *,
                by_line: bool = False) -> list[int]:
        """The counts of `pieces`. With `by_line` (the span an edit changed), a missing block is
        looked up line by line (its safe line cuts) and only its missing lines are counted: an
        editor's keystroke then costs the count of one line, not of its block. A block still
        counts as one miss in the statistics."""
        out: list[int] = []
        missing: list[int] = []
        with self._lock:
            get, touch = self._entries.get, self._entries.move_to_end
            for i, p in enumerate(pieces):
                n = get(p)
                if n is None:
                    if specials is not None and specials.fullmatch(p):
                        n = 1
                    else:
                        missing.append(i)
                        n = 0
                else:
                    touch(p)
                out.append(n)
            self._hits += len(pieces) - len(missing)
            self._misses += len(missing)
        if not missing:
            return out
        wanted = [pieces[i] for i in missing]
        counted = self._count_finer(wanted) if by_line else self._count_many(wanted)
        for i, n in zip(missing, counted, strict=True):
            out[i] = n
        self._store(zip(wanted, counted, strict=True))
        return out

    def _count_finer(self, texts: list[str]) -> list[int]:
        """Counts of texts an edit made, none in the cache: each one cut into lines (or a long
        line into words) is counted as the sum of its parts, looked up first; only the missing
        parts are counted (again finer where they allow it) and kept."""
        split: dict[int, list[str]] = {}
        for k, t in enumerate(texts):
            cuts = line_cuts(t) if len(t) >= _SPLIT_FROM else []
            if not cuts and len(t) >= _WORDS_FROM:
                cuts = word_cuts(t)
            if cuts:
                split[k] = [t[a:b] for a, b in itertools.pairwise([0, *cuts, len(t)])]
        whole = [t for k, t in enumerate(texts) if k not in split]
        counted = iter(self._count_many(whole) if whole else [])
        if not split:
            return list(counted)
        known: dict[str, int] = {}
        with self._lock:
            get = self._entries.get
            for parts in split.values():
                for part in parts:
                    n = get(part)
                    if n is not None:
                        known[part] = n
        todo = list(dict.fromkeys(x for parts in split.values() for x in parts if x not in known))
        if todo:
            found = self._count_finer(todo)
            known.update(zip(todo, found, strict=True))
            self._store(zip(todo, found, strict=True))
        return [sum(known[x] for x in split[k]) if k in split else next(counted)
                for k in range(len(texts))]

    def _store(self, items: Iterable[tuple[str, int]]) -> None:
        limit = self.max_chars // 10
        with self._lock:
            entries = self._entries
            for key, n in items:
                if len(key) > limit or key in entries:
                    continue
                entries[key] = n
                self._chars += len(key) + _ENTRY_OVERHEAD
            while self._chars > self.max_chars and entries:
                key, _ = entries.popitem(last=False)
                self._chars -= len(key) + _ENTRY_OVERHEAD
                self._evictions += 1
