"""The routing decision: pure, over the default catalog and user deployments."""

from __future__ import annotations

import pytest

from starcoder_router import (
    Budget,
    Catalog,
    CompletionRequest,
    CostPolicy,
    Deployment,
    NoRouteError,
    Router,
    TokenizerCounter,
)

KEYS = {"FIREWORKS_API_KEY": "fw-test", "DEEPINFRA_TOKEN": "di-test"}
OLLAMA_3B = Deployment(provider="ollama", variant="starcoder2-3b", model="starcoder2:3b",
                       context_window=16384)


def _router(exact_counter: TokenizerCounter, **kw: object) -> Router:
    kw.setdefault("env", KEYS)
    return Router(tokenizer=exact_counter, **kw)  # type: ignore[arg-type]


def _code(tokens_wanted: int, counter: TokenizerCounter) -> str:
    line = "    result = compute(alpha, beta, gamma)\n"
    per_line = counter.count(line * 10) / 10
    return line * int(tokens_wanted / per_line)


@pytest.mark.parametrize(("fields", "policy", "expected"), [
    ({"prompt": "def fib(n):", "max_tokens": 64}, CostPolicy(), "fireworks/starcoder2-3b"),
    ({"prefix": "def f(", "suffix": "):\n", "max_tokens": 16}, CostPolicy(),
     "fireworks/starcoder2-3b"),
    ({"prompt": "def person():", "response_format": {"type": "json_object"}}, CostPolicy(),
     "deepinfra/starcoder2-15b"),
    ({"prompt": "def fib(n):"}, CostPolicy(min_quality=("humaneval", 35)),
     "fireworks/starcoder2-7b"),
    ({"prompt": "def fib(n):"}, CostPolicy(min_quality=("HumanEval", 40)),
     "deepinfra/starcoder2-15b"),
    ({"prompt": "def fib(n):"}, CostPolicy(objective="quality"), "deepinfra/starcoder2-15b"),
    ({"prompt": "def fib(n):"}, CostPolicy(deny_providers={"fireworks"}),
     "deepinfra/starcoder2-15b"),
    ({"prompt": "def fib(n):"}, CostPolicy(prefer_providers=("deepinfra",)),
     "deepinfra/starcoder2-15b"),
    ({"prompt": "def fib(n):", "max_tokens": 64}, CostPolicy(objective="latency"),
     "fireworks/starcoder2-3b"),
])
def test_default_catalog_choices(exact_counter: TokenizerCounter, fields: dict[str, object],
                                 policy: CostPolicy, expected: str) -> None:
    decision = _router(exact_counter, policy=policy).route(**fields)  # type: ignore[arg-type]
    assert decision.chosen.name == expected
    assert decision.chosen_candidate.eligible


def test_prompt_over_8k_goes_to_the_16k_deployment(exact_counter: TokenizerCounter) -> None:
    prompt = _code(9000, exact_counter)
    decision = _router(exact_counter).route(prompt=prompt, max_tokens=256)
    assert decision.chosen.name == "deepinfra/starcoder2-15b"
    fw = decision.candidate("fireworks/starcoder2-3b")
    assert not fw.eligible and "window 8192" in fw.reasons[0]
    assert fw.count_kind == "exact"
    assert fw.prompt_tokens == exact_counter.count(prompt)


def test_prompt_plus_max_tokens_crossing_8k(exact_counter: TokenizerCounter) -> None:
    prompt = _code(7900, exact_counter)
    n = exact_counter.count(prompt)
    assert n + 200 < 8192 < n + 400
    assert _router(exact_counter).route(prompt=prompt, max_tokens=200).chosen.name == \
        "fireworks/starcoder2-3b"
    assert _router(exact_counter).route(prompt=prompt, max_tokens=400).chosen.name == \
        "deepinfra/starcoder2-15b"


def test_untrimmable_prompt_over_16k_names_every_reason(exact_counter: TokenizerCounter) -> None:
    prompt = _code(17000, exact_counter)
    with pytest.raises(NoRouteError) as info:
        _router(exact_counter).route(prompt=prompt, max_tokens=256)
    msg = str(info.value)
    for name in ("fireworks/starcoder2-3b", "fireworks/starcoder2-7b",
                 "deepinfra/starcoder2-15b"):
        assert name in msg
    assert msg.count("> window") == 3
    decision = info.value.decision
    assert not decision.ranked
    assert all(not c.eligible for c in decision.candidates)


def test_big_fim_request_is_trimmed_per_window(exact_counter: TokenizerCounter) -> None:
    prefix = _code(12000, exact_counter)
    decision = _router(exact_counter).route(prefix=prefix, suffix="\n", max_tokens=128)
    cands = {c.deployment.name: c for c in decision.candidates}
    fw, di = cands["fireworks/starcoder2-3b"], cands["deepinfra/starcoder2-15b"]
    assert fw.eligible and di.eligible
    assert fw.trimmed is not None and di.trimmed is None
    assert fw.rendered is not None and di.rendered is not None
    assert exact_counter.count(fw.rendered.prompt) + 128 <= 8192
    assert di.rendered.prompt.count("compute") > fw.rendered.prompt.count("compute")
    assert decision.chosen.name == "fireworks/starcoder2-3b"
    assert "trimmed" in decision.explain()


