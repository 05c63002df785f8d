"""Properties of the pure core (no I/O), checked by hypothesis over generated catalogs, requests
and store interleavings:

* the chosen deployment always fits the prompt plus `max_tokens` in its window;
* under `cheapest` it is the cheapest eligible one, and the fallbacks follow the objective;
* trimming keeps the FIM sentinels and the lines nearest the cursor;
* reserve / settle / release keep spent + reserved within the limit in every interleaving;
* rendering then counting matches the real tokenizer, sentinels counted as one token each.
"""

from __future__ import annotations

import contextlib
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from starcoder_router import (
    BudgetExceededError,
    BudgetKey,
    Catalog,
    CostPolicy,
    Deployment,
    MemoryStore,
    NoRouteError,
    Router,
    RoutingDecision,
    TokenizerCounter,
)
from starcoder_router._routing.render import FIM_MIDDLE, FIM_PREFIX, FIM_SUFFIX

FAST = settings(max_examples=40, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

code_line = st.text(alphabet="abcdefgh xyz_=+()[]:.,0123456789\t'\"", max_size=40).map(
    lambda s: s + "\n")
code = st.lists(code_line, max_size=30).map("".join)
prices = st.floats(min_value=0.01, max_value=5.0, allow_nan=False)


@st.composite
def deployments(draw: st.DrawFn) -> list[Deployment]:
    n = draw(st.integers(min_value=1, max_value=5))
    return [Deployment(
        name=f"d{i}", provider="vllm", variant="starcoder2-15b", model=f"m{i}",
        context_window=draw(st.sampled_from([256, 512, 1024, 4096, 16384])),
        base_url=f"http://127.0.0.1:{9000 + i}/v1", pricing="serverless",
        input_usd_per_mtok=draw(prices), output_usd_per_mtok=draw(prices),
        capabilities=frozenset({"completion", "fim", "streaming"}),
    ) for i in range(n)]


class _Routes:
    """`route()` over the generated deployments; a request nothing can take gives the decision
    that says so instead of raising."""

    def __init__(self, deps: list[Deployment], counter: TokenizerCounter,
                 objective: str = "cheapest"):
        self._router = Router(catalog=Catalog.default().with_deployments(*deps),
                              policy=CostPolicy(allow_providers={"vllm"},
                                                objective=objective),  # type: ignore[arg-type]
                              tokenizer=counter, env={})

    def route(self, **fields: Any) -> RoutingDecision:
        try:
            return self._router.route(**fields)
        except NoRouteError as err:
            return err.decision


def _router(deps: list[Deployment], counter: TokenizerCounter,
            objective: str = "cheapest") -> _Routes:
    return _Routes(deps, counter, objective)


@FAST
@given(deps=deployments(), prefix=code, suffix=code,
       max_tokens=st.integers(min_value=1, max_value=600))
def test_every_ranked_deployment_fits_prompt_and_max_tokens(
        exact_counter: TokenizerCounter, deps: list[Deployment], prefix: str, suffix: str,
        max_tokens: int) -> None:
    decision = _router(deps, exact_counter).route(prefix=prefix, suffix=suffix,
                                                  max_tokens=max_tokens)
    for cand in decision.ranked:
        assert cand.rendered is not None
        sent = exact_counter.count(cand.rendered.prompt)
        assert sent + max_tokens <= cand.deployment.context_window


@FAST
@given(deps=deployments(), prompt=code, max_tokens=st.integers(min_value=1, max_value=200))
def test_cheapest_chooses_the_cheapest_and_orders_the_fallbacks(
        exact_counter: TokenizerCounter, deps: list[Deployment], prompt: str,
        max_tokens: int) -> None:
    decision = _router(deps, exact_counter).route(prompt=prompt or "x", max_tokens=max_tokens)
    costs = [c.expected_nano for c in decision.ranked]
    assert all(c is not None for c in costs)
    assert costs == sorted(costs)  # type: ignore[type-var]
    eligible = [c for c in decision.candidates if c.eligible]
    if eligible:
        assert decision.ranked[0].expected_nano == min(c.expected_nano or 0 for c in eligible)


@FAST
@given(deps=deployments(), prompt=code, max_tokens=st.integers(min_value=1, max_value=200),
       objective=st.sampled_from(["latency", "quality"]))
def test_fallbacks_follow_the_objective(exact_counter: TokenizerCounter, deps: list[Deployment],
                                        prompt: str, max_tokens: int, objective: str) -> None:
    decision = _router(deps, exact_counter, objective).route(prompt=prompt or "x",
                                                             max_tokens=max_tokens)
    key: Any = (lambda c: c.expected_latency_s) if objective == "latency" else \
        (lambda c: -(c.quality or 0.0))
    values = [key(c) for c in decision.ranked]
    assert values == sorted(values)


@FAST
@given(prefix=st.lists(code_line, min_size=1, max_size=120).map("".join),
       suffix=st.lists(code_line, min_size=1, max_size=120).map("".join),
       window=st.integers(min_value=64, max_value=1024))
def test_trimming_keeps_the_sentinels_and_the_lines_at_the_cursor(
        exact_counter: TokenizerCounter, prefix: str, suffix: str, window: int) -> None:
    dep = Deployment(name="small", provider="vllm", variant="starcoder2-15b", model="m",
                     context_window=window, base_url="http://127.0.0.1:9000/v1",
                     pricing="local", capabilities=frozenset({"completion", "fim"}))
    decision = _router([dep], exact_counter).route(prefix=prefix, suffix=suffix, max_tokens=16)
    for cand in decision.ranked:
        assert cand.rendered is not None and cand.rendered.fim is not None
        prompt = cand.rendered.prompt
        for sentinel in (FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE):
            assert prompt.count(sentinel) == 1
        assert prompt.index(FIM_PREFIX) < prompt.index(FIM_SUFFIX) < prompt.index(FIM_MIDDLE)
        kept = cand.rendered.fim
        # What is kept is what touches the cursor: the end of the prefix, the start of the
        # suffix.
        assert prefix.endswith(kept.prefix)
        assert suffix.startswith(kept.suffix)


Op = tuple[str, int]


@settings(max_examples=150, deadline=None)
@given(ops=st.lists(st.tuples(st.sampled_from(["reserve", "settle", "release"]),
                              st.integers(min_value=0, max_value=400)), max_size=40),
       limit=st.integers(min_value=1, max_value=1000))
def test_reservations_never_let_spend_pass_the_limit(ops: list[Op], limit: int) -> None:
    store = MemoryStore()
    key = BudgetKey("b", "b|total", limit, None, None)
    held: list[Any] = []
    for op, amount in ops:
        if op == "reserve":
            with contextlib.suppress(BudgetExceededError):
                held.append(store.reserve([key], amount, 60))
        elif held:
            res = held.pop(amount % len(held))
            if op == "settle":
                # The router settles the actual cost, never more than it held.
                store.settle(res, min(amount, res.amount_nano))
            else:
                store.release(res)
        [status] = store.status([key])
        assert status.spent_nano + status.reserved_nano <= limit
        assert status.reserved_nano == sum(r.amount_nano for r in held)


@FAST
@given(prefix=code, suffix=code)
def test_rendering_then_counting_matches_the_tokenizer(
        exact_counter: TokenizerCounter, tokenizer_path: Any, prefix: str, suffix: str) -> None:
    from tokenizers import Tokenizer

    from starcoder_router._routing.render import FimParts, render_fim

    tok = _tokenizer(tokenizer_path)
    prompt = render_fim(FimParts(prefix, suffix)).prompt
    ids = tok.encode(prompt, add_special_tokens=False).ids
    assert exact_counter.count(prompt) == len(ids)
    # The sentinels are single tokens that split the text: the prompt counts as its parts.
    parts = [len(tok.encode(p, add_special_tokens=False).ids) for p in (prefix, suffix)]
    assert len(ids) == 3 + sum(parts)
    assert isinstance(tok, Tokenizer)


_TOKENIZERS: dict[str, Any] = {}


def _tokenizer(path: Any) -> Any:
    from tokenizers import Tokenizer

    if str(path) not in _TOKENIZERS:
        _TOKENIZERS[str(path)] = Tokenizer.from_file(str(path))
    return _TOKENIZERS[str(path)]

