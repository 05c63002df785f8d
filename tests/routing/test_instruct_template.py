"""The instruct prompt is byte for byte what StarCoder2-15B-Instruct's own chat template renders
(rendered here with Jinja the way `transformers.apply_chat_template` does), and system messages,
which that template refuses, are folded into the next instruction."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, NoReturn

import pytest

from starcoder_router._routing.render import render
from starcoder_router._routing.request import CompletionRequest

jinja2 = pytest.importorskip("jinja2")
sandbox = pytest.importorskip("jinja2.sandbox")

TEMPLATE = (Path(__file__).parent / "fixtures" / "starcoder2_instruct_chat_template.jinja")
EOS = "<|endoftext|>"


class TemplateError(Exception):
    pass


def _raise(message: str) -> NoReturn:
    raise TemplateError(message)


def apply_chat_template(messages: list[dict[str, str]]) -> str:
    # transformers compiles chat templates in a sandbox with trim_blocks and lstrip_blocks.
    env = sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise
    text: str = env.from_string(TEMPLATE.read_text()).render(
        messages=messages, bos_token=EOS, eos_token=EOS)
    return text


def ours(messages: list[dict[str, str]]) -> str:
    return render(CompletionRequest(messages=messages, special_tokens="keep")).prompt


def test_one_instruction() -> None:
    messages = [{"role": "user", "content": "Write fib."}]
    assert ours(messages) == apply_chat_template(messages)


def test_the_template_refuses_system_messages() -> None:
    with pytest.raises(TemplateError, match="System messages are not allowed"):
        apply_chat_template([{"role": "system", "content": "Be brief."},
                             {"role": "user", "content": "Write fib."}])


def test_a_system_message_leads_the_first_instruction() -> None:
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Write fib."},
                {"role": "assistant", "content": "def fib(n): ..."},
                {"role": "user", "content": "Now iterative."}]
    folded = [{"role": "user", "content": "Be brief.\n\nWrite fib."}, *messages[2:]]
    assert ours(messages) == apply_chat_template(folded)
    # Never a preamble the model did not see in training.
    assert ours(messages).startswith(EOS + "You are an exceptionally intelligent coding")


def test_a_system_message_before_a_response_becomes_an_instruction() -> None:
    messages = [{"role": "system", "content": "Answer in Rust."},
                {"role": "assistant", "content": "Ok."}, {"role": "user", "content": "fib"}]
    folded = [{"role": "user", "content": "Answer in Rust."}, *messages[1:]]
    assert ours(messages) == apply_chat_template(folded)


@pytest.mark.parametrize("seed", range(100))
def test_any_conversation_without_system_messages_matches(seed: int) -> None:
    rng = random.Random(seed)
    words = ["def", "x", "\n", "  ", "é", "### Response", "{", "}", "'", '"', "\\n"]
    messages: list[dict[str, Any]] = []
    for i in range(2 * rng.randint(0, 3) + 1):  # a request ends with the user
        role = "user" if i % 2 == 0 else "assistant"
        messages.append({"role": role,
                         "content": "".join(rng.choice(words) for _ in range(rng.randint(1, 8)))})
    assert ours(messages) == apply_chat_template(messages)
