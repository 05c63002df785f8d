"""Rendering requests into StarCoder 2's formats."""

from __future__ import annotations

import random

import pytest

from starcoder_router import CompletionRequest, InvalidRequestError, TokenizerCounter
from starcoder_router._routing.render import (
    CHAT_STOPS,
    FIM_STOPS,
    PROMPT_STOPS,
    escape_special_tokens,
    render,
)


def test_prompt_is_sent_as_given() -> None:
    r = render(CompletionRequest(prompt="def fib(n):"))
    assert r.mode == "prompt"
    assert r.prompt == "def fib(n):"
    assert r.stop == PROMPT_STOPS


def test_fim_psm_layout(exact_counter: TokenizerCounter) -> None:
    r = render(CompletionRequest(prefix="def f(x):\n    ", suffix="\n    return y"))
    assert r.prompt == "<fim_prefix>def f(x):\n    <fim_suffix>\n    return y<fim_middle>"
    ids = exact_counter.encode(r.prompt)
    assert ids[0] == 1 and ids[-1] == 2 and ids.count(3) == 1
    assert r.stop == FIM_STOPS


def test_fim_with_repository_context() -> None:
    r = render(CompletionRequest(
        prefix="import util\n", suffix="", repo_name="acme/app", path="app/main.py",
        files=[("app/util.py", "def helper():\n    pass\n"), ("README.md", "# app\n")],
    ))
    assert r.prompt == (
        "<repo_name>acme/app"
        "<file_sep>app/util.py\ndef helper():\n    pass\n"
        "<file_sep>README.md\n# app\n"
        "<file_sep><fim_prefix>app/main.py\nimport util\n<fim_suffix><fim_middle>"
    )
    assert r.fim is not None and r.fim.path == "app/main.py"


def test_instruct_template_with_system_and_turns() -> None:
    r = render(CompletionRequest(messages=[
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Write fib."},
        {"role": "assistant", "content": "def fib(n): ..."},
        {"role": "user", "content": "Now iterative."},
    ]))
    assert r.prompt == (
        # The template has no place for a system message: it leads the first instruction.
        "<|endoftext|>You are an exceptionally intelligent coding assistant that consistently "
        "delivers accurate and reliable responses to user instructions.\n\n"
        "### Instruction\nBe brief.\n\nWrite fib.\n\n### Response\n"
        "def fib(n): ...<|endoftext|>\n\n### Instruction\nNow iterative.\n\n### Response\n"
    )
    assert r.stop == CHAT_STOPS


def test_instruct_default_preamble_costs_about_32_tokens(exact_counter: TokenizerCounter) -> None:
    r = render(CompletionRequest(messages=[{"role": "user", "content": "x"}]))
    assert r.prompt.startswith("<|endoftext|>You are an exceptionally intelligent coding")
    assert 28 <= exact_counter.count(r.prompt) <= 36


def test_user_stops_come_first_without_duplicates() -> None:
    r = render(CompletionRequest(prefix="a", suffix="b", stop=["\n\n", "<file_sep>"]))
    assert r.stop[:2] == ("\n\n", "<file_sep>")
    assert len(r.stop) == len(set(r.stop))


def test_special_tokens_in_fim_text_are_escaped(exact_counter: TokenizerCounter) -> None:
    r = render(CompletionRequest(prefix='EOS = "<|endoftext|>"\n', suffix="<fim_middle>"))
    ids = exact_counter.encode(r.prompt)
    # Only our own three sentinels are control tokens; the user's strings became plain text.
    assert [i for i in ids if i < 38] == [1, 3, 2]
    assert "<\u200b|endoftext|>" in r.prompt


def test_special_tokens_in_raw_prompt_are_kept_by_default() -> None:
    r = render(CompletionRequest(prompt="<fim_prefix>a<fim_suffix>b<fim_middle>"))
    assert r.prompt == "<fim_prefix>a<fim_suffix>b<fim_middle>"


@pytest.mark.parametrize("prompt", [
    "<fim_prefix>a<fim_suffix>b<fim_middle>",  # PSM, as llm-ls writes it
    "<fim_suffix>b<fim_prefix>a<fim_middle>",  # SPM
    "<file_sep>x.py\n<fim_prefix>a<fim_suffix><fim_middle>",
])
def test_raw_prompt_in_fim_format_gets_the_fim_stops(prompt: str) -> None:
    r = render(CompletionRequest(prompt=prompt, stop=["\n\n"]))
    assert r.prompt == prompt
    assert r.stop == ("\n\n", *FIM_STOPS)


