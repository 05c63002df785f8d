"""Stop matching stays linear however long or many the stops are, and cuts exactly where
the whole-text cut does, however the text is split into chunks."""

from __future__ import annotations

import time

from hypothesis import given, settings
from hypothesis import strategies as st

from starcoder_router._providers.stops import StreamCutter, cut_at_stop

ALPHABET = "ab\n<>"


def _run(stops: list[str], chunks: list[str]) -> tuple[str, bool]:
    cutter = StreamCutter(stops)
    out = [cutter.push(c) for c in chunks]
    out.append(cutter.push(None, end=True))
    return "".join(o for o in out if o), cutter.stopped


@settings(max_examples=400, deadline=None)
@given(stops=st.lists(st.text(ALPHABET, min_size=1, max_size=8), min_size=1, max_size=4),
       chunks=st.lists(st.text(ALPHABET, max_size=12), max_size=12))
def test_streaming_cuts_where_the_whole_text_cut_does(stops: list[str],
                                                      chunks: list[str]) -> None:
    assert _run(stops, chunks) == cut_at_stop("".join(chunks), stops)


@settings(max_examples=200, deadline=None)
@given(stops=st.lists(st.text(ALPHABET, min_size=1, max_size=8), min_size=1, max_size=4),
       chunks=st.lists(st.text(ALPHABET, max_size=12), max_size=12))
def test_nothing_that_could_begin_a_stop_is_passed_on(stops: list[str],
                                                      chunks: list[str]) -> None:
    cutter = StreamCutter(stops)
    passed = ""
    for chunk in chunks:
        passed += cutter.push(chunk) or ""
        if cutter.stopped:
            return
        for stop in stops:  # no passed text ends in a stop's proper prefix that is still open
            held = cutter._pending
            for k in range(1, len(stop)):
                if (passed + held).endswith(stop[:k]) and len(held) < k:
                    raise AssertionError((stop, passed, held))


def test_a_4000_character_stop_costs_milliseconds() -> None:
    stop = "ab" * 1999 + "aX"  # never completes: the whole tail stays held
    started = time.perf_counter()
    cutter = StreamCutter([stop])
    for _ in range(400):
        cutter.push("ab" * 8)
    assert time.perf_counter() - started < 0.5  # a pattern of every prefix took ~10 s


def test_many_long_stops_cost_linear_time() -> None:
    stops = ["ab" * 127 + "a" + chr(0x100 + i) for i in range(64)]
    started = time.perf_counter()
    cutter = StreamCutter(stops)
    for _ in range(200):
        cutter.push("ab" * 8)
    assert not cutter.stopped
    assert time.perf_counter() - started < 1.0
