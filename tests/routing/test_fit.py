"""Fitting prompts into windows, and trimming FIM context."""

from __future__ import annotations

import pytest

from starcoder_router import CompletionRequest, EstimatingCounter, TokenizerCounter
from starcoder_router._routing.fit import Fit, NoFit, PromptCounts, fit_prompt
from starcoder_router._routing.render import render


def _lines(n: int, tag: str) -> str:
    return "".join(f"{tag}_{i} = compute({i}, value={i * 7})\n" for i in range(n))


def test_short_prompt_fits_by_the_byte_bound(exact_counter: TokenizerCounter) -> None:
    r = render(CompletionRequest(prompt="def f(): pass", max_tokens=100))
    fit = fit_prompt(r, window=8192, max_tokens=100, counts=PromptCounts(exact_counter))
    assert isinstance(fit, Fit)
    assert fit.count_kind == "bound"
    assert fit.prompt_tokens == len("def f(): pass")


def test_counts_exactly_when_the_bound_is_not_enough(exact_counter: TokenizerCounter) -> None:
    text = "    return value\n" * 1000  # 17 KB, ~4k tokens
    r = render(CompletionRequest(prompt=text))
    fit = fit_prompt(r, window=8192, max_tokens=256, counts=PromptCounts(exact_counter))
    assert isinstance(fit, Fit)
    assert fit.count_kind == "exact"
    assert fit.prompt_tokens == exact_counter.count(text)


def test_raw_prompt_too_big_is_not_trimmed(exact_counter: TokenizerCounter) -> None:
    r = render(CompletionRequest(prompt=_lines(3000, "x")))
    fit = fit_prompt(r, window=16384, max_tokens=256, counts=PromptCounts(exact_counter))
    assert isinstance(fit, NoFit)
    assert "only fill-in-the-middle requests can be trimmed" in fit.reason


def test_fim_drops_far_files_first_then_far_lines(exact_counter: TokenizerCounter) -> None:
    req = CompletionRequest(
        prefix=_lines(300, "pre"), suffix=_lines(300, "suf"), repo_name="r", path="main.py",
        files=[("near.py", _lines(50, "near")), ("far.py", _lines(400, "far"))],
        max_tokens=128,
    )
    r = render(req)
    total = exact_counter.count(r.prompt)
    window = total - 2000 + 128  # must lose ~2000 tokens: the far file is enough
    fit = fit_prompt(r, window=window, max_tokens=128, counts=PromptCounts(exact_counter))
    assert isinstance(fit, Fit)
    assert fit.trimmed is not None
    assert fit.trimmed.dropped_files == ("far.py",)
    assert fit.trimmed.prefix_lines_dropped == 0
    assert fit.prompt_tokens == exact_counter.count(fit.rendered.prompt)
    assert fit.prompt_tokens + 128 <= window

    window = 3000
    fit = fit_prompt(r, window=window, max_tokens=128, counts=PromptCounts(exact_counter))
    assert isinstance(fit, Fit) and fit.trimmed is not None
    assert fit.trimmed.dropped_files == ("near.py", "far.py")
    assert fit.trimmed.prefix_lines_dropped > 0
    assert exact_counter.count(fit.rendered.prompt) + 128 <= window
    prompt = fit.rendered.prompt
    # Sentinels intact, in order; the lines nearest the cursor survive.
    assert prompt.startswith("<repo_name>r<file_sep><fim_prefix>main.py\n")
    assert prompt.index("<fim_prefix>") < prompt.index("<fim_suffix>") < \
        prompt.index("<fim_middle>")
    assert prompt.endswith("<fim_middle>")
    assert "pre_299 = compute(299" in prompt and "suf_0 = compute(0" in prompt
    assert "pre_0 = compute(0" not in prompt and "suf_299" not in prompt


@pytest.mark.parametrize("window", [600, 1000, 2500, 5000, 9000])
def test_trimmed_prompt_always_fits_exactly(exact_counter: TokenizerCounter, window: int) -> None:
    r = render(CompletionRequest(prefix=_lines(500, "a"), suffix=_lines(500, "b"),
                                 max_tokens=64))
    fit = fit_prompt(r, window=window, max_tokens=64, counts=PromptCounts(exact_counter))
    assert isinstance(fit, Fit)
    assert exact_counter.count(fit.rendered.prompt) + 64 <= window
    # and it does not throw away much more than needed
    assert exact_counter.count(fit.rendered.prompt) + 64 > window * 0.85


