"""`starcoder-router doctor` against a loopback stand-in for every provider: what each really
does is measured, differences from the catalog are found and written, and the written file is
what routing then uses. Hosted providers' base URLs point at the stand-ins: nothing leaves the
machine."""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from starcoder_router import BadRequestError, RetryPolicy, Router, TokenCounter
from starcoder_router._cli import main
from starcoder_router._doctor.probes import PROBES
from starcoder_router._doctor.runner import probe_stops
from starcoder_router._doctor.session import Session
from starcoder_router._providers.call import Endpoint
from starcoder_router._providers.fireworks import Fireworks
from starcoder_router._routing.catalog import Catalog
from starcoder_router._routing.cost import actual_cost_nano, nano_to_usd
from starcoder_router._secrets import Secret
from starcoder_router._transports.httpx_transport import HttpxTransport
from support.ports import free_port
from support.stand_ins import (
    DEFAULTS,
    DEPLOYMENT_NAMES,
    KEY,
    StandIn,
    base_url,
    deployment_entry,
    stand_in,
    write_config,
)


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as s:
        yield s


def doctor(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any], str]:
    code = main(["doctor", "--json", *args])
    out = capsys.readouterr()
    return code, json.loads(out.out), out.err


def findings(report: dict[str, Any], name: str) -> dict[str, dict[str, Any]]:
    [dep] = [d for d in report["deployments"] if d["name"] == name]
    return {f["probe"]: f for f in dep["findings"]}


