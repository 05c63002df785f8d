"""Token counting against the real StarCoder 2 tokenizer."""

from __future__ import annotations

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


@pytest.mark.parametrize("text", [
    "", "a", "😀" * 50, "中文字符" * 20, "0123456789" * 30, " " * 2000, "\n" * 500,
    "<fim_prefix><fim_suffix><fim_middle>", "Привет мир", "\t\tx\r\n",
])
def test_byte_length_bounds_the_true_count(exact_counter: TokenizerCounter, text: str) -> None:
    assert exact_counter.count(text) <= utf8_length(text)


# The estimate (tight on code, not a bound) is tested in tests/routing/test_estimate.py.


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
    with pytest.raises(ConfigError, match=r"STARCODER_ROUTER_TOKENIZER=.*no tokenizer\.json"):
        LazyCounter().count("x")


@pytest.mark.parametrize("where", ["missing.json", "empty-folder", ""])
def test_a_wrong_env_var_fails_when_the_router_is_built(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, where: str) -> None:
    from starcoder_router import AsyncRouter, Router

    (tmp_path / "empty-folder").mkdir()
    value = str(tmp_path / where) if where else str(tmp_path / "empty-folder" / "x")
    monkeypatch.setenv("STARCODER_ROUTER_TOKENIZER", value)
    for build in (Router, AsyncRouter):
        with pytest.raises(ConfigError, match=r"STARCODER_ROUTER_TOKENIZER=.*no tokenizer\.json"):
            build(env={})
    with pytest.raises(ConfigError, match="STARCODER_ROUTER_TOKENIZER"):
        load_token_counter(None)


def test_an_env_var_without_the_extra_fails_when_the_router_is_built(
        monkeypatch: pytest.MonkeyPatch, tokenizer_path: Path) -> None:
    import sys

    from starcoder_router import MissingDependencyError, Router

    monkeypatch.setenv("STARCODER_ROUTER_TOKENIZER", str(tokenizer_path))
    monkeypatch.setitem(sys.modules, "tokenizers", None)
    with pytest.raises(MissingDependencyError, match=r"STARCODER_ROUTER_TOKENIZER.*\[tokenizer\]"):
        Router(env={})


def test_exact_counter_repr_shows_source_only(exact_counter: TokenizerCounter) -> None:
    assert "tokenizer.json" in repr(exact_counter)
