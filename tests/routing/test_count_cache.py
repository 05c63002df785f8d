"""The count cache: pieces cut where the pre-tokenizer cannot merge add up to the exact count;
the cache stays exact under edits, eviction and threads, within its memory bound."""

from __future__ import annotations

import itertools
import random
import threading
from pathlib import Path

import pytest

from starcoder_router import TokenizerCounter
from starcoder_router._routing import count_cache
from starcoder_router._routing.count_cache import CountCache, _block_cuts, line_cuts, word_cuts
from starcoder_router._routing.render import SPECIAL_TOKENS


@pytest.fixture(scope="module")
def oracle(tokenizer_path: Path) -> TokenizerCounter:
    """Plain `tokenizers`, whole texts, no cache: the reference every count is checked against."""
    return TokenizerCounter(TokenizerCounter.from_file(tokenizer_path)._tokenizer,
                            engine="tokenizers", cache_chars=0)


def _counter(tokenizer_path: Path, **kw: int) -> TokenizerCounter:
    c = TokenizerCounter.from_file(tokenizer_path)
    return TokenizerCounter(c._tokenizer, **kw) if kw else c


# Text built from the characters that decide where pieces end: runs of every kind of white space
# before letters, digits and punctuation, Unicode spaces and digits, specials.
_ATOMS = [" ", "  ", "    ", "\t", "\n", "\n\n", "\r\n", "\n    ", "\n\t\t", " \n", "\x0b", "\x0c",
          "\u00a0", "\u3000", "\u2028", "\x1c", "x", "def", "é", "日本", "1", "٣", "²", "(", ")",
          "'s", "'", "#", "//", "!", "~", "}", "😀", "<fim_middle>", "<file_sep>", "<", "_a"]


def _fuzz_text(rng: random.Random) -> str:
    return "".join(rng.choice(_ATOMS) for _ in range(rng.randint(1, 80)))


def test_every_cut_is_safe_on_fuzzed_text(oracle: TokenizerCounter) -> None:
    rng = random.Random(1)
    for _ in range(1500):
        text = _fuzz_text(rng).replace("<fim_middle>", "").replace("<file_sep>", "")
        for c in line_cuts(text):
            assert 0 < c < len(text)
            left, right = text[:c], text[c:]
            assert oracle.count(left) + oracle.count(right) == oracle.count(text), (text, c)


def test_every_word_cut_is_safe_on_fuzzed_text(oracle: TokenizerCounter) -> None:
    rng = random.Random(11)
    for _ in range(1500):
        text = _fuzz_text(rng).replace("<fim_middle>", "").replace("<file_sep>", "")
        cuts = word_cuts(text)
        assert set(line_cuts(text)) <= set(cuts)
        for c in cuts:
            assert 0 < c < len(text)
            left, right = text[:c], text[c:]
            assert oracle.count(left) + oracle.count(right) == oracle.count(text), (text, c)


def test_a_keystroke_in_a_long_line_counts_the_word_it_changed(
        oracle: TokenizerCounter, tokenizer_path: Path) -> None:
    counter = _counter(tokenizer_path)
    counted: list[str] = []
    engine = counter._cache._count_many
    counter._cache._count_many = lambda texts: counted.extend(texts) or engine(texts)
    body = "".join(f"def f{i}(x):\n    return x + {i}\n\n" for i in range(300))
    line = "    value = compute(alpha, beta, gamma) + other(delta, epsilon) * factor(zeta, eta)"
    text = body + line + "\n" + body
    assert counter.count(text) == oracle.count(text)
    for at, typed in ((len(body) + 40, "x"), (len(body) + 41, "y"), (len(body) + 10, " z")):
        text = text[:at] + typed + text[at:]
        counted.clear()
        assert counter.count(text) == oracle.count(text)
        assert counted and max(map(len, counted)) < 16, counted


def test_pieces_add_up_on_real_code(oracle: TokenizerCounter, tokenizer_path: Path,
                                    code_corpus: dict[str, list[tuple[str, str]]]) -> None:
    counter = _counter(tokenizer_path)
    for files in code_corpus.values():
        for path, text in files[::3]:
            want = oracle.count(text)
            assert counter.count(text) == want, path
            for fine in (False, True):
                starts, costs = counter.costs(text, fine=fine)
                assert starts[0] == 0 and starts == sorted(set(starts))
                assert sum(costs) == want, (path, fine)


