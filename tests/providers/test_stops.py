"""Every stop is honoured: the ones a provider was not sent (it caps their number) and the ones it
cannot see are enforced on our side, in plain answers and in streams.

Each wire test runs through `Router` and `AsyncRouter(transport="httpx")` (the `drive` fixture).
"""

from __future__ import annotations

import json
import random

import httpx
import pytest
import respx

from starcoder_router._providers.stops import StreamCutter, cut_at_stop, send_order
from support.provider_replies import COMPLETIONS_URL, ProviderDriver, body_of

TEN_STOPS = [f"STOP{i}" for i in range(10)]


def completion_json(text: str, finish: str = "length", prompt: int = 14,
                    completion: int = 40) -> dict[str, object]:
    return {"id": "cmpl-1", "object": "text_completion", "model": "bigcode/starcoder2-15b",
            "choices": [{"index": 0, "text": text, "finish_reason": finish}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt + completion}}


def sse_of(*texts: str, finish: str = "length", completion: int = 40) -> httpx.Response:
    events = [{"id": "cmpl-1", "model": "bigcode/starcoder2-15b",
               "choices": [{"index": 0, "text": t, "finish_reason": None}]} for t in texts]
    events.append({"id": "cmpl-1", "model": "bigcode/starcoder2-15b",
                   "choices": [{"index": 0, "text": "", "finish_reason": finish}],
                   "usage": {"prompt_tokens": 14, "completion_tokens": completion,
                             "total_tokens": 14 + completion}})
    body = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
    return httpx.Response(200, content=body.encode(), headers={"content-type": "text/event-stream"})


# -- the pure cutter ------------------------------------------------------------------------------


def test_cut_at_the_stop_that_completes_first() -> None:
    assert cut_at_stop("a = 1\n\ndef g", ["\n\n"]) == ("a = 1", True)
    assert cut_at_stop("no stop here", ["STOP"]) == ("no stop here", False)
    # "y" completes before "xyzw" would: a server checking after each token stops there too.
    assert cut_at_stop("axyzw", ["xyzw", "y"]) == ("ax", True)
    # Two matches ending together: the longer one, which starts earlier.
    assert cut_at_stop("a<file_sep>", ["p>", "<file_sep>"]) == ("a", True)


def test_send_order_keeps_the_given_order_and_puts_whitespace_stops_last() -> None:
    assert send_order(["\n\n", "END", "<file_sep>", "END", " \n"]) == \
        ["END", "<file_sep>", "\n\n", " \n"]


def test_a_lone_newline_keeps_its_place_for_line_completions() -> None:
    # Line mode puts "\n" first; a provider that takes four stops must still get it.
    assert send_order(["\n", "<file_sep>", "<fim_prefix>", "<fim_middle>", "\n\n"])[:4] == \
        ["\n", "<file_sep>", "<fim_prefix>", "<fim_middle>"]


def test_a_stop_split_across_chunks_never_reaches_the_caller() -> None:
    cutter = StreamCutter(["<file_sep>"])
    assert cutter.push("pass<fi") == "pass"
    assert cutter.push("le_s") is None
    assert cutter.push("ep>next file") is None
    assert cutter.stopped
    assert cutter.push("more", end=True) is None


def test_a_held_tail_that_was_no_stop_is_released() -> None:
    cutter = StreamCutter(["<file_sep>"])
    assert cutter.push("a <b") == "a <b"  # "<b" cannot begin "<file_sep>": nothing held
    assert cutter.push("c <f") == "c "
    assert cutter.push("x") == "<fx"
    assert cutter.push("x <fil") == "x "
    assert cutter.push(None, end=True) == "<fil"


@pytest.mark.parametrize("seed", range(300))
def test_any_chunking_gives_the_text_cut_at_its_first_stop(seed: int) -> None:
    rng = random.Random(seed)
    alphabet = "ab<>_\n x"
    stops = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 5)))
             for _ in range(rng.randint(1, 4))]
    text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
    cuts = sorted(rng.sample(range(len(text) + 1), min(len(text) + 1, rng.randint(0, 8))))
    chunks = [text[i:j] for i, j in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    cutter = StreamCutter(stops)
    out = [cutter.push(c) for c in chunks] + [cutter.push(None, end=True)]
    expected, hit = cut_at_stop(text, stops)
    assert "".join(o for o in out if o) == expected
    assert cutter.stopped == hit
    # Nothing passed on before a stop completed contains any stop.
    assert all(s not in "".join(o for o in out if o) for s in stops)


# -- on the wire ----------------------------------------------------------------------------------


async def test_deepinfra_sends_four_stops_and_enforces_the_rest(
        drive: ProviderDriver, mock: respx.MockRouter) -> None:
    route = mock.post(COMPLETIONS_URL["deepinfra"]).respond(
        200, json=completion_json("x = 1\nSTOP7\ny = 2", completion=40))
    router = drive.router("deepinfra")

    completion = await drive.complete(router, prompt="x =", max_tokens=40, stop=TEN_STOPS)

    assert body_of(route)["stop"] == TEN_STOPS[:4]
    assert completion.text == "x = 1\n"
    assert completion.finish_reason == "stop"
    # Usage and cost stay what the provider billed for the 40 tokens it generated.
    assert completion.usage.completion_tokens == 40
    assert completion.usage.source == "provider"
    assert completion.cost_usd == pytest.approx(54 * 0.4 / 1e6)


async def test_fireworks_takes_at_most_four_stops(drive: ProviderDriver,
                                                  mock: respx.MockRouter) -> None:
    route = mock.post(COMPLETIONS_URL["fireworks"]).respond(
        200, json=completion_json("return a<fim_suffix>b", finish="stop", completion=5))
    router = drive.router("fireworks")

    completion = await drive.complete(router, prefix="def f(a):\n    ", suffix="\n",
                                      max_tokens=16, stop=["\n\n"])

    assert body_of(route)["stop"] == ["<file_sep>", "<fim_prefix>", "<fim_middle>",
                                      "<fim_suffix>"]
    assert completion.text == "return a"
    assert completion.finish_reason == "stop"


async def test_a_stream_is_cut_at_a_stop_the_provider_was_not_sent(
        drive: ProviderDriver, mock: respx.MockRouter) -> None:
    mock.post(COMPLETIONS_URL["deepinfra"]).mock(
        return_value=sse_of("x = 1 ST", "OP", "9 tail", " more"))
    router = drive.router("deepinfra")

    chunks, completion = await drive.stream(router, prompt="x =", max_tokens=40,
                                            stream=True, stop=TEN_STOPS)

    assert "".join(c.text for c in chunks) == "x = 1 "
    assert not any("S" in c.text for c in chunks)
    assert chunks[-1].finish_reason == "stop"
    assert completion.text == "x = 1 "
    assert completion.finish_reason == "stop"
    assert completion.usage.completion_tokens == 40


async def test_a_stream_without_a_stop_loses_nothing_held_back(
        drive: ProviderDriver, mock: respx.MockRouter) -> None:
    mock.post(COMPLETIONS_URL["deepinfra"]).mock(return_value=sse_of("x = 1 ST", "OP"))
    router = drive.router("deepinfra")

    chunks, completion = await drive.stream(router, prompt="x =", max_tokens=40,
                                            stream=True, stop=TEN_STOPS)

    assert "".join(c.text for c in chunks) == "x = 1 STOP"
    assert completion.text == "x = 1 STOP"
    assert completion.finish_reason == "length"