def test_prefer_local_picks_a_fitting_local_deployment(exact_counter: TokenizerCounter) -> None:
    catalog = Catalog.default().with_deployments(OLLAMA_3B)
    decision = _router(exact_counter, catalog=catalog,
                       policy=CostPolicy(prefer_local=True)).route(prompt="def f():")
    assert decision.chosen.name == "ollama/starcoder2-3b"
    # Free local is also simply the cheapest.
    decision = _router(exact_counter, catalog=catalog).route(prompt="def f():")
    assert decision.chosen.name == "ollama/starcoder2-3b"


def test_prefer_local_skips_a_local_deployment_that_does_not_fit(
        exact_counter: TokenizerCounter) -> None:
    small = OLLAMA_3B.model_copy(update={"context_window": 4096, "name": "ollama/small"})
    catalog = Catalog.default().with_deployments(small)
    decision = _router(exact_counter, catalog=catalog, policy=CostPolicy(prefer_local=True)
                       ).route(prompt=_code(5000, exact_counter), max_tokens=64)
    assert decision.chosen.name == "fireworks/starcoder2-3b"


def test_unconfigured_hosted_providers_are_refused(exact_counter: TokenizerCounter) -> None:
    with pytest.raises(NoRouteError, match="FIREWORKS_API_KEY"):
        _router(exact_counter, env={}).route(prompt="x")
    decision = _router(exact_counter, env={"DEEPINFRA_API_TOKEN": "k"}).route(prompt="x")
    assert decision.chosen.name == "deepinfra/starcoder2-15b"


def test_cost_cap_filters_on_worst_case(exact_counter: TokenizerCounter) -> None:
    # 3B worst case for 1000 output tokens is $0.0001 + prompt; a cap below it leaves nothing.
    policy = CostPolicy(max_cost_per_request_usd=0.00005)
    with pytest.raises(NoRouteError, match="per-request cap"):
        _router(exact_counter, policy=policy).route(prompt="def f():", max_tokens=1000)
    policy = CostPolicy(max_cost_per_request_usd=0.00011)
    decision = _router(exact_counter, policy=policy).route(prompt="def f():", max_tokens=1000)
    assert decision.chosen.name == "fireworks/starcoder2-3b"
    assert [c.deployment.name for c in decision.ranked] == ["fireworks/starcoder2-3b"]


def test_worst_case_and_expected_costs(exact_counter: TokenizerCounter) -> None:
    decision = _router(exact_counter).route(prompt="def fib(n):", max_tokens=100)
    di = decision.candidate("deepinfra/starcoder2-15b")
    # worst case: bound (11 bytes) x $0.20/M + 100 x $0.60/M
    assert di.count_kind == "bound" and di.prompt_tokens == 11
    assert di.worst_case_usd == pytest.approx(11 * 0.2e-6 + 100 * 0.6e-6)
    assert di.expected_usd is not None and di.expected_usd <= di.worst_case_usd


def test_missing_capability_and_quality_reasons(exact_counter: TokenizerCounter) -> None:
    policy = CostPolicy(min_quality=("humaneval", 40))
    decision = _router(exact_counter, policy=policy).route(
        prompt="x", response_format={"type": "json_object"})
    fw3 = decision.candidate("fireworks/starcoder2-3b")
    assert "lacks structured_output" in fw3.reasons
    assert "humaneval 31.7 < 40" in fw3.reasons


def test_chat_needs_an_instruct_deployment(exact_counter: TokenizerCounter) -> None:
    with pytest.raises(NoRouteError, match="lacks chat"):
        _router(exact_counter).route(messages=[{"role": "user", "content": "hi"}])
    instruct = Deployment(provider="ollama", variant="starcoder2-15b-instruct",
                          model="starcoder2:15b-instruct", context_window=16384,
                          capabilities={"completion", "chat", "streaming"})
    catalog = Catalog.default().with_deployments(instruct)
    decision = _router(exact_counter, catalog=catalog).route(
        messages=[{"role": "user", "content": "hi"}])
    assert decision.chosen.name == "ollama/starcoder2-15b-instruct"


def test_raw_fim_prompt_needs_a_fim_deployment(exact_counter: TokenizerCounter) -> None:
    # an instruct deployment that takes raw completions but not FIM, and costs nothing
    instruct = Deployment(provider="ollama", variant="starcoder2-15b-instruct",
                          model="starcoder2:15b-instruct", context_window=16384,
                          capabilities={"completion", "chat", "streaming"})
    router = _router(exact_counter, catalog=Catalog.default().with_deployments(instruct))
    plain = router.route(prompt="def add(a, b):")
    assert plain.chosen.name == "ollama/starcoder2-15b-instruct"
    fim = router.route(prompt="<fim_prefix>def add(a, b):\n    <fim_suffix>\n<fim_middle>")
    assert "lacks fim" in fim.candidate("ollama/starcoder2-15b-instruct").reasons
    assert fim.chosen.name.startswith("fireworks/")


