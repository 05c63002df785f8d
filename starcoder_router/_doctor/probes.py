"""The probes `starcoder-router doctor` runs, as data, and the pure judgements over replies.

Nothing here sends anything: `runner.py` sends the requests each probe describes and hands the
replies to the functions below, which say what was found. A probe that cannot decide says
"undecided" and why; nothing is guessed.

Prompts whose token count is known: StarCoder 2's tokenizer splits text into words before merging
(a GPT-2 style pattern), so `" x"` repeated n times is n tokens. A server may add a few tokens of
its own (a BOS token), which one small calibration request measures from its usage.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .._routing.catalog import Deployment
from .._routing.cost import worst_case_nano
from .._routing.render import FILE_SEP, FIM_MIDDLE, FIM_PREFIX, FIM_SUFFIX, escape_special_tokens

__all__ = [
    "PROBES",
    "Bisect",
    "Finding",
    "Probe",
    "judge_fim",
    "judge_latency",
    "judge_model",
    "judge_special_stop",
    "judge_structured",
    "judge_usage",
    "repeated",
    "worst_case_cost_nano",
]

Status = Literal["ok", "differs", "failed", "undecided", "skipped"]


@dataclass(frozen=True)
class Finding:
    """What one probe found: a status, a sentence, and the measured value when there is one."""

    probe: str
    status: Status
    detail: str
    value: Any = None


@dataclass(frozen=True)
class Probe:
    """One probe: its name, what it checks, and its requests at their largest, as (prompt
    tokens, max_tokens) pairs for a deployment whose claimed window is `window`."""

    name: str
    what: str
    requests: tuple[tuple[str, int], ...]  # (prompt size: "small" or "window", max_tokens)

    def worst_case_tokens(self, window: int) -> tuple[int, int]:
        """Prompt and output tokens if every request is sent and billed in full."""
        prompt = sum(window + WINDOW_MARGIN if size == "window" else SMALL_PROMPT_TOKENS
                     for size, _ in self.requests)
        return prompt, sum(m for _, m in self.requests)


# Every small probe prompt is fewer tokens than this, with a few a server adds, even on a server
# that reads control tokens as text (the special-stop prompt is then 92).
SMALL_PROMPT_TOKENS = 128
WINDOW_MARGIN = 16  # the window probe goes at most this far past the claimed window
WINDOW_STEPS = 7  # bisection steps after the two requests around the claimed window
STOP_CEILING = 32  # the stop-limit search tries at most this many stops
STREAM_SAMPLES = 3  # streamed requests for latency
LATENCY_TOKENS = 16
SPECIAL_TOKENS_OUT = 24

PROBES: tuple[Probe, ...] = (
    Probe("reach", "reachable, key accepted, a plain completion answers", (("small", 4),)),
    Probe("model", "the model served is the one the catalog names (from the reply above)", ()),
    Probe("usage", "usage in plain and streamed replies, plausible against our count", ()),
    Probe("latency", f"time to first token and per token, p50 of {STREAM_SAMPLES} streams",
          (("small", LATENCY_TOKENS),) * STREAM_SAMPLES),
    Probe("window", "the context window enforced, from the overflow error and a bounded search",
          (("small", 1),) + (("window", 1),) * (2 + WINDOW_STEPS)),
    Probe("stops", f"how many stop sequences are accepted (searched up to {STOP_CEILING})",
          (("small", 1),) * 8),
    Probe("special-stop", f"whether a {FILE_SEP} stop ends the generation on the server",
          (("small", SPECIAL_TOKENS_OUT),) * 2),
    Probe("fim", "FIM sentinels reach the model as control tokens, and the reply obeys them",
          (("small", 8),) * 2),
    Probe("structured", "a JSON object is returned when asked (only where claimed)",
          (("small", 32),)),
    Probe("retry-after", "a 429, if one happens during the run, says when to retry", ()),
    Probe("billed", "cost the provider reports against usage x catalog price", ()),
)


def worst_case_cost_nano(dep: Deployment, probes: Sequence[Probe] = PROBES) -> int:
    """What running `probes` against `dep` can cost at most, from the catalog's prices."""
    prompt = output = 0
    for probe in probes:
        p, o = probe.worst_case_tokens(dep.context_window)
        prompt, output = prompt + p, output + o
    return worst_case_nano(dep, prompt, output)