def test_trim_with_the_estimator_is_still_safe(exact_counter: TokenizerCounter) -> None:
    r = render(CompletionRequest(prefix=_lines(500, "a"), suffix=_lines(100, "b")))
    fit = fit_prompt(r, window=4096, max_tokens=256, counts=PromptCounts(EstimatingCounter()))
    assert isinstance(fit, Fit)
    assert fit.count_kind == "estimate"
    assert exact_counter.count(fit.rendered.prompt) + 256 <= 4096


def test_cursor_line_longer_than_the_window_is_cut_by_characters(
        exact_counter: TokenizerCounter) -> None:
    r = render(CompletionRequest(prefix="x = '" + "abc " * 4000, suffix="'\n", max_tokens=32))
    fit = fit_prompt(r, window=1024, max_tokens=32, counts=PromptCounts(exact_counter))
    assert isinstance(fit, Fit)
    assert fit.rendered.prompt.startswith("<fim_prefix>")
    assert "abc <fim_suffix>" in fit.rendered.prompt
    assert exact_counter.count(fit.rendered.prompt) + 32 <= 1024


def test_no_trimming_when_not_allowed(exact_counter: TokenizerCounter) -> None:
    r = render(CompletionRequest(prefix=_lines(2000, "a"), suffix=""))
    fit = fit_prompt(r, window=4096, max_tokens=64, counts=PromptCounts(exact_counter),
                     allow_trim=False)
    assert isinstance(fit, NoFit) and "trimming not allowed" in fit.reason


def test_max_tokens_alone_over_the_window(exact_counter: TokenizerCounter) -> None:
    r = render(CompletionRequest(prefix="a" * 10, suffix="", max_tokens=9000))
    fit = fit_prompt(r, window=8192, max_tokens=9000, counts=PromptCounts(exact_counter))
    assert isinstance(fit, NoFit) and "leaves no room" in fit.reason


def test_memo_tells_different_prompts_apart(exact_counter: TokenizerCounter) -> None:
    # A request's counts are shared by every decision made for it (re-fits after a context
    # error, budget downgrades): a cached verdict must belong to the prompt, not to an object
    # whose memory a later prompt may reuse.
    counts = PromptCounts(exact_counter)
    for _ in range(20):
        too_big = fit_prompt(render(CompletionRequest(prompt=_lines(3000, "x"))), window=4096,
                             max_tokens=64, counts=counts)
        assert isinstance(too_big, NoFit)
        small = fit_prompt(render(CompletionRequest(prompt="def f(): pass")), window=4096,
                           max_tokens=64, counts=counts)
        assert isinstance(small, Fit)


class _Unhashable(str):
    def __hash__(self) -> int:
        raise AssertionError("the prompt was hashed")


def test_a_large_prompt_is_fitted_and_trimmed_without_hashing_it(
        exact_counter: TokenizerCounter) -> None:
    """Candidates share the rendered prompt object, so the memos go by identity: hashing a
    32 KB prompt costs more than most of what routing it does."""
    r = render(CompletionRequest(prefix=_lines(900, "p"), suffix=_lines(100, "s")))
    r = r._replace(prompt=_Unhashable(r.prompt))
    counts = PromptCounts(exact_counter)
    for window in (16384, 8192, 8192):
        fit = fit_prompt(r, window=window, max_tokens=256, counts=counts)
        assert isinstance(fit, Fit) and fit.prompt_tokens <= window - 256
    assert counts.count(r.prompt)[0] == exact_counter.count(str(r.prompt))


def test_a_non_ascii_prompt_is_measured_once_for_every_window(
        exact_counter: TokenizerCounter, monkeypatch: pytest.MonkeyPatch) -> None:
    from starcoder_router._routing import fit as fit_module

    measured: list[int] = []
    real = fit_module.utf8_length
    monkeypatch.setattr(fit_module, "utf8_length",
                        lambda text: measured.append(len(text)) or real(text))
    r = render(CompletionRequest(prefix="# é\n" + _lines(900, "p"), suffix=""))
    counts = PromptCounts(exact_counter)
    for window in (16384, 8192, 4096):
        fit = fit_prompt(r, window=window, max_tokens=256, counts=counts)
        assert isinstance(fit, Fit) and fit.prompt_tokens <= window - 256
    assert measured == [len(r.prompt)]
    assert counts.bound(r.prompt) == len(r.prompt.encode())