def test_quality_floor_on_a_benchmark_a_variant_lacks(exact_counter: TokenizerCounter) -> None:
    decision = _router(exact_counter, policy=CostPolicy(min_quality=("mbpp", 60))).route(
        prompt="x")
    assert decision.chosen.name == "deepinfra/starcoder2-15b"
    assert "no mbpp score for starcoder2-3b" in decision.candidate(
        "fireworks/starcoder2-3b").reasons


def test_a_measured_time_to_first_token_sets_the_latency_prior(
        exact_counter: TokenizerCounter) -> None:
    # Same variant, so the same decode-speed prior: only the fixed overhead tells them apart.
    slow = OLLAMA_3B.model_copy(update={"ttft_s": 0.5})
    fast = Deployment(provider="vllm", variant="starcoder2-3b", model="starcoder2-3b",
                      context_window=16384, base_url="http://127.0.0.1:8000/v1", ttft_s=0.02)
    router = _router(exact_counter, catalog=Catalog.default().with_deployments(slow, fast),
                     policy=CostPolicy(objective="latency"))
    decision = router.route(prompt="def fib(n):", max_tokens=64)
    assert decision.chosen.name == "vllm/starcoder2-3b"
    assert decision.candidate("ollama/starcoder2-3b").expected_latency_s == pytest.approx(
        decision.candidate("vllm/starcoder2-3b").expected_latency_s + 0.48)

    # A hosted deployment measured faster than a local one's prior beats it: unmeasured, the
    # hosted prior's 0.3 s of network loses to the local prior's 0.05 s.
    measured = Catalog.default().deployment("fireworks/starcoder2-3b").model_copy(
        update={"ttft_s": 0.01})
    both = Catalog.default().with_deployments(OLLAMA_3B, measured)
    assert _router(exact_counter, catalog=both, policy=CostPolicy(objective="latency")).route(
        prompt="def fib(n):", max_tokens=64).chosen.name == "fireworks/starcoder2-3b"
    unmeasured = Catalog.default().with_deployments(OLLAMA_3B)
    assert _router(exact_counter, catalog=unmeasured, policy=CostPolicy(objective="latency")
                   ).route(prompt="def fib(n):", max_tokens=64).chosen.name == \
        "ollama/starcoder2-3b"


def test_balanced_objective_ranks_everything_eligible(exact_counter: TokenizerCounter) -> None:
    decision = _router(exact_counter, policy=CostPolicy(objective="balanced")).route(prompt="x")
    assert len(decision.ranked) == 3
    assert decision.fallbacks == tuple(c.deployment for c in decision.ranked[1:])


def test_explain_lists_every_candidate(exact_counter: TokenizerCounter) -> None:
    decision = _router(exact_counter, policy=CostPolicy(min_quality=("humaneval", 35))
                       ).route(prompt="def f():", max_tokens=32)
    text = decision.explain()
    assert "objective: cheapest" in text
    assert "chosen" in text and "fallback" in text and "refused: humaneval 31.7 < 35" in text
    assert text.count("\n") == 2 + 3


def test_route_does_no_io(exact_counter: TokenizerCounter, monkeypatch: pytest.MonkeyPatch
                          ) -> None:
    import socket

    def forbidden(*a: object, **k: object) -> None:
        raise AssertionError("route() touched the network")

    monkeypatch.setattr(socket.socket, "connect", forbidden)
    _router(exact_counter).route(prompt="def f():")


def test_route_accepts_a_request_object(exact_counter: TokenizerCounter) -> None:
    req = CompletionRequest(prompt="def f():", max_tokens=8)
    assert _router(exact_counter).route(req).request is req


def test_budgets_declared_on_the_policy(exact_counter: TokenizerCounter) -> None:
    policy = CostPolicy(budgets=[Budget(limit_usd=1, period="day"),
                                 Budget(limit_usd=0.5, period="month", scope="tenant")])
    assert [b.name for b in policy.budgets] == ["global/day", "tenant:*/month"]
    assert _router(exact_counter, policy=policy).route(prompt="x").chosen is not None


def test_3000_deployments_route_linearly(exact_counter: TokenizerCounter) -> None:
    many = [Deployment(provider="vllm", variant="starcoder2-7b", model=f"m{i}",
                       name=f"vllm/{i}", context_window=16384, base_url=f"http://h{i}:8000/v1")
            for i in range(3000)]
    catalog = Catalog.default().with_deployments(*many)
    decision = _router(exact_counter, catalog=catalog).route(prompt="def f():")
    assert len(decision.candidates) == 3003
    assert decision.chosen.provider == "vllm"
