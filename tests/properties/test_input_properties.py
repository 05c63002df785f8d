"""Whatever a caller passes, the only exceptions are ours: every input surface (requests, cost
policies, budgets, `complete()`, config files) raises a `StarcoderRouterError` for a bad value,
never a raw `UnicodeEncodeError`, `TypeError`, `KeyError` or `jsonschema` error."""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from starcoder_router import (
    Budget,
    Catalog,
    CompletionRequest,
    CostPolicy,
    HealthPolicy,
    MemoryStore,
    RetryPolicy,
    Router,
    StarcoderRouterError,
)
from starcoder_router._config import load_config
from starcoder_router.testing import FakeServer

# No example database on disk (the suite runs read-only and in parallel worktrees), no
# per-example deadline on a shared 2-core machine.
PROPERTY = settings(max_examples=150, database=None, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])

TRICKY = ["", " ", "*", "json", "\ud800", "\udfff", "\x00", "<fim_prefix>", "<|endoftext|>",
          "humaneval", "humanevl", "tenant", "tag", "global", "day", "UTC", "Mars/Olympus",
          "json_schema", "json_object", "grammar", "user", "assistant", "system", "ollama",
          "fireworks/starcoder2-7b", "fireworks/starcoder-7b", "starcoder2-3b", "sqlite", "redis",
          "memory", "spend.db", "prompt", "reject", "downgrade", "cheapest"]

texts = st.one_of(st.sampled_from(TRICKY),
                  st.text(alphabet=st.one_of(st.characters(),
                                             st.sampled_from(["\ud800", "\udc00", "\x00"])),
                          max_size=12))
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), texts,
                    st.binary(max_size=4), st.just(object()))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.lists(inner, max_size=3).map(tuple),
                            st.frozensets(st.sampled_from(TRICKY), max_size=2),
                            st.dictionaries(texts, inner, max_size=3)),
    max_leaves=8,
)


def _fields(model: Any, extra: dict[str, st.SearchStrategy[Any]] | None = None
            ) -> st.SearchStrategy[dict[str, Any]]:
    """Keyword arguments for `model`: its own field names (and a few unknown ones) with
    arbitrary values, plus typed values where a typo-free field makes deeper checks reachable."""
    names = [*model.model_fields, "unknown_field"]
    typed = extra or {}
    return st.dictionaries(st.sampled_from(names),
                           st.deferred(lambda: values), max_size=6).flatmap(
        lambda d: st.fixed_dictionaries({}, optional=typed).map(lambda t: {**d, **t}))


REQUEST_TYPED: dict[str, st.SearchStrategy[Any]] = {
    "prompt": texts,
    "max_tokens": st.integers(min_value=-2, max_value=10**20),
    "response_format": st.one_of(
        st.just("json"),
        st.fixed_dictionaries({"type": st.sampled_from(["json_object", "json_schema", "grammar"]),
                               "json_schema": st.dictionaries(
                                   st.sampled_from(["type", "properties", "required", "enum",
                                                    "minimum", "$ref", "items"]), values,
                                   max_size=3)})),
    "extra_body": st.dictionaries(texts, values, max_size=3),
}
POLICY_TYPED: dict[str, st.SearchStrategy[Any]] = {
    "max_cost_per_request_usd": st.floats(),
    "min_quality": st.tuples(texts, st.one_of(st.floats(), texts)),
    "budgets": st.lists(st.dictionaries(st.sampled_from([*Budget.model_fields, "x"]), values,
                                        max_size=4), max_size=2),
}


def _only_ours(call: Any) -> None:
    """Run `call`; any exception outside our tree propagates and fails the property."""
    with contextlib.suppress(StarcoderRouterError):
        call()


@PROPERTY
@given(_fields(CompletionRequest, REQUEST_TYPED))
def test_completion_request_raises_only_our_errors(fields: dict[str, Any]) -> None:
    _only_ours(lambda: CompletionRequest(**fields))


@PROPERTY
@given(_fields(CostPolicy, POLICY_TYPED))
def test_cost_policy_raises_only_our_errors(fields: dict[str, Any]) -> None:
    def build_and_route() -> None:
        with Router(policy=CostPolicy(**fields), env={"FIREWORKS_API_KEY": "k"}) as router:
            router.route(prompt="def f():", tenant="acme")

    _only_ours(build_and_route)