def test_blocks_are_short_and_found_by_content() -> None:
    code = "".join(f"def f{i}(x):\n    y = x + {i}\n    return y\n\n" for i in range(400))
    cuts = _block_cuts(code)
    bounds = [0, *cuts, len(code)]
    assert max(b - a for a, b in itertools.pairwise(bounds)) <= 2048
    # An edit moves no cut before it and shifts the ones after it by its length.
    edited = code[:5000] + "zz" + code[5000:]
    assert _block_cuts(edited) == [c for c in cuts if c < 5000] + [c + 2 for c in cuts if c >= 5000]
    # A long block without blank lines is cut at its lines.
    dense = "".join(f"x{i} = {i}\n" for i in range(2000))
    assert len(_block_cuts(dense)) > 1000


def test_edits_stay_exact_and_reuse_counts(oracle: TokenizerCounter, tokenizer_path: Path,
                                           code_corpus: dict[str, list[tuple[str, str]]]) -> None:
    """An editor's requests: the previous text plus an edit somewhere. Counts stay exact and all
    but the edited block come from the cache."""
    counter = _counter(tokenizer_path)
    rng = random.Random(3)
    text = "\n".join(t for _, t in code_corpus["python"][:4])[:40_000]
    counter.count(text)
    for _ in range(30):
        at = rng.randrange(len(text))
        edit = rng.choice(["x", "\n", "    ", "1", " = ", "\n\n", "<fim_suffix>", "é"])
        text = text[:at] + edit + text[at + rng.randint(0, 3):]
        before = counter.cache_stats()
        assert counter.count(text) == oracle.count(text)
        after = counter.cache_stats()
        assert after.misses - before.misses <= 4
        assert after.hits - before.hits >= 10
    assert counter.cache_stats().hit_rate > 0.9


def test_special_tokens_count_one_each(oracle: TokenizerCounter, tokenizer_path: Path) -> None:
    counter = _counter(tokenizer_path)
    body = "def f(x):\n    return x\n\n" * 80
    text = f"<repo_name>r<file_sep>a.py\n{body}<file_sep><fim_prefix>{body}<fim_suffix>  " \
           f"{body}<fim_middle>" + "".join(SPECIAL_TOKENS)
    assert counter.count(text) == oracle.count(text)
    assert sum(counter.costs(text)[1]) == oracle.count(text)


def test_eviction_keeps_memory_bounded_and_counts_exact(oracle: TokenizerCounter,
                                                        tokenizer_path: Path) -> None:
    counter = _counter(tokenizer_path, cache_chars=400_000)
    rng = random.Random(5)
    for i in range(80):
        text = "".join(f"def g{i}_{j}(a):\n    return a * {rng.randint(0, 99)}\n\n"
                       for j in range(200))
        assert counter.count(text) == oracle.count(text)
        stats = counter.cache_stats()
        assert stats.chars <= stats.max_chars
    stats = counter.cache_stats()
    assert stats.evictions > 0 and 0 < stats.entries < 4000
    # Whole texts kept to be reused by the next, similar one: bounded too.
    assert 0 < counter._cache._recent_chars <= stats.max_chars // 2


def test_least_recently_used_goes_first() -> None:
    cache = CountCache(lambda texts: [len(t) for t in texts], max_chars=3 * (1 + 96))
    for key in ("a", "b", "c"):
        cache.count(key)
    cache.count("a")  # a is now the most recent
    cache.count("d")  # evicts b
    before = cache.stats()
    cache.count("a")
    cache.count("c")
    assert cache.stats().hits == before.hits + 2
    cache.count("b")
    assert cache.stats().misses == before.misses + 1


def test_pieces_larger_than_a_tenth_of_the_bound_are_not_kept() -> None:
    cache = CountCache(lambda texts: [len(t) for t in texts], max_chars=10_000)
    assert cache.count("x" * 5000) == 5000
    assert cache.stats().entries == 0