def repeated(tokens: int) -> str:
    """A prompt of exactly `tokens` StarCoder 2 tokens (before any the server adds)."""
    return " x" * max(1, tokens)


# -- searches -------------------------------------------------------------------------------


class Bisect:
    """The largest accepted value in [lo, hi], found with at most `steps` tries::

        b = Bisect(1, 31, steps=5)
        while (n := b.next()) is not None:
            b.record(n, accepted=try_with(n))
        b.lo, b.hi   # lo was accepted (or is the floor); everything above hi was refused
    """

    def __init__(self, lo: int, hi: int, *, steps: int):
        self.lo, self.hi, self.steps = lo, hi, steps

    def next(self) -> int | None:
        if self.steps <= 0 or self.lo >= self.hi:
            return None
        return (self.lo + self.hi + 1) // 2

    def record(self, value: int, *, accepted: bool) -> None:
        self.steps -= 1
        if accepted:
            self.lo = value
        else:
            self.hi = value - 1

    @property
    def exact(self) -> bool:
        return self.lo >= self.hi


# -- judgements -----------------------------------------------------------------------------


def judge_model(dep: Deployment, served: str | None) -> Finding:
    if not served:
        return Finding("model", "undecided", "the reply names no model")
    # TGI's /v1 answers name the model it was started with; vLLM's a served alias; both may
    # be a path. A name ending in the catalog's model (or the reverse) is the same model.
    asked = dep.model.rstrip("/")
    if served == asked or served.endswith("/" + asked) or asked.endswith("/" + served):
        return Finding("model", "ok", f"serves {served}", served)
    return Finding("model", "differs", f"asked for {asked}, the reply names {served}", served)


UsageSeen = tuple[int | None, int | None]


def judge_usage(*replies: tuple[str, UsageSeen | None, int, int],
                exact: Sequence[int | None] = ()) -> Finding:
    """Usage present in each reply (label, (prompt, completion) or None when the request
    failed, the prompt's UTF-8 bytes, max_tokens), and plausible: at least one prompt token and
    no more than the prompt's bytes (an upper bound on its tokens) plus a few the server adds;
    no more completion tokens than asked for. With our exact count of a prompt (`exact`, one
    per reply, from the real tokenizer) the server's count must be it, or a few more."""
    parts, bad, present = [], [], {}
    ours = list(exact) + [None] * (len(replies) - len(exact))
    for (label, usage, prompt_bound, max_tokens), mine in zip(replies, ours, strict=True):
        if usage is None:
            parts.append(f"{label}: no reply")
            continue
        prompt, completion = usage
        present[label] = prompt is not None and completion is not None
        if prompt is None and completion is None:
            parts.append(f"{label}: absent")
            continue
        parts.append(f"{label}: {prompt} + {completion}")
        if prompt is not None and not 0 < prompt <= prompt_bound + 4:
            bad.append(f"{label} prompt count {prompt} outside 1..{prompt_bound + 4}")
        elif prompt is not None and mine is not None and not mine <= prompt <= mine + 4:
            bad.append(f"{label} prompt count {prompt}, our tokenizer counts {mine}")
        if completion is not None and not 0 <= completion <= max_tokens + 1:
            bad.append(f"{label} completion count {completion} above max_tokens {max_tokens}")
    detail = "; ".join(parts)
    if bad:
        return Finding("usage", "differs", f"{detail} ({'; '.join(bad)})", present)
    if not present:
        return Finding("usage", "undecided", "no reply to read usage from")
    if not all(present.values()):
        return Finding("usage", "differs", detail + " (the router counts where usage is absent)",
                       present)
    return Finding("usage", "ok", detail, present)


def judge_latency(ttfts: Sequence[float], per_token: Sequence[float]) -> Finding:
    if not ttfts:
        return Finding("latency", "undecided", "no stream produced a token")
    ttft = statistics.median(ttfts)
    if not per_token:
        return Finding("latency", "ok", f"ttft p50 {ttft * 1000:.0f} ms; too few tokens per "
                       "stream to time them", {"ttft_s": ttft, "s_per_token": None})
    step = statistics.median(per_token)
    return Finding("latency", "ok",
                   f"ttft p50 {ttft * 1000:.0f} ms, {step * 1000:.1f} ms/token p50",
                   {"ttft_s": ttft, "s_per_token": step if step > 0 else None})


