"""A caller's JSON schema cannot make the SDK fetch a URL, backtrack for ever, or exhaust the
stack; it is refused up front with an InvalidRequestError instead."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from starcoder_router import CompletionRequest, InvalidRequestError
from starcoder_router._routing.request import ResponseFormat
from starcoder_router._routing.structured import validate_structured


@pytest.fixture
def trap() -> Iterator[tuple[str, socket.socket]]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.settimeout(0.3)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}", sock
    sock.close()


def _request(schema: Any) -> CompletionRequest:
    return CompletionRequest(prompt="x", response_format={"type": "json_schema",
                                                          "json_schema": schema})


def _in_time(fn: Any, budget_s: float) -> Any:
    """fn() in a thread; fails (rather than hangs) when it takes longer than `budget_s`."""
    out: list[Any] = []
    worker = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    started = time.perf_counter()
    worker.start()
    worker.join(budget_s)
    assert out, f"still running after {budget_s} s"
    assert time.perf_counter() - started < budget_s
    return out[0]


@pytest.mark.parametrize("shape", ["remote", "relative-to-id", "in-defs", "in-items"])
def test_no_ref_is_ever_fetched(trap: tuple[str, socket.socket], shape: str) -> None:
    url, sock = trap
    schema = {
        "remote": {"$ref": f"{url}/{'p' * 300}.json"},
        "relative-to-id": {"$id": f"{url}/root/", "$ref": "other.json"},
        "in-defs": {"$defs": {"a": {"$ref": f"{url}/a.json"}},
                    "properties": {"x": {"$ref": "#/$defs/a"}}},
        "in-items": {"type": "array", "items": {"$ref": f"{url}/i.json"}},
    }[shape]
    with pytest.raises(InvalidRequestError, match=r"\$ref") as info:
        _request(schema)
    assert "p" * 100 not in str(info.value)
    with pytest.raises(TimeoutError):
        sock.accept()[0].close()


def test_local_refs_still_work() -> None:
    schema = {"$defs": {"n": {"type": "integer"}}, "type": "object",
              "properties": {"a": {"$ref": "#/$defs/n"}}, "required": ["a"]}
    fmt = _request(schema).response_format
    assert fmt is not None
    assert validate_structured('{"a": 1}', fmt) is None
    assert validate_structured('{"a": "x"}', fmt) is not None


def test_a_self_reference_without_end_is_refused() -> None:
    with pytest.raises(InvalidRequestError, match="refers to itself"):
        _request({"$ref": "#"})


def test_a_recursive_schema_over_a_deep_answer_is_a_mismatch_not_a_crash() -> None:
    tree = {"type": "object", "properties": {"c": {"$ref": "#"}}}
    fmt = _request(tree).response_format
    assert fmt is not None
    deep = '{"c": ' * 120 + "{}" + "}" * 120
    assert isinstance(validate_structured(deep, fmt), str | None)
    very_deep = '{"c": ' * 5000 + "{}" + "}" * 5000
    assert "deep" in str(validate_structured(very_deep, fmt))


def test_a_backtracking_pattern_runs_in_linear_time() -> None:
    fmt = ResponseFormat(type="json_schema", json_schema={
        "type": "object", "properties": {"a": {"type": "string", "pattern": "^(a+)+$"}},
        "patternProperties": {"^(b|b)+$": {"type": "integer"}}})
    steered = json.dumps({"a": "a" * 5000 + "!", "b" * 5000 + "!": 1})
    problem = _in_time(lambda: validate_structured(steered, fmt), 2.0)
    assert problem is not None and "does not match" in problem
    assert _in_time(lambda: validate_structured('{"a": "aaa"}', fmt), 2.0) is None


@pytest.mark.parametrize("pattern", ["(a)\\1", "(?=a)a", "(?<!x)y", "a{2000}"])
def test_a_pattern_re2_cannot_run_is_refused(pattern: str) -> None:
    with pytest.raises(InvalidRequestError, match="RE2"):
        _request({"properties": {"a": {"pattern": pattern}}})


def test_a_deep_schema_is_refused_cleanly() -> None:
    schema: dict[str, Any] = {}
    for _ in range(3000):
        schema = {"properties": {"a": schema}}
    with pytest.raises(InvalidRequestError, match="max_schema_depth"):
        _request(schema)


def test_a_deep_answer_is_a_mismatch_not_a_crash() -> None:
    fmt = ResponseFormat(type="json_schema", json_schema={"type": "object"})
    assert "deep" in str(validate_structured("[" * 100_000 + "]" * 100_000, fmt))
    assert "deep" in str(validate_structured('{"a":' + "[" * 500 + "]" * 500 + "}", fmt))


@pytest.mark.parametrize("declared", [["x"], 5, "http://127.0.0.1:9/unknown-draft"])
def test_an_unknown_schema_draft_is_refused(declared: Any) -> None:
    with pytest.raises(InvalidRequestError, match=r"\$schema"):
        _request({"$schema": declared, "type": "object"})


def test_unique_items_costs_one_pass_over_a_steered_answer() -> None:
    fmt = ResponseFormat(type="json_schema", json_schema={
        "type": "object", "properties": {"a": {"type": "array", "uniqueItems": True}}})
    distinct = json.dumps({"a": [{"x": i, "y": [i, str(i)]} for i in range(4000)]})
    assert _in_time(lambda: validate_structured(distinct, fmt), 2.0) is None  # was ~26 s


@pytest.mark.parametrize(("items", "unique"), [
    ([1, 1.0], False), ([1, True], True), ([0, False], True), ([None, False], True),
    ([{"a": 1}, {"a": 1.0}], False), ([{"a": 1}, {"a": 2}], True), ([[1, 2], [1, 2]], False),
    ([[1, 2], [2, 1]], True), (["1", 1], True), ([{"a": [True]}, {"a": [1]}], True),
    ([{}, []], True), ([{"a": None}, {"b": None}], True),
])
def test_unique_items_agrees_with_json_equality(items: list[Any], unique: bool) -> None:
    fmt = ResponseFormat(type="json_schema", json_schema={
        "type": "object", "properties": {"a": {"type": "array", "uniqueItems": True}}})
    assert (validate_structured(json.dumps({"a": items}), fmt) is None) == unique