@PROPERTY
@given(_fields(Budget, {"limit_usd": st.floats(), "timezone": texts}))
def test_budget_raises_only_our_errors(fields: dict[str, Any]) -> None:
    _only_ours(lambda: Budget(**fields))


@pytest.fixture(scope="module")
def fake_router() -> Iterator[tuple[FakeServer, Router]]:
    with FakeServer() as server, Router(
            catalog=Catalog.default().with_deployments(server.deployment()),
            policy=CostPolicy(allow_providers={"openai-compatible"}, budgets=[
                Budget(limit_usd=1000), Budget(limit_usd=1000, scope="tenant")]),
            store=MemoryStore(), tokenizer=False, env={},
            retry=RetryPolicy(max_retries=0)) as router:
        yield server, router


@PROPERTY
@given(st.one_of(st.none(), values), _fields(CompletionRequest, {
    **REQUEST_TYPED, "timeout": st.floats(min_value=1e-9, max_value=1e300),
    "max_tokens": st.integers(min_value=-2, max_value=10**12)}))
def test_complete_raises_only_our_errors(fake_router: tuple[FakeServer, Router],
                                         positional: Any, fields: dict[str, Any]) -> None:
    _, router = fake_router
    if positional is None:
        _only_ours(lambda: router.complete(**fields))
    else:
        _only_ours(lambda: router.complete(positional, **fields))


def _toml(value: Any) -> str:
    """A TOML rendering of `value` (inline tables and arrays; may be invalid TOML on purpose,
    e.g. for surrogates or None)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple, frozenset)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml(v)}"
                               for k, v in value.items()) + "}"
    return repr(value)  # None, bytes, objects: not TOML, must be refused as such


SECTIONS = {
    "policy": _fields(CostPolicy, POLICY_TYPED),
    "deployments": st.lists(st.dictionaries(st.sampled_from(
        ["name", "provider", "variant", "model", "context_window", "base_url", "pricing",
         "input_usd_per_mtok", "capabilities", "x"]), values, max_size=5), max_size=2),
    "variants": st.lists(st.dictionaries(texts, values, max_size=3), max_size=1),
    "providers": st.dictionaries(texts, st.dictionaries(st.sampled_from(
        ["base_url", "api_key", "api_key_env", "timeout", "headers", "x"]), values, max_size=3),
        max_size=2),
    "store": st.dictionaries(st.sampled_from(["kind", "path", "url", "x"]), values, max_size=3),
    "retry": _fields(RetryPolicy),
    "health": _fields(HealthPolicy),
    "tokenizer": values,
    "unknown": values,
}
configs = st.fixed_dictionaries({}, optional=SECTIONS)


@PROPERTY
@given(configs)
@example({"deployments": [{"provider": []}]})  # once a TypeError from the name default
def test_from_config_raises_only_our_errors(tmp_path: Path, data: dict[str, Any]) -> None:
    path = tmp_path / "router.toml"
    path.write_text("\n".join(f"{k} = {_toml(v)}" for k, v in data.items()), encoding="utf-8",
                    errors="surrogatepass")
    # Any path the file names is read from its folder; nothing is downloaded or created here:
    # the tokenizer and store the file names are checked by load_config, not opened.
    _only_ours(lambda: load_config(path))
    _only_ours(lambda: Router.from_config(path, env={}, tokenizer=False,
                                          store=MemoryStore()).close())


@PROPERTY
@given(st.binary(max_size=64))
def test_arbitrary_file_content_is_a_config_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "router.toml"
    path.write_bytes(content)
    _only_ours(lambda: load_config(path))


@PROPERTY
@given(st.sampled_from(["memory", "sqlite", "redis", "postgres"]),
       st.text(alphabet="abc.-_ /\\:\x00\ud800", max_size=12).filter(
           lambda p: not p.startswith(("/", "~")) and ".." not in p))
def test_store_sections_open_or_raise_our_errors(tmp_path: Path, kind: str, where: str) -> None:
    path = tmp_path / "router.toml"
    path.write_text(f"[store]\nkind = {json.dumps(kind)}\npath = {json.dumps(where)}\n"
                    "url = 'redis://127.0.0.1:1/0'\n", encoding="utf-8")

    def build() -> None:
        router = Router.from_config(path, env={}, tokenizer=False)
        router.store.close()
        router.close()

    _only_ours(build)
