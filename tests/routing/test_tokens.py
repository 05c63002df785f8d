"""Token counting against the real StarCoder 2 tokenizer."""

from __future__ import annotations

import glob
import random
import sysconfig
from pathlib import Path

import pytest

from starcoder_router import (
    ConfigError,
    EstimatingCounter,
    TokenizerCounter,
    load_token_counter,
)
from starcoder_router._routing.render import SPECIAL_TOKENS
from starcoder_router._routing.tokens import LazyCounter, utf8_length

GOLDEN = [
    ("def hello_world():\n    print('hi')",
     [610, 17966, 100, 5879, 2284, 303, 1489, 482, 5001, 704]),
    ("<fim_prefix>def f(x):\n    <fim_suffix>\n    return y<fim_middle>",
     [1, 610, 315, 45, 125, 731, 294, 3, 303, 461, 553, 2]),
]


@pytest.mark.parametrize(("text", "ids"), GOLDEN)
def test_golden_ids(exact_counter: TokenizerCounter, text: str, ids: list[int]) -> None:
    assert exact_counter.encode(text) == ids
    assert exact_counter.count(text) == len(ids)


def test_digits_are_one_token_each(exact_counter: TokenizerCounter) -> None:
    ids = exact_counter.encode("x = 1234567")
    assert len(ids) == 3 + 7


@pytest.mark.parametrize(("index", "token"), list(enumerate(SPECIAL_TOKENS)))
def test_every_special_token_is_one_id(exact_counter: TokenizerCounter, index: int,
                                       token: str) -> None:
    assert exact_counter.encode(token) == [index]


def _code_chunks(limit: int = 1500) -> list[str]:
    """~2 KB chunks of real code on this machine (Python stdlib, C headers), cut at lines."""
    rng = random.Random(20261126)
    stdlib = sorted(glob.glob(str(Path(sysconfig.get_paths()["stdlib"]) / "**" / "*.py"),
                          recursive=True))
    headers = sorted(glob.glob("/usr/include/**/*.h", recursive=True))
    rng.shuffle(stdlib)
    rng.shuffle(headers)
    chunks: list[str] = []
    for files, share in ((stdlib, limit * 2 // 3), (headers, limit // 3)):
        taken = 0
        for name in files:
            try:
                text = Path(name).read_text(encoding="utf-8")[:40_000]
            except (UnicodeDecodeError, OSError):
                continue
            current = ""
            for line in text.splitlines(keepends=True):
                current += line
                if len(current) >= 2000:
                    chunks.append(current)
                    current = ""
                    taken += 1
            if taken >= share:
                break
    return chunks


def test_estimator_rarely_undercounts_real_code(exact_counter: TokenizerCounter) -> None:
    chunks = _code_chunks()
    assert len(chunks) >= 1000
    true = exact_counter.count_many(chunks)
    est = EstimatingCounter()
    under = [i for i, c in enumerate(chunks) if est.count(c) < true[i]]
    assert len(under) / len(chunks) < 0.01
    # It may over-count, but stays useful: typically within ~2.5x of the truth.
    ratios = sorted(est.count(c) / t for c, t in zip(chunks, true, strict=True))
    assert 1.0 < ratios[len(ratios) // 2] < 2.5


@pytest.mark.parametrize("text", [
    "", "a", "😀" * 50, "中文字符" * 20, "0123456789" * 30, " " * 2000, "\n" * 500,
    "<fim_prefix><fim_suffix><fim_middle>", "Привет мир", "\t\tx\r\n",
])
def test_byte_length_bounds_the_true_count(exact_counter: TokenizerCounter, text: str) -> None:
    assert exact_counter.count(text) <= utf8_length(text)


@pytest.mark.parametrize("text", [
    "😀" * 50, "中文字符" * 20, "0123456789" * 30, "x = 1\n" * 100, "[1, 2, 3]",
    "a[0] = b[1] + 2\n" * 50, "0x1F, 0x2A,\n" * 40,
])
def test_estimator_is_conservative_on_hard_text(exact_counter: TokenizerCounter,
                                                text: str) -> None:
    assert EstimatingCounter().count(text) >= exact_counter.count(text)


def test_load_from_path_and_directory(tokenizer_path: Path) -> None:
    assert load_token_counter(tokenizer_path).exact
    assert load_token_counter(str(tokenizer_path.parent)).exact


def test_false_means_estimate_only() -> None:
    counter = load_token_counter(False)
    assert isinstance(counter, EstimatingCounter)
    assert not counter.exact


def test_missing_path_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="neither an existing path nor a hub id"):
        load_token_counter(str(tmp_path / "nope" / "x" / "tokenizer.json"))


def test_lazy_counter_uses_env_var(monkeypatch: pytest.MonkeyPatch, tokenizer_path: Path,
                                   tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("STARCODER_ROUTER_TOKENIZER", str(tokenizer_path))
    lazy = load_token_counter(None)
    assert isinstance(lazy, LazyCounter)
    assert lazy.count("def f(x):") == 5
    assert lazy.exact


def test_lazy_counter_finds_the_hf_cache(monkeypatch: pytest.MonkeyPatch, tokenizer_path: Path,
                                         tmp_path: Path) -> None:
    snap = tmp_path / "hub" / "models--bigcode--starcoder2-3b" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    (snap / "tokenizer.json").write_bytes(tokenizer_path.read_bytes())
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    lazy = LazyCounter()
    assert lazy.exact
    assert lazy.count("def f(x):") == 5


def test_lazy_counter_falls_back_to_estimate(monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    lazy = LazyCounter()
    assert not lazy.exact
    assert lazy.count("def f(x):") >= 5


def test_wrong_env_var_fails_loudly(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STARCODER_ROUTER_TOKENIZER", str(tmp_path / "missing.json"))
    with pytest.raises(ConfigError, match=r"no tokenizer\.json"):
        LazyCounter().count("x")


def test_exact_counter_repr_shows_source_only(exact_counter: TokenizerCounter) -> None:
    assert "tokenizer.json" in repr(exact_counter)