def test_threads_share_one_cache(oracle: TokenizerCounter, tokenizer_path: Path,
                                 code_corpus: dict[str, list[tuple[str, str]]]) -> None:
    """Eight threads count overlapping texts through one small cache (so entries are evicted
    while others read them); every count is exact and the books balance."""
    counter = _counter(tokenizer_path, cache_chars=60_000)
    texts = [t for _, t in code_corpus["c"][:12]]
    want = [oracle.count(t) for t in texts]
    errors: list[str] = []
    start = threading.Barrier(8)

    def work(seed: int) -> None:
        rng = random.Random(seed)
        start.wait()
        for _ in range(40):
            i = rng.randrange(len(texts))
            got = counter.count(texts[i])
            if got != want[i]:
                errors.append(f"text {i}: {got} != {want[i]}")

    threads = [threading.Thread(target=work, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    stats = counter.cache_stats()
    assert stats.chars <= stats.max_chars and stats.evictions > 0 and stats.hits > 0
    counter.clear_cache()
    assert counter.cache_stats().entries == 0


def test_reused_pieces_stay_exact_when_edits_make_or_break_special_tokens(
        oracle: TokenizerCounter, tokenizer_path: Path) -> None:
    """A text counted from a recent one it mostly shares: edits that split a special token,
    join two halves into one, or type next to a reused boundary, on fuzzed text."""
    counter = _counter(tokenizer_path)
    rng = random.Random(9)
    halves = ["<fim_", "suffix>", "<file", "_sep>", "<", ">", "<|endoftext|>", "<fim_middle>"]
    lines = ["def f(x):\n", "    return x + 1\n", "\n", "\t\tif (a < b) {\n", "  9\n",
             "x = '日本'\n", "\n\n    ", "}\n", "// note\n", "\u00a0\n"]
    text = "".join(rng.choice(lines) for _ in range(700))
    for _ in range(120):
        at = rng.randrange(len(text))
        edit = rng.choice([*halves, *_ATOMS, ""])
        text = text[:at] + edit + text[at + rng.choice((0, 0, 1, 5)):]
        assert counter.count(text) == oracle.count(text)
        starts, costs = counter.costs(text)
        assert starts[0] == 0 and sum(costs) == oracle.count(text)
    assert counter.cache_stats().hit_rate > 0.8


class _Unhashable(str):
    """A text that refuses to be hashed: what the hot path must not do to a large prompt (a
    32 KB hash costs more than finding the text by its ends and comparing)."""

    def __hash__(self) -> int:
        raise AssertionError("a large text was hashed")


def test_large_texts_are_found_without_hashing_them(oracle: TokenizerCounter,
                                                    tokenizer_path: Path) -> None:
    counter = _counter(tokenizer_path)
    body = "".join(f"def f{i}(x):\n    return x + {i}\n\n" for i in range(400))
    first = _Unhashable(body)
    assert counter.count(first) == oracle.count(body)
    # The same text again (another object), then an editor's next request.
    assert counter.count(_Unhashable(body)) == oracle.count(body)
    nxt = body[:9000] + "y" + body[9000:]
    assert counter.count(_Unhashable(nxt)) == oracle.count(nxt)
    assert counter.counts_cheaply(_Unhashable(nxt + "z"))


def _naive_prefix(x: str, y: str) -> int:
    n = 0
    while n < min(len(x), len(y)) and x[n] == y[n]:
        n += 1
    return n


def _naive_suffix(x: str, y: str, limit: int) -> int:
    n = 0
    while n < limit and x[len(x) - 1 - n] == y[len(y) - 1 - n]:
        n += 1
    return n


@pytest.mark.parametrize("steps", [(4096, 64, 16), (8, 2, 1), (32, 4, 3)])
def test_common_ends_are_exact_with_any_hint(steps: tuple[int, int, int],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The shared head and tail of two texts, whatever the hint (the last edit's place) says:
    right, too far, too short or absent; with small steps every branch of the search runs."""
    monkeypatch.setattr(count_cache, "_STEP", steps[0])
    monkeypatch.setattr(count_cache, "_FIRST_STEP", steps[1])
    monkeypatch.setattr(count_cache, "_SCAN", steps[2])
    rng = random.Random(21)
    for _ in range(3000):
        a = "".join(rng.choice("ab") for _ in range(rng.randint(0, 300)))
        middle = "".join(rng.choice("ab") for _ in range(rng.randint(0, 40)))
        b = (a[:rng.randint(0, len(a))] + middle
             + (a[-rng.randint(1, len(a)):] if a and rng.random() < 0.5 else ""))
        x, y = (a, b) if rng.random() < 0.5 else (b, a)
        hint = rng.choice([0, -5, rng.randint(0, 400)])
        head = count_cache._common_prefix(x, y, hint)
        assert head == _naive_prefix(x, y), (x, y, hint)
        limit = rng.choice([min(len(x), len(y)) - head, rng.randint(0, min(len(x), len(y)))])
        assert count_cache._common_suffix(x, y, limit, hint) == _naive_suffix(x, y, limit)