@pytest.mark.parametrize("provider", sorted(DEFAULTS))
def test_every_provider_as_documented(provider: str, tmp_path: Path, stack: ExitStack,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    si = stack.enter_context(stand_in(provider))
    config = write_config(tmp_path / "router.toml", [si])
    name = DEPLOYMENT_NAMES[provider]

    code, report, err = doctor(capsys, "--config", str(config), "--deployment", name, "--yes")

    assert code == 0, err
    found = findings(report, name)
    assert {p: f["status"] for p, f in found.items() if f["status"] in ("failed",)} == {}
    assert found["reach"]["status"] == "ok"
    assert found["model"]["status"] == "ok"
    assert found["window"]["status"] == "ok"
    assert found["stops"]["status"] == "ok"
    assert found["stops"]["value"] == si.behaviour.max_stop
    assert found["special-stop"]["value"] == "fire"  # the router's requests make it fire
    assert found["fim"]["value"] == "control"
    assert found["usage"]["status"] == "ok"
    assert found["retry-after"]["status"] == "undecided"
    assert report["requests"] == si.completions
    # The plan's worst case counts every request a run can make.
    assert report["requests"] <= sum(len(p.requests) for p in PROBES)
    if provider == "deepinfra":
        assert found["billed"]["status"] == "ok"
    else:
        assert found["billed"]["status"] == "undecided"
    if provider in ("fireworks", "deepinfra"):
        assert report["spent_usd"] > 0
        assert all(b.get("model") != "" for b in si.received)


def test_differences_from_the_catalog_are_found_and_written(
        tmp_path: Path, stack: ExitStack, capsys: pytest.CaptureFixture[str]) -> None:
    fw = stack.enter_context(stand_in("fireworks", window=4096, max_stop=2, rate_limited=1,
                                      retry_after="0.01"))
    di = stack.enter_context(stand_in("deepinfra", specials="shown", usage_stream=False,
                                      model="bigcode/starcoder2-7b", rate_limited=1))
    oa = stack.enter_context(stand_in("openai-compatible", window=3000))  # says no number
    ol = stack.enter_context(stand_in("ollama", window=2048, truncates=True))
    tg = stack.enter_context(stand_in("tgi", max_stop=8, refuses_control_regex=True))
    config = write_config(tmp_path / "router.toml", [fw, di, oa, ol, tg])
    names = [DEPLOYMENT_NAMES[p] for p in ("fireworks", "deepinfra", "openai-compatible",
                                           "ollama", "tgi")]
    out = tmp_path / "router.overrides.toml"

    code, report, err = doctor(capsys, "--config", str(config), "--deployment", *names, "--yes",
                               "--write", str(out))

    assert code == 0, err
    f = findings(report, "fireworks/starcoder2-7b")
    assert (f["window"]["status"], f["window"]["value"]) == ("differs", 4096)
    assert (f["stops"]["status"], f["stops"]["value"]) == ("differs", 2)
    assert f["retry-after"]["status"] == "ok" and f["retry-after"]["value"] == [0.01]
    d = findings(report, "deepinfra/starcoder2-15b")
    assert (d["special-stop"]["status"], d["special-stop"]["value"]) == ("differs", "ignored")
    assert d["model"]["status"] == "differs"
    assert d["usage"]["value"] == {"plain": True, "streamed": False}
    assert d["retry-after"]["status"] == "differs"  # a 429 without a retry time
    o = findings(report, "openai-compatible/starcoder2-3b")
    # No number in the error: the bisection brackets the window and keeps the safe side.
    assert o["window"]["status"] == "differs"
    assert 2900 <= o["window"]["value"] <= 3000
    assert "truncates silently" in findings(report, "ollama/starcoder2-3b")["window"]["detail"]
    t = findings(report, "tgi/starcoder2-3b")
    assert (t["stops"]["status"], t["stops"]["value"]) == ("differs", 8)
    assert t["structured"]["status"] == "failed" and "Grammar" in t["structured"]["detail"]

    written = tomllib.loads(out.read_text())["deployments"]
    assert written["fireworks/starcoder2-7b"]["context_window"] == 4096
    assert written["fireworks/starcoder2-7b"]["max_stop"] == 2
    assert written["deepinfra/starcoder2-15b"]["special_stops"] == "ignored"
    assert written["openai-compatible/starcoder2-3b"]["context_window"] == o["window"]["value"]
    assert written["ollama/starcoder2-3b"]["context_window"] == 2048
    assert written["tgi/starcoder2-3b"]["max_stop"] == 8
    assert all("measured_at" in w and "ttft_s" in w for w in written.values())


def test_a_learned_window_changes_the_pick(tmp_path: Path, stack: ExitStack,
                                          capsys: pytest.CaptureFixture[str],
                                          exact_counter: TokenCounter) -> None:
    fw = stack.enter_context(stand_in("fireworks", window=4096))
    di = stack.enter_context(stand_in("deepinfra"))
    config = write_config(tmp_path / "router.toml", [fw, di],
                          extra='\n[policy]\nobjective = "cheapest"\n')
    # 6,000 tokens: inside the 8,192 Fireworks claims, outside the 4,096 it holds.
    request = {"prompt": " x" * 6000, "max_tokens": 16}
    env = {"FIREWORKS_API_KEY": KEY, "DEEPINFRA_TOKEN": KEY}
    with Router.from_config(config, env=env, tokenizer=exact_counter) as before:
        assert before.route(**request).chosen.provider == "fireworks"

    code, _, err = doctor(capsys, "--config", str(config), "--yes", "--write",
                          str(tmp_path / "router.overrides.toml"),
                          "--deployment", "fireworks/starcoder2-7b", "fireworks/starcoder2-3b")
    assert code == 0, err

    # Read from beside the config without being named...
    with Router.from_config(config, env=env, tokenizer=exact_counter) as after:
        assert after.catalog.deployment("fireworks/starcoder2-7b").context_window == 4096
        assert after.route(**request).chosen.name == "deepinfra/starcoder2-15b"
        assert after.route(prompt="def f():", max_tokens=16).chosen.provider == "fireworks"
    # ...or named by `overrides`, relative to the config's folder.
    (tmp_path / "router.overrides.toml").rename(tmp_path / "measured.toml")
    named = tmp_path / "named.toml"
    named.write_text('overrides = "measured.toml"\n' + config.read_text())
    with Router.from_config(named, env=env, tokenizer=exact_counter) as again:
        assert again.route(**request).chosen.name == "deepinfra/starcoder2-15b"


def test_a_learned_stop_limit_is_what_requests_send(tmp_path: Path, stack: ExitStack,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    fw = stack.enter_context(stand_in("fireworks", max_stop=2))
    config = write_config(tmp_path / "router.toml", [fw])
    env = {"FIREWORKS_API_KEY": KEY}
    stops = ["\n\n", "#", "<<a>>", "<<b>>"]
    with (Router.from_config(config, env=env, tokenizer=False,
                             retry=RetryPolicy(max_retries=0)) as r,
          pytest.raises(BadRequestError, match="stop: at most 2")):
        r.complete(prompt="def f():", max_tokens=4, stop=stops)

    code, _, err = doctor(capsys, "--config", str(config), "--yes", "--write",
                          str(tmp_path / "router.overrides.toml"),
                          "--deployment", "fireworks/starcoder2-7b", "fireworks/starcoder2-3b")
    assert code == 0, err
    with Router.from_config(config, env=env, tokenizer=False) as r:
        completion = r.complete(prompt="def f():", max_tokens=4, stop=stops)
    assert len(fw.received[-1]["stop"]) == 2
    assert completion.deployment.provider == "fireworks"


def test_hosted_probes_need_consent(tmp_path: Path, stack: ExitStack,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    fw = stack.enter_context(stand_in("fireworks"))
    vl = stack.enter_context(stand_in("vllm"))
    config = write_config(tmp_path / "router.toml", [fw, vl])

    code, report, err = doctor(capsys, "--config", str(config), "--deployment",
                               "fireworks/starcoder2-7b", "vllm/starcoder2-3b")

    assert code == 0
    assert "need --yes" in err and "fireworks/starcoder2-7b" in err
    assert fw.completions == 0 and not fw.received
    assert findings(report, "fireworks/starcoder2-7b")["reach"]["status"] == "skipped"
    assert findings(report, "vllm/starcoder2-3b")["window"]["status"] == "ok"
    # The plan, with the worst case, went to stderr before anything was sent.
    assert "worst case for the whole run: $" in err


@pytest.mark.parametrize(("bos", "status"), [(0, "ok"), (1, "ok"), (9, "differs")])
def test_usage_is_checked_against_the_configured_tokenizer(
        bos: int, status: str, tmp_path: Path, stack: ExitStack, tokenizer_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    si = stack.enter_context(stand_in("vllm", bos_tokens=bos))  # adds tokens to every count
    config = write_config(tmp_path / "router.toml", [si])
    config.write_text(f'tokenizer = "{tokenizer_path}"\n' + config.read_text())  # top level

    code, report, err = doctor(capsys, "--config", str(config), "--deployment",
                               "vllm/starcoder2-3b")

    assert code == 0, err
    usage = findings(report, "vllm/starcoder2-3b")["usage"]
    assert usage["status"] == status, usage["detail"]
    if status == "differs":
        assert "our tokenizer counts 4" in usage["detail"]


@pytest.mark.parametrize(("answer", "sent"), [("y", True), ("yes", True), ("n", False),
                                              ("", False)])
def test_a_terminal_is_asked_before_hosted_probes(
        answer: str, sent: bool, tmp_path: Path, stack: ExitStack,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    fw = stack.enter_context(stand_in("fireworks"))
    config = write_config(tmp_path / "router.toml", [fw])
    asked: list[str] = []
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt: asked.append(prompt) or answer)

    code = main(["doctor", "--config", str(config), "--deployment", "fireworks/starcoder2-7b"])

    out = capsys.readouterr().out
    assert code == 0
    assert asked and "1 deployment(s)" in asked[0]
    assert (fw.completions > 0) is sent
    # The plan with its worst case was shown before the question.
    assert "worst case for the whole run" in out


def test_a_refused_key_fails_reach_and_never_shows_the_key(
        tmp_path: Path, stack: ExitStack, capsys: pytest.CaptureFixture[str]) -> None:
    fw = stack.enter_context(stand_in("fireworks", api_key="the-right-key"))
    config = write_config(tmp_path / "router.toml", [fw])

    code = main(["doctor", "--config", str(config), "--deployment", "fireworks/starcoder2-7b",
                 "--yes"])

    out = capsys.readouterr()
    assert code == 1
    assert re.search(r"reach +failed +key refused", out.out)
    assert fw.requests == 1  # nothing more is sent once the key is refused
    assert KEY not in out.out + out.err


def test_the_table_names_the_spend_and_an_unreachable_deployment(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dead = StandIn("vllm", DEFAULTS["vllm"], {}, port=free_port())  # never started: refuses
    config = tmp_path / "router.toml"
    config.write_text(deployment_entry(dead))

    code = main(["doctor", "--config", str(config)])

    out = capsys.readouterr().out
    assert code == 1
    assert re.search(r"vllm/starcoder2-3b +reach +failed +unreachable", out)
    assert re.search(r"vllm/starcoder2-3b +window +skipped +not reachable", out)
    # The catalog's hosted deployments were not confirmed, so nothing was sent to them.
    assert re.search(r"fireworks/starcoder2-7b +reach +skipped", out)
    assert "spent: $0.000000 over 1 requests" in out


def test_a_broken_overrides_file_stops_the_run_before_anything_is_sent(
        tmp_path: Path, stack: ExitStack, capsys: pytest.CaptureFixture[str]) -> None:
    fw = stack.enter_context(stand_in("fireworks"))
    config = write_config(tmp_path / "router.toml", [fw])
    broken = tmp_path / "elsewhere.toml"
    broken.write_text('[deployments."x"]\ncontext_window = 1\n')  # no measured_at

    code = main(["doctor", "--config", str(config), "--yes", "--write", str(broken)])

    assert code == 2
    assert "measured_at" in capsys.readouterr().err
    assert fw.requests == 0


def test_new_measurements_keep_the_others_in_the_file(
        tmp_path: Path, stack: ExitStack, capsys: pytest.CaptureFixture[str]) -> None:
    fw = stack.enter_context(stand_in("fireworks", window=2048))
    config = write_config(tmp_path / "router.toml", [fw])
    out = tmp_path / "router.overrides.toml"
    out.write_text('[deployments."deepinfra/starcoder2-15b"]\n'
                   "measured_at = 2026-12-01T00:00:00Z\ncontext_window = 8000\n")

    assert main(["doctor", "--config", str(config), "--yes", "--write", str(out),
                 "--deployment", "fireworks/starcoder2-7b"]) == 0

    written = tomllib.loads(out.read_text())["deployments"]
    assert written["deepinfra/starcoder2-15b"]["context_window"] == 8000
    assert written["fireworks/starcoder2-7b"]["context_window"] == 2048
    capsys.readouterr()


def test_an_unknown_deployment_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--deployment", "nope/x"]) == 2
    assert "unknown deployment 'nope/x'" in capsys.readouterr().err


@pytest.mark.parametrize(("limit", "status", "value"), [
    (1, "differs", 1), (3, "differs", 3), (4, "ok", 4), (5, "differs", 5), (17, "differs", 17),
    (31, "differs", 31), (40, "differs", 32), (None, "differs", 32),
])
def test_the_stop_search_finds_any_limit_within_its_bound(
        limit: int | None, status: str, value: int, stack: ExitStack) -> None:
    si = stack.enter_context(stand_in("fireworks", max_stop=limit))
    dep = Catalog.default().deployment("fireworks/starcoder2-7b")
    transport = HttpxTransport()
    stack.callback(transport.close)
    session = Session(dep, Fireworks(), Endpoint("fireworks", base_url(si), Secret(KEY)),
                      transport)

    found = probe_stops(session)

    assert (found.status, found.value) == (status, value), found.detail
    assert session.report.requests <= 8


def test_quirks_the_catalog_does_not_know_are_named_or_left_undecided(
        tmp_path: Path, stack: ExitStack, capsys: pytest.CaptureFixture[str]) -> None:
    lm = stack.enter_context(stand_in("lmstudio", sentinels_as_text=True))
    ol = stack.enter_context(stand_in("ollama", specials="hidden"))
    config = write_config(tmp_path / "router.toml", [lm, ol])
    out = tmp_path / "router.overrides.toml"

    code, report, err = doctor(capsys, "--config", str(config), "--write", str(out),
                               "--deployment", "lmstudio/starcoder2-3b", "ollama/starcoder2-3b")

    assert code == 0, err
    fim = findings(report, "lmstudio/starcoder2-3b")["fim"]
    assert (fim["status"], fim["value"]) == ("differs", "text"), fim["detail"]
    # The server hides <file_sep> and does not stop on it: nothing shows whether it would.
    special = findings(report, "ollama/starcoder2-3b")["special-stop"]
    assert (special["status"], special["value"]) == ("undecided", None)
    assert "cannot be told" in special["detail"]
    assert "special_stops" not in tomllib.loads(out.read_text())["deployments"][
        "ollama/starcoder2-3b"]


def test_a_bill_other_than_usage_times_the_price_is_named(
        tmp_path: Path, stack: ExitStack, capsys: pytest.CaptureFixture[str]) -> None:
    di = stack.enter_context(stand_in("deepinfra", cost_per_mtok=(0.40, 1.20)))  # twice the list
    config = write_config(tmp_path / "router.toml", [di])

    code, report, err = doctor(capsys, "--config", str(config), "--yes",
                               "--deployment", "deepinfra/starcoder2-15b")

    assert code == 0, err
    billed = findings(report, "deepinfra/starcoder2-15b")["billed"]
    assert billed["status"] == "differs"
    assert billed["value"]["reported_usd"] == pytest.approx(2 * billed["value"]["expected_usd"])


def test_the_spend_is_what_the_answered_requests_used(
        tmp_path: Path, stack: ExitStack, capsys: pytest.CaptureFixture[str]) -> None:
    # Refusals of every kind: a 429, prompts over the window, too many stops.
    fw = stack.enter_context(stand_in("fireworks", window=4096, max_stop=2, rate_limited=1,
                                      retry_after="0.01"))
    config = write_config(tmp_path / "router.toml", [fw])
    dep = Catalog.default().deployment("fireworks/starcoder2-7b")

    code, report, err = doctor(capsys, "--config", str(config), "--yes",
                               "--deployment", dep.name)

    assert code == 0, err
    refused = fw.completions - len(fw.answered)
    assert refused >= 3
    used = sum(actual_cost_nano(dep, prompt, output) for prompt, output in fw.answered)
    assert report["spent_usd"] == nano_to_usd(used) > 0
    assert report["requests"] == fw.completions
    worst = re.search(r"worst case for the whole run: \$([0-9.]+)", err)
    assert worst and report["spent_usd"] <= float(worst[1])


def _window_requests(si: StandIn) -> list[dict[str, Any]]:
    """The bodies the window probe sent: prompts of `" x"` repeated."""
    def prompt(body: dict[str, Any]) -> str:
        return str(body.get("prompt", body.get("inputs", "")))
    return [b for b in si.received if prompt(b).startswith(" x x") and not prompt(b).strip(" x")]


def _max_tokens(body: dict[str, Any]) -> int:
    options = body.get("options") or body.get("parameters") or {}
    return int(body.get("max_tokens") or options.get("num_predict")
               or options.get("max_new_tokens"))


@pytest.mark.parametrize(("provider", "window", "value", "most"), [
    ("fireworks", 8192, 8192, 3),  # as claimed: one over, one at
    ("fireworks", 4096, 4096, 3),  # named in the error, then confirmed
    ("tgi", 3000, 3000, 3),
    ("llamacpp", 2048, 2048, 3),
    ("vllm", 5000, 5000, 3),
    ("lmstudio", 1024, 1024, 3),
    ("openai-compatible", 3000, None, 10),  # no number in the error: a bounded bisection
])
def test_the_window_is_found_with_few_one_token_requests(
        provider: str, window: int, value: int | None, most: int, tmp_path: Path,
        stack: ExitStack, capsys: pytest.CaptureFixture[str]) -> None:
    si = stack.enter_context(stand_in(provider, window=window))
    config = write_config(tmp_path / "router.toml", [si])
    name = DEPLOYMENT_NAMES[provider]

    code, report, err = doctor(capsys, "--config", str(config), "--yes", "--deployment", name)

    assert code == 0, err
    found = findings(report, name)["window"]
    if value is None:
        assert window - 64 <= found["value"] <= window, found["detail"]
    else:
        assert found["value"] == value, found["detail"]
    sent = _window_requests(si)
    assert 2 <= len(sent) <= most
    assert {_max_tokens(b) for b in sent} == {1}


def test_no_request_from_these_tests_can_reach_a_hosted_endpoint(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    # Keys and --yes, but the catalog's real base URLs: the loopback guard refuses them.
    monkeypatch.setenv("FIREWORKS_API_KEY", KEY)
    monkeypatch.setenv("DEEPINFRA_TOKEN", KEY)
    hosted = [d.name for d in Catalog.default().deployments if not d.is_local]

    code, report, _ = doctor(capsys, "--yes", "--deployment", *hosted)

    assert code == 1
    for name in hosted:
        reach = findings(report, name)["reach"]
        assert reach["status"] == "failed" and "loopback" in reach["detail"], reach
    assert report["spent_usd"] == 0


def test_latency_is_measured_on_streams_and_written(
        tmp_path: Path, stack: ExitStack, capsys: pytest.CaptureFixture[str]) -> None:
    si = stack.enter_context(stand_in("vllm", token_delay_s=0.02))  # before every event
    config = write_config(tmp_path / "router.toml", [si])
    out = tmp_path / "router.overrides.toml"

    code, report, err = doctor(capsys, "--config", str(config), "--write", str(out),
                               "--deployment", "vllm/starcoder2-3b")

    assert code == 0, err
    latency = findings(report, "vllm/starcoder2-3b")["latency"]
    assert latency["status"] == "ok"
    assert latency["value"]["ttft_s"] >= 0.02
    # Events carry one or more tokens each, so a token costs a share of the delay.
    assert 0.002 <= latency["value"]["s_per_token"] <= 0.5
    written = tomllib.loads(out.read_text())["deployments"]["vllm/starcoder2-3b"]
    assert written["ttft_s"] == pytest.approx(latency["value"]["ttft_s"], rel=1e-3)
    assert written["s_per_token"] == pytest.approx(latency["value"]["s_per_token"], rel=1e-3)
    assert sum(1 for b in si.received if b.get("stream")) == 3


def test_a_learned_time_to_first_token_changes_the_pick(
        tmp_path: Path, stack: ExitStack, capsys: pytest.CaptureFixture[str]) -> None:
    # llama.cpp streams its tokens faster but takes 0.3 s to start; vLLM starts at once.
    slow = stack.enter_context(stand_in("llamacpp", token_delay_s=0.002,
                                        first_token_delay_s=0.3))
    quick = stack.enter_context(stand_in("vllm", token_delay_s=0.012))
    config = write_config(tmp_path / "router.toml", [slow, quick],
                          extra='\n[policy]\nobjective = "latency"\n')
    request = {"prompt": "def f():", "max_tokens": 16}

    code, report, err = doctor(capsys, "--config", str(config), "--write",
                               str(tmp_path / "router.overrides.toml"), "--deployment",
                               "llamacpp/starcoder2-3b", "vllm/starcoder2-3b")

    assert code == 0, err
    ttft = findings(report, "llamacpp/starcoder2-3b")["latency"]["value"]["ttft_s"]
    assert ttft >= 0.3
    with Router.from_config(config, env={}, tokenizer=False) as router:
        assert router.catalog.deployment("llamacpp/starcoder2-3b").ttft_s == pytest.approx(
            ttft, rel=1e-3)
        decision = router.route(**request)
        # Its time per token alone would still pick llama.cpp; the wait for the first one
        # puts it behind.
        assert decision.chosen.name == "vllm/starcoder2-3b"
        assert decision.candidate("llamacpp/starcoder2-3b").expected_latency_s \
            >= ttft > decision.candidate("vllm/starcoder2-3b").expected_latency_s


def test_an_interrupted_run_still_shows_what_it_spent(
        tmp_path: Path, stack: ExitStack, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    fw = stack.enter_context(stand_in("fireworks"))
    di = stack.enter_context(stand_in("deepinfra"))
    config = write_config(tmp_path / "router.toml", [fw, di])
    dep = Catalog.default().deployment("fireworks/starcoder2-7b")

    def interrupted(session: Session) -> None:
        raise KeyboardInterrupt  # Ctrl-C while the stop limit is searched

    monkeypatch.setattr("starcoder_router._doctor.runner.probe_stops", interrupted)
    code = main(["doctor", "--config", str(config), "--yes", "--deployment", dep.name,
                 "deepinfra/starcoder2-15b"])

    out = capsys.readouterr()
    assert code == 130
    assert re.search(r"fireworks/starcoder2-7b +window +ok", out.out)
    assert re.search(r"fireworks/starcoder2-7b +stops +skipped +interrupted", out.out)
    assert re.search(r"deepinfra/starcoder2-15b +reach +skipped +interrupted", out.out)
    assert di.requests == 0
    used = sum(actual_cost_nano(dep, p, o) for p, o in fw.answered)
    assert f"spent: ${nano_to_usd(used):.6f} over {fw.completions} requests" in out.out


def test_a_request_cut_off_in_flight_counts_at_its_bound() -> None:
    class CutOff:
        def send(self, *args: Any, **kwargs: Any) -> Any:
            raise KeyboardInterrupt

    dep = Catalog.default().deployment("fireworks/starcoder2-7b")
    session = Session(dep, Fireworks(), Endpoint("fireworks", "http://127.0.0.1:9", Secret(KEY)),
                      CutOff())  # type: ignore[arg-type]

    with pytest.raises(KeyboardInterrupt):
        session.send("def f():", 8)

    # The provider may bill it: its UTF-8 bytes bound the prompt, max_tokens the output.
    assert session.report.spent_nano == actual_cost_nano(dep, len(b"def f():"), 8) > 0
    assert session.report.usage_missing == 1


def test_a_window_that_takes_more_without_saying_how_much_it_read_is_undecided(
        tmp_path: Path, stack: ExitStack, capsys: pytest.CaptureFixture[str]) -> None:
    # Truncates silently and reports no usage: whether it read the whole prompt is unknown.
    si = stack.enter_context(stand_in("ollama", window=2048, truncates=True, usage_plain=False))
    config = write_config(tmp_path / "router.toml", [si])
    out = tmp_path / "router.overrides.toml"

    code, report, err = doctor(capsys, "--config", str(config), "--write", str(out),
                               "--deployment", "ollama/starcoder2-3b")

    assert code == 0, err
    window = findings(report, "ollama/starcoder2-3b")["window"]
    assert (window["status"], window["value"]) == ("undecided", None), window["detail"]
    assert "context_window" not in tomllib.loads(out.read_text())["deployments"].get(
        "ollama/starcoder2-3b", {})


def test_each_run_measures_against_the_catalog_not_the_last_measurement(
        tmp_path: Path, stack: ExitStack, capsys: pytest.CaptureFixture[str]) -> None:
    fw = stack.enter_context(stand_in("fireworks", window=4096, max_stop=2))
    config = write_config(tmp_path / "router.toml", [fw])
    out = tmp_path / "router.overrides.toml"  # beside the config: routing reads it
    name = "fireworks/starcoder2-7b"
    args = ("--config", str(config), "--yes", "--write", str(out), "--deployment", name)
    assert doctor(capsys, *args)[0] == 0
    assert tomllib.loads(out.read_text())["deployments"][name]["context_window"] == 4096

    fw.behaviour = fw.behaviour.but(window=8192, max_stop=4)  # the provider went back
    code, report, err = doctor(capsys, *args)

    assert code == 0, err
    found = findings(report, name)
    assert (found["window"]["status"], found["window"]["value"]) == ("ok", 8192)
    assert (found["stops"]["status"], found["stops"]["value"]) == ("ok", 4)
    written = tomllib.loads(out.read_text())["deployments"][name]
    assert (written["context_window"], written["max_stop"]) == (8192, 4)
