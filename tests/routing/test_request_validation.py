"""Bad requests are refused as `InvalidRequestError` when they are built: before routing, before
a budget hold, before anything is sent (so nothing is paid for)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest

from starcoder_router import (
    AsyncRouter,
    Budget,
    Catalog,
    CompletionRequest,
    CostPolicy,
    InvalidRequestError,
    MemoryStore,
    MissingDependencyError,
    Router,
)
from starcoder_router.testing import FakeServer

BAD_SCHEMAS = [
    {"type": "strng"},
    {"type": "object", "properties": {"a": {"type": 3}}},
    {"type": "object", "required": "a"},
]
UNUSABLE_SCHEMAS = [
    {"$schema": "http://json-schema.org/draft-03/schema#", "type": "strng"},
    {"$ref": "#/definitions/missing"},
]


@pytest.fixture
def server() -> Iterator[FakeServer]:
    with FakeServer() as s:
        yield s


def _router_kwargs(server: FakeServer, store: MemoryStore) -> dict[str, Any]:
    return {
        "catalog": Catalog.default().with_deployments(server.deployment()),
        "policy": CostPolicy(allow_providers={"openai-compatible"},
                             budgets=[Budget(limit_usd=1)]),
        "store": store, "env": {},
    }


@pytest.mark.parametrize("field", ["prompt", "prefix", "suffix", "stop", "tenant", "tags"])
def test_a_lone_surrogate_names_the_field(field: str) -> None:
    fields: dict[str, Any] = {"prompt": "x"} if field not in ("prefix", "suffix") else {}
    if field == "suffix":
        fields["prefix"] = ""
    fields[field] = "ok \ud800 text"
    with pytest.raises(InvalidRequestError, match=rf"{field}: .*lone surrogate"):
        CompletionRequest(**fields)


def test_surrogates_in_nested_text_name_their_place() -> None:
    with pytest.raises(InvalidRequestError, match=r"files\.0\.text: .*surrogate"):
        CompletionRequest(prefix="", files=[("a.py", "\udfff")])
    with pytest.raises(InvalidRequestError, match=r"messages\.0\.content: .*surrogate"):
        CompletionRequest(messages=[{"role": "user", "content": "\ud800"}])


def test_valid_non_ascii_text_is_kept() -> None:
    text = "def grüß():  # 🐍 \u00e9"
    assert CompletionRequest(prompt=text).prompt == text


def test_surrogate_prompt_is_refused_before_routing(server: FakeServer) -> None:
    store = MemoryStore()
    with Router(**_router_kwargs(server, store)) as router:
        with pytest.raises(InvalidRequestError, match="prompt"):
            router.route(prompt="\ud800")
        with pytest.raises(InvalidRequestError, match="prompt"):
            router.complete(prompt="def f():\ud800")
    assert server.requests == []
    assert list(store.ledger()) == []


@pytest.mark.parametrize("schema", BAD_SCHEMAS)
def test_an_invalid_json_schema_is_refused_when_built(schema: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequestError, match="not a valid JSON schema"):
        CompletionRequest(prompt="x", response_format={"type": "json_schema",
                                                       "json_schema": schema})


@pytest.mark.parametrize("schema", UNUSABLE_SCHEMAS)
def test_a_schema_that_cannot_validate_anything_is_refused(schema: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequestError, match=r"json_schema (cannot be used|has a \$ref)"):
        CompletionRequest(prompt="x", response_format={"type": "json_schema",
                                                       "json_schema": schema})


def test_an_invalid_openai_shaped_schema_is_refused() -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "r", "schema": {"type": "strng"}}}
    with pytest.raises(InvalidRequestError, match="response_format: json_schema is not a valid"):
        CompletionRequest(prompt="x", response_format=fmt)


def test_an_invalid_schema_is_never_sent_or_paid_for(server: FakeServer) -> None:
    store = MemoryStore()
    fmt = {"type": "json_schema", "json_schema": {"type": "strng"}}
    with Router(**_router_kwargs(server, store)) as router, \
            pytest.raises(InvalidRequestError):
        router.complete(prompt="x", response_format=fmt)
    assert server.requests == []
    assert list(store.ledger()) == []


def test_a_valid_schema_is_accepted() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    req = CompletionRequest(prompt="x", response_format={"type": "json_schema",
                                                         "json_schema": schema})
    assert req.response_format is not None and req.response_format.json_schema == schema


def test_without_the_schema_extra_the_router_says_the_schema_cannot_be_checked(
        server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "jsonschema", None)  # import jsonschema -> ImportError
    fmt = {"type": "json_schema", "json_schema": {"type": "strng"}}
    req = CompletionRequest(prompt="x", response_format=fmt)  # cannot be checked here
    with Router(**_router_kwargs(server, MemoryStore())) as router, \
            pytest.raises(MissingDependencyError, match=r"checking a JSON schema.*\[schema\]"):
        router.complete(req)
    assert server.requests == []


@pytest.mark.parametrize("body", [{"a": object()}, {"a": float("nan")}, {"a": "\ud800"},
                                  {"a": {1, 2}}])
def test_extra_body_that_cannot_be_sent_is_refused_when_built(body: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequestError, match="extra_body: cannot be sent as JSON"):
        CompletionRequest(prompt="x", extra_body=body)


def test_unsendable_extra_body_takes_no_budget_hold(server: FakeServer) -> None:
    store = MemoryStore()
    with Router(**_router_kwargs(server, store)) as router, \
            pytest.raises(InvalidRequestError):
        router.complete(prompt="x", extra_body={"when": object()})
    assert server.requests == []
    assert list(store.ledger()) == []


@pytest.mark.parametrize("value", ["", " ", "\t\n"])
def test_blank_tenants_and_tags_are_refused(value: str) -> None:
    with pytest.raises(InvalidRequestError, match="tenant"):
        CompletionRequest(prompt="x", tenant=value)
    with pytest.raises(InvalidRequestError, match="tags"):
        CompletionRequest(prompt="x", tags=["ok", value])


@pytest.mark.parametrize("bad", ["def f():", {"prompt": "def f():"}, 42])
def test_complete_with_a_positional_non_request_is_an_invalid_request(
        server: FakeServer, bad: Any) -> None:
    with Router(**_router_kwargs(server, MemoryStore())) as router:
        with pytest.raises(InvalidRequestError, match="must be a CompletionRequest"):
            router.complete(bad)
        with pytest.raises(InvalidRequestError, match="must be a CompletionRequest"):
            router.complete(bad, max_tokens=8)
        with pytest.raises(InvalidRequestError, match="must be a CompletionRequest"):
            router.route(bad)
    assert server.requests == []


async def test_async_complete_with_a_positional_string_is_an_invalid_request(
        server: FakeServer) -> None:
    async with AsyncRouter(**_router_kwargs(server, MemoryStore())) as router:
        with pytest.raises(InvalidRequestError, match="must be a CompletionRequest"):
            await router.complete("def f():")  # type: ignore[arg-type]
        with pytest.raises(InvalidRequestError, match="prompt"):
            await router.complete(prompt="\ud800")
    assert server.requests == []
