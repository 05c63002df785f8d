"""`simulate` with editor sessions: supersession, typed-ahead reuse and the exact-repeat cache
counted by hand on a small workload, the features off exactly as before, never dearer on, and
bad session fields refused line by line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from starcoder_router._autocomplete.sessions import AutocompletePolicy
from starcoder_router._cli import main
from starcoder_router._routing.catalog import Catalog
from starcoder_router._routing.cost import token_cost_nano
from starcoder_router._simulate.runner import simulate
from starcoder_router._simulate.sessions import SUPERSEDED
from starcoder_router._simulate.workload import WorkloadRequest, parse_lines, stream_workload

CACHE = AutocompletePolicy(cache_entries=8)
ONE = ["configured"]


def _line(t: float, prefix: int, **extra: Any) -> str:
    return json.dumps({"timestamp": t, "kind": "fim", "prefix_tokens": prefix,
                       "suffix_tokens": 100, "max_tokens": 64, "output_tokens": 40, **extra})


# Worked by hand, with the features on:
#   0  a, sent                       -> superseded by 1 at 0.05 s, before its first token:
#                                       booked at its prompt alone
#   1  a, does not type through it   -> sent, completes
#   2  a, types through 1's answer   -> reused: no call, no cost
#   3  b, greedy                     -> sent, completes, cached
#   4  b, greedy, the same prompt    -> answered from the cache
#   5  no session                    -> sent, as with the features off
HAND = [
    _line(0, 500, session="a"),
    _line(0.05, 501, session="a", accepts_previous=False),
    _line(10, 502, session="a", accepts_previous=True),
    _line(20, 600, session="b", temperature=0),
    _line(30, 600, session="b", temperature=0, accepts_previous=False),
    _line(40, 600),
]


def test_a_small_workload_counted_by_hand() -> None:
    requests = parse_lines(HAND).requests
    result = simulate(requests, policies=ONE, autocomplete="both", autocomplete_policy=CACHE)
    off, on = result.autocomplete
    assert (off.features, on.features) == ("off", "on")
    assert (off.requests, off.upstream_requests, off.reused, off.cached, off.superseded) == \
        (6, 6, 0, 0, 0)
    assert (on.requests, on.upstream_requests, on.reused, on.cached, on.superseded) == \
        (6, 4, 1, 1, 1)
    assert on.served_locally_share == pytest.approx(2 / 6)

    each = [o.cost_nano for o in result.runs["configured"].outcomes]  # features off
    first = result.runs["configured"].outcomes[0]
    dep = Catalog.default().deployment(first.deployment or "")
    prompt_only = token_cost_nano(first.prompt_tokens, dep.input_usd_per_mtok)
    assert 0 < prompt_only < each[0]
    assert round(on.cost_usd * 1e9) == prompt_only + each[1] + each[3] + each[5]
    assert round(off.cost_usd * 1e9) == sum(each)


def test_the_features_on_alone_count_superseded_requests_as_refused() -> None:
    result = simulate(parse_lines(HAND).requests, policies=ONE, autocomplete="on",
                      autocomplete_policy=CACHE)
    (summary,) = result.summaries
    assert summary.refused_by_reason == {SUPERSEDED: 1}
    assert summary.served == 5
    assert [f.features for f in result.autocomplete] == ["on"]


def test_a_call_stopped_while_writing_books_the_output_written_so_far() -> None:
    lines = [_line(0, 500, session="a", output_tokens=64),
             _line(0.5, 501, session="a", accepts_previous=False)]
    full = simulate(parse_lines(lines[:1]).requests, policies=ONE, autocomplete="off")
    first = full.runs["configured"].outcomes[0]
    assert first.latency > 0.5  # still writing when the next keystroke comes
    dep = Catalog.default().deployment(first.deployment or "")
    prompt_only = token_cost_nano(first.prompt_tokens, dep.input_usd_per_mtok)
    on = simulate(parse_lines(lines).requests, policies=ONE, autocomplete="on")
    stopped = on.runs["configured"].outcomes[0]
    assert stopped.refused == SUPERSEDED and stopped.finished == 0.5
    assert prompt_only < stopped.cost_nano < first.cost_nano


def test_features_off_are_todays_numbers_and_both_shows_them() -> None:
    with_sessions = parse_lines(HAND).requests
    without = tuple(r.model_copy(update={"session": None, "accepts_previous": None,
                                         "temperature": None}) for r in with_sessions)
    today = simulate(without)
    assert today.autocomplete == ()  # no session: nothing to compare
    for mode in ("off", "both"):
        result = simulate(with_sessions, autocomplete=mode)  # type: ignore[arg-type]
        assert result.summaries == today.summaries
    assert simulate(with_sessions).autocomplete  # a session: both by default


def test_the_command_prints_and_writes_the_comparison(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "w.jsonl"
    path.write_text("\n".join(HAND) + "\n", encoding="utf-8")
    assert stream_workload(path).has_sessions
    assert main(["simulate", str(path), "--policy", "configured", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [(f["features"], f["upstream_requests"]) for f in out["autocomplete"]] == \
        [("off", 6), ("on", 5)]  # the default: no cache, so request 4 is sent
    assert main(["simulate", str(path), "--policy", "configured"]) == 0
    text = capsys.readouterr().out
    assert "upstream off" in text and "superseded" in text
    assert main(["simulate", str(path), "--json", "--autocomplete", "off"]) == 0
    assert "autocomplete" not in json.loads(capsys.readouterr().out)


def test_the_configs_autocomplete_table_is_used(tmp_path: Path) -> None:
    config = tmp_path / "router.toml"
    config.write_text("[autocomplete]\ncache_entries = 4\nsessions = false\n", encoding="utf-8")
    result = simulate(parse_lines(HAND).requests, policies=ONE, autocomplete="on",
                      config=config)
    (on,) = result.autocomplete
    assert (on.superseded, on.cached, on.reused) == (0, 1, 1)


@pytest.mark.parametrize(("extra", "why"), [
    ({"session": ""}, "session"),
    ({"session": "x" * 257}, "session"),
    ({"session": 3}, "session"),
    ({"accepts_previous": True}, "accepts_previous needs a session"),
    ({"session": "a", "accepts_previous": "maybe"}, "accepts_previous"),
    ({"session": "a", "temperature": 2.5}, "temperature"),
    ({"session": "a", "temperature": -1}, "temperature"),
])
def test_bad_session_fields_are_refused_by_line(extra: dict[str, Any], why: str) -> None:
    workload = parse_lines([_line(0, 10), _line(1, 10, **extra)])
    assert len(workload.requests) == 1
    ((number, message),) = workload.errors
    assert number == 2 and why in message


def test_the_session_off_is_no_session() -> None:
    (req,) = parse_lines([_line(0, 10, session="off")]).requests
    assert req.session_key is None
    assert not simulate([req], policies=ONE).autocomplete


def test_session_state_stays_bounded() -> None:
    from starcoder_router._simulate import runner

    seen: list[Any] = []
    real = runner.ScenarioLoop.finish

    def finish(loop: Any) -> Any:
        run = real(loop)
        seen.append(loop)
        return run

    lines = [_line(i * 0.1, 100 + i, session=f"s{i % 7}") for i in range(70)]
    policy = AutocompletePolicy(max_sessions=3, cache_entries=2)
    mp = pytest.MonkeyPatch()
    mp.setattr(runner.ScenarioLoop, "finish", finish)
    try:
        simulate(parse_lines(lines).requests, policies=ONE, autocomplete="on",
                 autocomplete_policy=policy)
    finally:
        mp.undo()
    (loop,) = seen
    assert loop._live == {} and loop._dead == set()
    model = loop._sessions
    assert len(model._sessions) <= 3 and len(model._cache) <= 2 and model._running == {}


_sessions = st.lists(
    # A few prompt sizes, so that greedy requests repeat one another.
    st.tuples(st.sampled_from([0.0, 0.1, 0.3, 1.0, 5.0]), st.sampled_from([40, 41, 300]),
              st.sampled_from([None, "a", "b"]), st.sampled_from([None, True, False]),
              st.sampled_from([None, 0.0, 0.0, 0.7]), st.integers(0, 64)),
    min_size=1, max_size=10)


def _requests(spec: list[tuple[Any, ...]], sessions: bool) -> list[WorkloadRequest]:
    out, t = [], 0.0
    for gap, prefix, session, accepts, temperature, output in spec:
        t += gap
        extra: dict[str, Any] = {"output_tokens": output}
        if sessions and session is not None:
            extra.update(session=session, temperature=temperature)
            if accepts is not None:
                extra["accepts_previous"] = accepts
        out.append(WorkloadRequest.model_validate_json(_line(round(t, 3), prefix, **extra)))
    return out


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_sessions)
def test_the_features_never_cost_more_and_leave_sessionless_requests_alone(
        spec: list[tuple[Any, ...]]) -> None:
    requests = _requests(spec, sessions=True)
    result = simulate(requests, policies=ONE, autocomplete="both", autocomplete_policy=CACHE)
    off, on = result.autocomplete
    assert on.cost_usd <= off.cost_usd
    assert on.upstream_requests <= off.upstream_requests
    assert on.requests == off.requests == len(requests)

    plain = _requests(spec, sessions=False)
    today = simulate(plain, policies=ONE, autocomplete="off")
    forced = simulate(plain, policies=ONE, autocomplete="on", autocomplete_policy=CACHE)
    assert forced.summaries == today.summaries
    (f,) = forced.autocomplete
    assert (f.reused, f.cached, f.superseded) == (0, 0, 0)


def test_the_report_shows_the_comparison() -> None:
    pytest.importorskip("plotly")
    from starcoder_router._simulate.report import render_report

    result = simulate(parse_lines(HAND).requests, policies=ONE, autocomplete_policy=CACHE)
    page = render_report(result, workload_name="w.jsonl")
    assert "Editor sessions, typed-ahead reuse and the cache: off and on" in page
    table = page.split('<table class="autocomplete">', 1)[1].split("</table>", 1)[0]
    assert table.count("<tr>") == 3 and ">33.3%</td>" in table
    plain = render_report(simulate(parse_lines(HAND[-1:]).requests, policies=ONE),
                          workload_name="w.jsonl")
    assert 'class="autocomplete"' not in plain
