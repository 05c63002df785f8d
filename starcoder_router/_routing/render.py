"""Rendering requests into StarCoder 2's own prompt formats.

* left-to-right: the prompt as given.
* fill-in-the-middle (PSM order): `<fim_prefix>{prefix}<fim_suffix>{suffix}<fim_middle>`; with
  repository context, the files come first, each after `<file_sep>`, behind an optional
  `<repo_name>`, and the current file's path opens the FIM prefix:
  `<repo_name>{repo}<file_sep>{path}\\n{text}...<file_sep><fim_prefix>{path}\\n{prefix}<fim_suffix>...`
* instruct: the StarCoder2-15B-Instruct template (its fixed preamble, then `### Instruction` /
  `### Response` turns), as starcoder2-self-align's `src/star_align/prompt_template.py` writes it
  and the model's tokenizer_config.json carries it. That template raises on system messages: the
  model was never trained with any other preamble. So a system message's text is folded into
  the next instruction (before the user's text, a blank line between), or becomes an
  instruction of its own when a response follows it; the preamble never changes.

User text never smuggles control tokens into a format we build: special-token strings in it are
escaped (a zero-width space after the `<`, so the tokenizer sees plain text) unless the request
asks otherwise. See `CompletionRequest.special_tokens`.
"""

from __future__ import annotations

import re
from typing import Literal, NamedTuple

from .._errors import InvalidRequestError
from .request import CompletionRequest, Message, Mode, RepoFile

__all__ = [
    "EOS",
    "SPECIAL_TOKENS",
    "SPECIAL_TOKEN_IDS",
    "FimParts",
    "Rendered",
    "escape_special_tokens",
    "has_fim_sentinels",
    "render",
    "render_fim",
]

EOS = "<|endoftext|>"
FIM_PREFIX = "<fim_prefix>"
FIM_MIDDLE = "<fim_middle>"
FIM_SUFFIX = "<fim_suffix>"
REPO_NAME = "<repo_name>"
FILE_SEP = "<file_sep>"

# Ids 0-37 of the StarCoder 2 vocabulary, in id order.
SPECIAL_TOKENS: tuple[str, ...] = (
    EOS, FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX, "<fim_pad>", REPO_NAME, FILE_SEP,
    "<issue_start>", "<issue_comment>", "<issue_closed>", "<jupyter_start>", "<jupyter_text>",
    "<jupyter_code>", "<jupyter_output>", "<jupyter_script>", "<empty_output>",
    "<code_to_intermediate>", "<intermediate_to_code>", "<pr>", "<pr_status>", "<pr_is_merged>",
    "<pr_base>", "<pr_file>", "<pr_base_code>", "<pr_diff>", "<pr_diff_hunk>", "<pr_comment>",
    "<pr_event_id>", "<pr_review>", "<pr_review_state>", "<pr_review_comment>",
    "<pr_in_reply_to_review_id>", "<pr_in_reply_to_comment_id>", "<pr_diff_hunk_comment_line>",
    "<NAME>", "<EMAIL>", "<KEY>", "<PASSWORD>",
)
# The same for every StarCoder 2 size and the instruct model (they share one tokenizer.json).
SPECIAL_TOKEN_IDS: dict[str, int] = {t: i for i, t in enumerate(SPECIAL_TOKENS)}

INSTRUCT_PREAMBLE = (
    "You are an exceptionally intelligent coding assistant that consistently delivers accurate "
    "and reliable responses to user instructions."
)

# Stops, most important first: providers that cap the number of stop sequences keep the head.
PROMPT_STOPS = (FILE_SEP, EOS)
FIM_STOPS = (FILE_SEP, FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX, EOS)
CHAT_STOPS = ("### Instruction", "### Response", EOS)

_SPECIAL_RE = re.compile("|".join(re.escape(t) for t in SPECIAL_TOKENS))
_ZWSP = "\u200b"
# Code holds few "<": finding each (memchr speed) and matching there beats the regex's own scan,
# which steps through every character; past this many the regex takes over the rest.
_FIND_AT_MOST = 8


class FimParts(NamedTuple):
    """The pieces of a FIM prompt, after escaping and any trimming (llama.cpp `/infill` takes
    them separately)."""

    prefix: str
    suffix: str
    files: tuple[RepoFile, ...] = ()
    repo_name: str | None = None
    path: str | None = None


class Rendered(NamedTuple):
    """A request in StarCoder 2's format: the exact `prompt` text sent to raw-completion endpoints,
    the stop sequences, and the structured pieces for endpoints that build the format themselves."""

    mode: Mode
    prompt: str
    stop: tuple[str, ...]
    fim: FimParts | None = None
    messages: tuple[Message, ...] | None = None


def escape_special_tokens(text: str) -> str:
    """Make StarCoder 2 control strings inert: `<fim_prefix>` becomes `<\\u200bfim_prefix>`."""
    if "<" not in text:
        return text
    return _SPECIAL_RE.sub(lambda m: "<" + _ZWSP + m.group(0)[1:], text)


