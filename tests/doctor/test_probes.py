"""The doctor's pure parts: the bounded searches, the judgements over replies, the worst-case cost
of a run, and the overrides file (read, written, applied)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from starcoder_router import Catalog, ConfigError
from starcoder_router._doctor import runner
from starcoder_router._doctor.overrides import (
    DeploymentOverride,
    apply_overrides,
    default_overrides_path,
    dump_overrides,
    read_overrides,
)
from starcoder_router._doctor.probes import (
    PROBES,
    SMALL_PROMPT_TOKENS,
    Bisect,
    fim_prompts,
    judge_fim,
    judge_latency,
    judge_model,
    judge_special_stop,
    judge_structured,
    judge_usage,
    repeated,
    special_stop_prompt,
    worst_case_cost_nano,
)
from starcoder_router._routing.cost import token_cost_nano
from starcoder_router._routing.render import escape_special_tokens

NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)


@given(st.integers(1, 20_000), st.integers(1, 20_000), st.integers(0, 20_000))
def test_bisect_brackets_the_threshold(lo: int, span: int, t: int) -> None:
    hi = lo + span
    b = Bisect(lo, hi, steps=7)
    tries = 0
    while (n := b.next()) is not None:
        tries += 1
        b.record(n, accepted=n <= t)
    assert tries <= 7
    truth = min(max(t, lo), hi)  # lo counts as accepted, nothing above hi is tried
    assert b.lo <= truth <= b.hi
    if span < 2**7:
        assert b.exact and b.lo == truth


def test_a_repeated_prompt_is_the_token_count_it_names(exact_counter: object) -> None:
    from starcoder_router import TokenizerCounter

    assert isinstance(exact_counter, TokenizerCounter)
    for n in (1, 8, 1000):
        assert exact_counter.count(repeated(n)) == n


def test_worst_case_cost_is_every_request_billed_in_full() -> None:
    dep = Catalog.default().deployment("fireworks/starcoder2-7b")
    prompt = output = 0
    for p in PROBES:
        for size, max_tokens in p.requests:
            prompt += dep.context_window + 16 if size == "window" else SMALL_PROMPT_TOKENS
            output += max_tokens
    assert worst_case_cost_nano(dep) == token_cost_nano(prompt, 0.2) + token_cost_nano(output, 0.2)
    local = Catalog.default().deployment("fireworks/starcoder2-7b").model_copy(
        update={"input_usd_per_mtok": 0.0, "output_usd_per_mtok": 0.0})
    assert worst_case_cost_nano(local) == 0


def test_the_model_judgement_accepts_paths_and_names_a_swap() -> None:
    dep = Catalog.default().deployment("deepinfra/starcoder2-15b")
    assert judge_model(dep, "bigcode/starcoder2-15b").status == "ok"
    assert judge_model(dep, "/models/bigcode/starcoder2-15b").status == "ok"
    swapped = judge_model(dep, "bigcode/starcoder2-7b")
    assert (swapped.status, swapped.value) == ("differs", "bigcode/starcoder2-7b")
    assert judge_model(dep, None).status == "undecided"


@pytest.mark.parametrize(("free", "stopped", "status", "value"), [
    (("x<file_sep>y", 14), ("x", 6, "stop"), "ok", "fire"),
    (("x<file_sep>y", 14), ("x", 14, "stop"), "differs", "ignored"),
    (("xy", 14), ("xy", 14, "stop"), "undecided", None),  # hidden: cannot tell
    (("xy", 14), ("ab", 6, "stop"), "undecided", None),  # the greedy runs diverged
    (("xy", None), ("xy", 6, "stop"), "undecided", None),  # no counts
    (None, ("xy", 6, "stop"), "undecided", None),
])
def test_the_special_stop_judgement(free: tuple[str, int | None] | None,
                                    stopped: tuple[str, int | None, str | None] | None,
                                    status: str, value: str | None) -> None:
    found = judge_special_stop(free, stopped)
    assert (found.status, found.value) == (status, value), found.detail


def test_the_fim_judgement() -> None:
    assert judge_fim(("return a + b", 15), ("", 30)).value == "control"
    assert judge_fim(("return a + b", 28), ("", 30)).value == "text"
    assert judge_fim(("x<fim_middle>", 15), ("", 30)).value == "leaked"
    assert judge_fim(("x", None), ("", 30)).status == "undecided"


def test_the_usage_judgement() -> None:
    ok = judge_usage(("plain", (5, 4), 13, 4), ("streamed", (6, 14), 18, 16))
    assert ok.status == "ok"
    absent = judge_usage(("plain", (5, 4), 13, 4), ("streamed", (None, None), 18, 16))
    assert (absent.status, absent.value) == ("differs", {"plain": True, "streamed": False})
    assert judge_usage(("plain", (500, 4), 13, 4)).status == "differs"  # more than its bytes
    assert judge_usage(("plain", (5, 40), 13, 4)).status == "differs"  # past max_tokens
    assert judge_usage(("plain", None, 13, 4)).status == "undecided"


def test_the_structured_judgement() -> None:
    assert judge_structured('{"a": 1}', "stop", None).status == "ok"
    assert judge_structured('{"a": ', "length", None).status == "undecided"
    assert judge_structured("[1]", "stop", None).status == "failed"
    assert judge_structured(None, None, "422 grammar").status == "failed"


# -- the overrides file ------------------------------------------------------------------------


@given(st.dictionaries(st.text(min_size=1, max_size=30), st.builds(
    DeploymentOverride, measured_at=st.just(NOW),
    context_window=st.none() | st.integers(1, 10**6), max_stop=st.none() | st.integers(1, 64),
    special_stops=st.sampled_from([None, "fire", "ignored"]),
    ttft_s=st.none() | st.floats(0, 100), s_per_token=st.none() | st.floats(1e-6, 10)),
    max_size=4))
def test_overrides_round_trip_through_their_file(
        tmp_path_factory: pytest.TempPathFactory,
        overrides: dict[str, DeploymentOverride]) -> None:
    path = tmp_path_factory.mktemp("o") / "router.overrides.toml"
    path.write_text(dump_overrides(overrides), encoding="utf-8")
    assert read_overrides(str(path)) == overrides


def test_applying_overrides_changes_only_what_was_measured() -> None:
    catalog = Catalog.default()
    applied = apply_overrides(catalog, {
        "fireworks/starcoder2-7b": DeploymentOverride(measured_at=NOW, context_window=4096,
                                                      max_stop=2, ttft_s=0.2,
                                                      s_per_token=0.02),
        "gone/deployment": DeploymentOverride(measured_at=NOW, context_window=1),
    })
    dep = applied.deployment("fireworks/starcoder2-7b")
    assert (dep.context_window, dep.max_stop, dep.ttft_s, dep.tokens_per_second) == \
        (4096, 2, 0.2, 50.0)
    claimed = catalog.deployment("fireworks/starcoder2-7b")
    assert dep.input_usd_per_mtok == claimed.input_usd_per_mtok
    assert applied.deployment("deepinfra/starcoder2-15b") == \
        catalog.deployment("deepinfra/starcoder2-15b")
    assert apply_overrides(catalog, {}) is catalog


@pytest.mark.parametrize(("text", "field"), [
    ('[deployments."a"]\nmeasured_at = 2026-12-07T00:00:00Z\ncontext_window = 0\n',
     "context_window"),
    ('[deployments."a"]\ncontext_window = 10\n', "measured_at"),
    ('[deployments."a"]\nmeasured_at = 2026-12-07T00:00:00Z\nwindow = 10\n', "window"),
    ('[other]\nx = 1\n', "other"),
])
def test_a_bad_overrides_file_names_the_file_and_the_field(tmp_path: Path, text: str,
                                                           field: str) -> None:
    path = tmp_path / "router.overrides.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        read_overrides(str(path))
    assert str(path) in str(info.value) and field in str(info.value)


def test_the_default_overrides_path_sits_beside_the_config() -> None:
    assert default_overrides_path("/etc/sr/router.toml") == "/etc/sr/router.overrides.toml"


async def test_the_gateway_routes_with_the_overrides_beside_its_config(tmp_path: Path) -> None:
    from starcoder_router._server.gateway import Gateway

    config = tmp_path / "router.toml"
    config.write_text('[policy]\nobjective = "cheapest"\n')
    (tmp_path / "router.overrides.toml").write_text(
        '[deployments."fireworks/starcoder2-7b"]\nmeasured_at = 2026-12-07T00:00:00Z\n'
        "context_window = 4096\nmax_stop = 2\n")
    gateway = Gateway.from_config(config)
    try:
        dep = gateway.catalog.deployment("fireworks/starcoder2-7b")
        assert (dep.context_window, dep.max_stop) == (4096, 2)
        assert gateway.router(None).catalog.deployment(dep.name).context_window == 4096
    finally:
        await gateway.aclose()


def test_every_small_probe_prompt_is_within_the_plans_bound(exact_counter: object) -> None:
    from starcoder_router import TokenizerCounter

    assert isinstance(exact_counter, TokenizerCounter)
    prompts = [runner.REACH_PROMPT, runner.LATENCY_PROMPT, runner.STRUCTURED_PROMPT,
               runner.STOPS_PROMPT, repeated(8), special_stop_prompt(), *fim_prompts()]
    # A server that reads control strings as text counts them as several tokens each.
    for prompt in prompts + [escape_special_tokens(p) for p in prompts]:
        assert exact_counter.count(prompt) + 4 <= SMALL_PROMPT_TOKENS, prompt


def test_simulate_routes_with_the_overrides_beside_its_config(tmp_path: Path) -> None:
    from starcoder_router import WorkloadRequest, simulate

    config = tmp_path / "router.toml"
    config.write_text('[policy]\nobjective = "cheapest"\n')
    # 6,000 prompt tokens fit the 8,192 Fireworks claims for its cheapest deployment.
    requests = [WorkloadRequest(timestamp=0, kind="completion", prompt_tokens=6000,
                                max_tokens=16, output_tokens=16)]

    def picked() -> str | None:
        [outcome] = simulate(requests, config=config, policies=["configured"]).runs[
            "configured"].outcomes
        return outcome.deployment

    before = picked()
    assert before is not None and before.startswith("fireworks/")
    (tmp_path / "router.overrides.toml").write_text(
        f'[deployments."{before}"]\nmeasured_at = 2026-12-07T00:00:00Z\ncontext_window = 4096\n')
    after = picked()
    assert after is not None and after != before


def test_the_simulator_starts_a_measured_deployment_at_its_time_to_first_token() -> None:
    from starcoder_router._simulate.model import default_behaviour

    catalog = Catalog.default()
    measured = apply_overrides(catalog, {"fireworks/starcoder2-7b": DeploymentOverride(
        measured_at=NOW, ttft_s=0.02, s_per_token=0.005)})
    before = default_behaviour(catalog.deployment("fireworks/starcoder2-7b"), catalog)
    after = default_behaviour(measured.deployment("fireworks/starcoder2-7b"), measured)
    assert (before.ttft_s, after.ttft_s) == (0.3, 0.02)
    assert after.tokens_per_s == pytest.approx(200.0)


def test_the_latency_judgement_takes_the_median() -> None:
    found = judge_latency([0.30, 0.10, 0.20], [0.01, 0.03, 0.02])
    assert found.status == "ok"
    assert found.value == {"ttft_s": 0.20, "s_per_token": 0.02}
    assert judge_latency([0.1], []).value == {"ttft_s": 0.1, "s_per_token": None}
    assert judge_latency([], []).status == "undecided"