@pytest.mark.parametrize("prompt", ["def f(", "a <fim_pad> b", "<fim_prefix>a<fim_suffix>"])
def test_raw_prompt_fim_stops_only_for_sentinels_kept(prompt: str) -> None:
    kept = render(CompletionRequest(prompt=prompt))
    assert kept.stop == (FIM_STOPS if "<fim_prefix>" in prompt else PROMPT_STOPS)
    escaped = render(CompletionRequest(prompt=prompt, special_tokens="escape"))
    assert escaped.stop == PROMPT_STOPS  # escaped sentinels are plain text


def test_reject_names_the_token_and_field() -> None:
    with pytest.raises(InvalidRequestError, match=r"suffix contains .*<file_sep>.* offset 3"):
        render(CompletionRequest(prefix="x", suffix="abc<file_sep>", special_tokens="reject"))


def test_escape_is_idempotent_and_leaves_plain_text() -> None:
    text = "a < b and <fim_pad> <notatoken>"
    once = escape_special_tokens(text)
    assert escape_special_tokens(once) == once
    assert "<notatoken>" in once and "a < b" in once


@pytest.mark.parametrize("fields", [
    {},
    {"prompt": "a", "prefix": "b"},
    {"prompt": "a", "messages": [{"role": "user", "content": "x"}]},
    {"suffix": "x"},
    {"prompt": "a", "files": [("p", "t")]},
    {"messages": []},
    {"messages": [{"role": "assistant", "content": "x"}]},
    {"prompt": "a", "max_tokens": 0},
    {"prompt": "a", "temperature": 3},
    {"prompt": "a", "stop": [""]},
    {"prompt": "a", "response_format": {"type": "json_schema"}},
    {"prompt": "a", "unknown_field": 1},
])
def test_bad_requests_raise_our_error(fields: dict[str, object]) -> None:
    with pytest.raises(InvalidRequestError):
        CompletionRequest(**fields)  # type: ignore[arg-type]


def test_response_format_accepts_openai_shapes() -> None:
    req = CompletionRequest(prompt="a", response_format={
        "type": "json_schema",
        "json_schema": {"name": "person", "schema": {"type": "object"}, "strict": False},
    })
    fmt = req.response_format
    assert fmt is not None
    assert (fmt.type, fmt.name, fmt.json_schema, fmt.strict) == (
        "json_schema", "person", {"type": "object"}, False)
    assert CompletionRequest(prompt="a", response_format="json").response_format is not None


def test_a_request_renders_once_and_its_copy_anew() -> None:
    """The async router renders a large request to count it off the loop, then to route it: the
    second render is the first one's result; a changed copy (another object) renders anew."""
    req = CompletionRequest(prefix="def f(<fim_middle>", suffix=")",
                            files=[("a.py", "x = 1\n")])
    first = render(req)
    assert render(req) is first
    other = req.model_copy(update={"prefix": "def g("})
    assert render(other).prompt == ("<file_sep>a.py\nx = 1\n<file_sep><fim_prefix>def g("
                                    "<fim_suffix>)<fim_middle>")
    assert render(req) == first


@pytest.mark.parametrize("seed", range(4))
def test_finding_control_tokens_matches_a_full_search(seed: int) -> None:
    """The scan from one "<" to the next finds the same first control token as the regex over the
    whole text, with few or many "<" in it."""
    from starcoder_router._routing.render import _SPECIAL_RE, SPECIAL_TOKENS, _find_special

    rng = random.Random(seed)
    atoms = ["<", "<<", "a < b", "x", "\n", "<fim_", "prefix>", "<pr>", "<pr_", "<|", "|>",
             *SPECIAL_TOKENS[::5]]
    for _ in range(2000):
        text = "".join(rng.choice(atoms) for _ in range(rng.randint(0, 60)))
        want, got = _SPECIAL_RE.search(text), _find_special(text)
        assert (got.span() if got else None) == (want.span() if want else None), text
