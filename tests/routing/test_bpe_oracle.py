"""The oracle: the tiktoken engine gives the ids `tokenizers` gives, on real code in three
languages, and routing picks the same deployments, counts and trims with either engine."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

from starcoder_router import (
    Catalog,
    CompletionRequest,
    MissingDependencyError,
    NoRouteError,
    Router,
    TokenizerCounter,
)
from starcoder_router._routing.render import SPECIAL_TOKENS

pytest.importorskip("tiktoken", reason="the tiktoken engine is the `fast` extra")
KEYS = {"FIREWORKS_API_KEY": "k", "DEEPINFRA_API_KEY": "k"}


@pytest.fixture(scope="module")
def engines(tokenizer_path: Path) -> tuple[TokenizerCounter, TokenizerCounter]:
    fast = TokenizerCounter.from_file(tokenizer_path)
    assert fast.engine == "tiktoken"
    slow = TokenizerCounter(fast._tokenizer, engine="tokenizers", cache_chars=0)
    return fast, slow


@pytest.mark.parametrize("language", ["python", "c", "javascript"])
def test_same_ids_token_for_token(engines: tuple[TokenizerCounter, TokenizerCounter],
                                  code_corpus: dict[str, list[tuple[str, str]]],
                                  language: str) -> None:
    fast, slow = engines
    for path, text in code_corpus[language]:
        assert fast.encode(text) == slow.encode(text), path


def test_same_ids_on_text_built_to_stress_the_split(
        engines: tuple[TokenizerCounter, TokenizerCounter]) -> None:
    """Whitespace runs before digits, Unicode digits and letters, contractions, CRLF, special
    tokens: the places where the folded regex could part from the two pre-tokenizers."""
    fast, slow = engines
    atoms = [" ", "  ", "\t", "\n", "\r\n", "\n\n    ", "   ", "1", "42", "٣", "²", "Ⅻ", "x", "é",
             "日本", "'s", "'ll", "'", "!=", "->", "(", "{", "#", "\u00a0", "\u3000", "\u2028",
             "\x0b", "\x1c", "😀", "_", "0x1F", "3.14", *SPECIAL_TOKENS[:8]]
    rng = random.Random(15)
    for _ in range(3000):
        text = "".join(rng.choice(atoms) for _ in range(rng.randint(1, 40)))
        assert fast.encode(text) == slow.encode(text), repr(text)


def test_without_tiktoken_counting_falls_back_to_tokenizers(
        tokenizer_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tiktoken", None)  # import now raises ImportError
    counter = TokenizerCounter.from_file(tokenizer_path)
    assert counter.engine == "tokenizers"
    assert counter.count("def f(x):\n    return x + 12\n") == 13
    with pytest.raises(MissingDependencyError, match=r"starcoder-router\[fast\]"):
        TokenizerCounter(counter._tokenizer, engine="tiktoken")


def _requests(corpus: dict[str, list[tuple[str, str]]]) -> list[CompletionRequest]:
    rng = random.Random(7)
    texts = [t for files in corpus.values() for _, t in files]
    out = []
    for i in range(24):
        doc = "\n".join(rng.sample(texts, 4))
        cursor = rng.randrange(len(doc) // 3, len(doc))
        files = [(f"lib/f{j}.py", rng.choice(texts)[:12_000]) for j in range(i % 3)]
        out.append(CompletionRequest(prefix=doc[:cursor], suffix=doc[cursor:cursor + 9000],
                                     files=files, path="src/main.py" if files else None,
                                     max_tokens=rng.choice((64, 256, 1024))))
    return out


def test_exact_picks_are_unchanged(engines: tuple[TokenizerCounter, TokenizerCounter],
                                   code_corpus: dict[str, list[tuple[str, str]]]) -> None:
    """The cached tiktoken counter and plain `tokenizers` (no cache) route real requests the
    same: same ranking, same exact counts, same trimmed prompts."""
    fast, slow = engines
    routers = [Router(catalog=Catalog.default(), env=KEYS, tokenizer=c) for c in (fast, slow)]
    for req in _requests(code_corpus):
        seen = []
        for router in routers:
            try:
                d = router.route(req)
            except NoRouteError as exc:
                d = exc.decision
            seen.append([(c.deployment.name, c.eligible, c.prompt_tokens, c.count_kind,
                          c.rendered.prompt if c.rendered else None) for c in d.ranked]
                        + [(c.deployment.name, c.reasons) for c in d.candidates])
        assert seen[0] == seen[1]


def test_the_plain_count_is_the_count_of_text_without_special_tokens(
        engines: tuple[TokenizerCounter, TokenizerCounter],
        code_corpus: dict[str, list[tuple[str, str]]]) -> None:
    """The count cache's pieces hold no special-token string (it cuts each one out), and for
    them the engine skips special-token matching; the count is the same."""
    fast, slow = engines
    engine = fast._fast
    assert engine is not None
    for language in ("python", "c"):
        for path, text in code_corpus[language][::4]:
            for line in text.splitlines(keepends=True)[:200]:
                assert engine.count_plain(line) == len(slow.encode(line)), (path, line)
    # With a special token inside, the plain count reads it as text: the cache never asks.
    assert engine.count_plain("<fim_middle>") > 1 == engine.count("<fim_middle>")