def _find_special(text: str) -> re.Match[str] | None:
    """The first special-token string in `text`, as `_SPECIAL_RE.search(text)` finds it."""
    at = text.find("<")
    for _ in range(_FIND_AT_MOST):
        if at < 0:
            return None
        found = _SPECIAL_RE.match(text, at)
        if found is not None:
            return found
        at = text.find("<", at + 1)
    return None if at < 0 else _SPECIAL_RE.search(text, at)


def _guard(text: str, how: Literal["escape", "reject", "keep"], field: str) -> str:
    if how == "keep":
        return text
    found = _find_special(text)
    if found is None:
        return text
    if how == "reject":
        raise InvalidRequestError(
            f"{field} contains the StarCoder 2 control token {found.group(0)!r} at offset "
            f"{found.start()}; pass special_tokens='escape' to send it as plain text or 'keep' to "
            "let it act as a control token"
        )
    return escape_special_tokens(text)


def has_fim_sentinels(prompt: str) -> bool:
    """A raw prompt its writer put in the FIM format (llm-ls, editor templates): it needs a
    FIM-capable deployment and the FIM stops, as a prefix/suffix request does."""
    return "<fim_" in prompt and (FIM_MIDDLE in prompt or FIM_SUFFIX in prompt
                                  or FIM_PREFIX in prompt)


def render(request: CompletionRequest) -> Rendered:
    """Render `request` into StarCoder 2's prompt format (no trimming).

    The last request rendered is remembered with its result: the async router renders a large
    request to count it off the event loop and then again to route it. A request is immutable
    (a changed copy is another object), so the same object renders the same."""
    last = _LAST[0]
    if last[0] is request:
        return last[1]
    rendered = _render(request)
    _LAST[0] = (request, rendered)  # one store: a thread reads the old pair or the new
    return rendered


def _render(request: CompletionRequest) -> Rendered:
    how = request.special_tokens
    mode = request.kind
    if mode == "prompt":
        assert request.prompt is not None
        prompt = _guard(request.prompt, how or "keep", "prompt")
        stops = FIM_STOPS if has_fim_sentinels(prompt) else PROMPT_STOPS
        return Rendered("prompt", prompt, _stops(request.stop, stops))
    if mode == "fim":
        how = how or "escape"
        parts = FimParts(
            prefix=_guard(request.prefix or "", how, "prefix"),
            suffix=_guard(request.suffix or "", how, "suffix"),
            files=tuple(_guard_file(f, how) for f in request.files),
            repo_name=_guard(request.repo_name, how, "repo_name") if request.repo_name else None,
            path=_guard(request.path, how, "path") if request.path else None,
        )
        return render_fim(parts, request.stop)
    assert request.messages is not None
    how = how or "escape"
    messages = tuple(
        Message(role=m.role, content=_guard(m.content, how, f"messages[{i}].content"))
        for i, m in enumerate(request.messages)
    )
    return Rendered("chat", _instruct_prompt(messages), _stops(request.stop, CHAT_STOPS),
                    messages=messages)


def _guard_file(f: RepoFile, how: Literal["escape", "reject", "keep"]) -> RepoFile:
    path, text = _guard(f.path, how, "files.path"), _guard(f.text, how, "files")
    if path is f.path and text is f.text:
        return f  # nothing escaped: the validated file as it is
    return RepoFile(path=path, text=text)


def render_fim(parts: FimParts, user_stops: tuple[str, ...] = ()) -> Rendered:
    """The PSM prompt for `parts`, with repository context when given."""
    pieces: list[str] = []
    if parts.repo_name:
        pieces += (REPO_NAME, parts.repo_name)
    for f in parts.files:
        pieces += (FILE_SEP, f.path, "\n", f.text)
    if pieces or parts.path:
        pieces.append(FILE_SEP)
    pieces.append(FIM_PREFIX)
    if parts.path:
        pieces += (parts.path, "\n")
    pieces += (parts.prefix, FIM_SUFFIX, parts.suffix, FIM_MIDDLE)
    return Rendered("fim", "".join(pieces), _stops(user_stops, FIM_STOPS), fim=parts)


_LAST: list[tuple[object, Rendered]] = [(None, Rendered("prompt", "", ()))]


def _instruct_prompt(messages: tuple[Message, ...]) -> str:
    turns: list[str] = []
    pending: list[str] = []  # system text waiting for the next instruction
    for m in messages:
        if m.role == "system":
            pending.append(m.content)
        elif m.role == "user":
            turns.append(_instruction([*pending, m.content]))
            pending = []
        else:
            if pending:
                turns.append(_instruction(pending))
                pending = []
            turns.append(f"### Response\n{m.content}{EOS}\n\n")
    # The request ends with a user message (validated), so nothing is pending here.
    return f"{EOS}{INSTRUCT_PREAMBLE}\n\n{''.join(turns)}### Response\n"


def _instruction(texts: list[str]) -> str:
    return "### Instruction\n" + "\n\n".join(texts) + "\n\n"


def _stops(user: tuple[str, ...], ours: tuple[str, ...]) -> tuple[str, ...]:
    if not user:
        return ours
    return tuple(dict.fromkeys((*user, *ours)))