def special_stop_prompt() -> str:
    """A repository-style prompt after which StarCoder 2 tends to emit `<file_sep>` next."""
    files = "".join(f"{FILE_SEP}m{i}.py\nx{i} = {i}\n" for i in range(4))
    return f"<repo_name>demo{files}{FILE_SEP}m4.py\nx4 = 4\n"


def judge_special_stop(free: tuple[str, int | None] | None,
                       stopped: tuple[str, int | None, str | None] | None) -> Finding:
    """`free` is (text, completion tokens) without stops; `stopped` (text, completion tokens,
    raw finish reason) with `<file_sep>` as the only stop, both greedy on the same prompt.

    It fired when the stopped run generated fewer tokens and its text leads the free run's.
    It did not when the free text shows `<file_sep>` (the model produced it and the server
    renders it) and the stopped run went on just as long. Otherwise the model may never have
    produced the token, or the server hides it: undecided."""
    name = "special-stop"
    if free is None or stopped is None:
        return Finding(name, "undecided", "a probe request failed")
    (free_text, free_n), (text, n, raw) = free, stopped
    if free_n is None or n is None:
        return Finding(name, "undecided", "no completion counts in the replies")
    if n < free_n and not free_text.startswith(text):
        return Finding(name, "undecided", "the two greedy runs wrote different text")
    if n < free_n:
        return Finding(name, "ok", f"fires ({n} tokens with the stop, {free_n} without; "
                       f"finish {raw})", "fire")
    if FILE_SEP in free_text:
        return Finding(name, "differs", f"does not fire: the server shows {FILE_SEP} in the "
                       "text but did not stop on it (the router cuts it on its side)",
                       "ignored")
    return Finding(name, "undecided", f"the model did not visibly produce {FILE_SEP} in "
                   f"{free_n} tokens, so whether the stop fires cannot be told")


def fim_prompts() -> tuple[str, str]:
    """A PSM prompt with real sentinels, and the same text with them escaped into plain text."""
    prompt = f"{FIM_PREFIX}def add(a, b):\n    {FIM_SUFFIX}\n\nprint(add(1, 2))\n{FIM_MIDDLE}"
    return prompt, escape_special_tokens(prompt)


def judge_fim(sentinel: tuple[str, int | None] | None, escaped: tuple[str, int | None] | None
              ) -> Finding:
    """Three sentinels read as control tokens cost one token each; as text, several each. So a
    prompt with real sentinels must count clearly fewer tokens than its escaped twin."""
    if sentinel is None or escaped is None:
        return Finding("fim", "undecided", "a probe request failed")
    (text, n_real), (_, n_text) = sentinel, escaped
    if n_real is None or n_text is None:
        return Finding("fim", "undecided", "no prompt counts in the replies to compare")
    leaked = [s for s in (FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE) if s in text]
    if n_real + 6 > n_text:
        return Finding("fim", "differs", f"sentinels counted as text ({n_real} prompt tokens "
                       f"with them, {n_text} escaped)", "text")
    if leaked:
        return Finding("fim", "differs", f"sentinels are control tokens but the reply repeats "
                       f"{', '.join(leaked)}", "leaked")
    return Finding("fim", "ok", f"sentinels are control tokens ({n_real} prompt tokens vs "
                   f"{n_text} escaped); the reply has none", "control")


def judge_structured(text: str | None, finish: str | None, error: str | None) -> Finding:
    if error is not None:
        return Finding("structured", "failed", f"refused: {error}")
    if text is None:
        return Finding("structured", "undecided", "no reply")
    try:
        value = json.loads(text)
    except ValueError:
        if finish == "length":
            return Finding("structured", "undecided", "the JSON was cut at max_tokens")
        return Finding("structured", "failed", f"not JSON: {text[:40]!r}")
    if not isinstance(value, dict):
        return Finding("structured", "failed", f"JSON but not an object: {text[:40]!r}")
    return Finding("structured", "ok", "a JSON object came back")
