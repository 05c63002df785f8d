"""Trim plans reused between an editor's requests: the next keystroke keeps the last cuts when the
text they dropped is unchanged, the reused prompt is counted exactly and fits, and any larger
change (a paste, a deletion, an edit in the dropped text, another file) plans from scratch."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from starcoder_router import CompletionRequest, TokenizerCounter
from starcoder_router._routing.fit import Fit, PromptCounts, fit_prompt
from starcoder_router._routing.render import render
from starcoder_router._routing.trim_plan import TrimPlans

WINDOW = 2048
MAX_TOKENS = 256


@pytest.fixture(scope="module")
def counter(tokenizer_path: Path) -> TokenizerCounter:
    return TokenizerCounter.from_file(tokenizer_path)


@pytest.fixture(scope="module")
def oracle(tokenizer_path: Path) -> TokenizerCounter:
    return TokenizerCounter(TokenizerCounter.from_file(tokenizer_path)._tokenizer,
                            engine="tokenizers", cache_chars=0)


def _code(seed: int, n: int) -> str:
    rng = random.Random(seed)
    return "".join(f"def f{i}(x):\n    y = x * {rng.randint(0, 999)}\n    return y + {i}\n\n"
                   for i in range(n))


PREFIX, SUFFIX = _code(1, 260), _code(2, 90)


def _fit(counter: TokenizerCounter, plans: TrimPlans | None, prefix: str, suffix: str,
         files: list[dict[str, str]] | None = None) -> Fit:
    fields: dict = {"prefix": prefix, "suffix": suffix, "max_tokens": MAX_TOKENS}
    if files:
        fields.update(files=files, path="pkg/current.py")
    got = fit_prompt(render(CompletionRequest(**fields)), window=WINDOW, max_tokens=MAX_TOKENS,
                     counts=PromptCounts(counter, plans))
    assert isinstance(got, Fit)
    assert got.trimmed is not None
    return got


def _reused(plans: TrimPlans, monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Records, per fit, whether a plan was reused (no trimming from scratch)."""
    from starcoder_router._routing import fit

    seen: list[bool] = []
    real = fit._trim_fim

    def trim(*args: object) -> object:
        seen.append(False)
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(fit, "_trim_fim", trim)
    return seen


def test_typing_reuses_the_cuts_and_stays_exact(counter: TokenizerCounter,
                                                oracle: TokenizerCounter,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    plans = TrimPlans()
    first = _fit(counter, plans, PREFIX, SUFFIX)
    scratch = _reused(plans, monkeypatch)
    prefix = PREFIX
    for ch in "abcdef":  # a token or two: within the room the first trim left
        prefix += ch
        got = _fit(counter, plans, prefix, SUFFIX)
        assert got.prompt_tokens == oracle.count(got.rendered.prompt)
        assert got.prompt_tokens <= WINDOW - MAX_TOKENS
        assert got.rendered.fim is not None and first.rendered.fim is not None
        # The same text dropped; the cursor's neighbourhood is the only change.
        assert prefix.endswith(got.rendered.fim.prefix)
        assert len(prefix) - len(got.rendered.fim.prefix) == \
            len(PREFIX) - len(first.rendered.fim.prefix)
        assert got.trimmed is not None and first.trimmed is not None
        assert got.trimmed.prefix_lines_dropped == first.trimmed.prefix_lines_dropped
        assert got.trimmed.tokens_before == oracle.count(render(CompletionRequest(
            prefix=prefix, suffix=SUFFIX, max_tokens=MAX_TOKENS)).prompt)
    assert scratch == []  # no keystroke trimmed from scratch


@pytest.mark.parametrize("change", ["edit dropped head", "edit dropped tail", "big deletion",
                                    "overflow"])
def test_larger_changes_plan_again(counter: TokenizerCounter, oracle: TokenizerCounter,
                                   monkeypatch: pytest.MonkeyPatch, change: str) -> None:
    plans = TrimPlans()
    _fit(counter, plans, PREFIX, SUFFIX)
    scratch = _reused(plans, monkeypatch)
    prefix, suffix = PREFIX, SUFFIX
    if change == "edit dropped head":
        prefix = "import os\n" + prefix[10:]
    elif change == "edit dropped tail":
        suffix = suffix[:-20] + "# changed tail here\n"
    elif change == "big deletion":
        # The kept prefix loses about half its tokens: reusing the cuts would waste the room.
        prefix = prefix[:len(prefix) - 2500] + "\n"
    else:
        prefix += _code(3, 30)  # more than the room left under the budget
    got = _fit(counter, plans, prefix, suffix)
    assert scratch == [False]
    assert got.prompt_tokens == oracle.count(got.rendered.prompt) <= WINDOW - MAX_TOKENS


def test_files_must_match(counter: TokenizerCounter, monkeypatch: pytest.MonkeyPatch) -> None:
    plans = TrimPlans()
    files = [{"path": "pkg/a.py", "text": _code(4, 40)}, {"path": "pkg/b.py", "text": _code(5, 40)}]
    _fit(counter, plans, PREFIX, SUFFIX, files)
    scratch = _reused(plans, monkeypatch)
    _fit(counter, plans, PREFIX + "x", SUFFIX, files)
    assert scratch == []
    changed = [files[0], {"path": "pkg/b.py", "text": _code(6, 40)}]
    _fit(counter, plans, PREFIX + "xy", SUFFIX, changed)
    assert scratch == [False]


def test_plans_are_bounded() -> None:
    plans = TrimPlans(max_plans=3)
    from starcoder_router._routing.render import FimParts

    for i in range(10):
        parts = FimParts(f"p{i}" * 100, "s" * 100)
        plans.remember(parts, FimParts(parts.prefix[50:], "s" * 60), 100, 90)
    assert len(plans._plans) == 3
    # And by the text they hold: a plan keeps what it dropped.
    small = TrimPlans(max_chars=2000)
    for i in range(10):
        parts = FimParts(f"q{i}" * 300, "s" * 100)
        small.remember(parts, FimParts(parts.prefix[500:], "s" * 60), 100, 90)
    assert 0 < len(small._plans) <= 2 and small._chars <= 2000
    # A plan whose kept text is not a tail/head of the request is never stored.
    plans.clear()
    plans.remember(FimParts("abc", "def"), FimParts("zz", "d"), 100, 10)
    assert len(plans._plans) == 0


@settings(max_examples=25, deadline=None)
@given(edits=st.lists(st.tuples(st.integers(0, 400), st.sampled_from(
    ["x", "\n", "    ", " = ", "\n\n", "é", "<fim_suffix>", ""]), st.integers(0, 3)),
    min_size=1, max_size=6))
def test_any_edit_near_the_cursor_fits_exactly(counter: TokenizerCounter,
                                               oracle: TokenizerCounter,
                                               edits: list[tuple[int, str, int]]) -> None:
    plans = TrimPlans()
    prefix = PREFIX
    _fit(counter, plans, prefix, SUFFIX)
    for back, text, cut in edits:
        at = len(prefix) - back
        prefix = prefix[:at] + text + prefix[at + cut:]
        got = _fit(counter, plans, prefix, SUFFIX)
        assert got.prompt_tokens == oracle.count(got.rendered.prompt) <= WINDOW - MAX_TOKENS
        # Cut from the request as rendered (special tokens in the text are escaped).
        whole = render(CompletionRequest(prefix=prefix, suffix=SUFFIX, max_tokens=MAX_TOKENS))
        assert got.rendered.fim is not None and whole.fim is not None
        assert whole.fim.prefix.endswith(got.rendered.fim.prefix)
        assert whole.fim.suffix.startswith(got.rendered.fim.suffix)
