"""Wire JSON (orjson with the standard library deciding what orjson refuses) reads and writes
exactly what `json` does: same values, same errors, on valid, odd and hostile input."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from starcoder_router._wire_json import dumps, loads

_SCALARS = (st.none() | st.booleans() | st.integers(-(2**80), 2**80)
            | st.floats(allow_nan=False, allow_infinity=False) | st.text())
_VALUES = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=4)
                       | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)


def _std(data: bytes | str) -> tuple[str, Any]:
    try:
        return "ok", json.loads(data)
    except RecursionError:
        return "deep", None
    except ValueError:
        return "error", None


def _ours(data: bytes | str) -> tuple[str, Any]:
    try:
        return "ok", loads(data)
    except RecursionError:
        return "deep", None
    except ValueError:
        return "error", None


def _same(a: Any, b: Any) -> bool:
    """Equal values of the same types, NaN equal to NaN; iterative, since Python 3.12 and later
    parse the deep documents below that a recursive walk could not compare."""
    pairs = [(a, b)]
    while pairs:
        x, y = pairs.pop()
        if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
            continue
        if isinstance(x, list) and isinstance(y, list):
            if len(x) != len(y):
                return False
            pairs.extend(zip(x, y, strict=True))
        elif isinstance(x, dict) and isinstance(y, dict):
            if x.keys() != y.keys():
                return False
            pairs.extend((x[k], y[k]) for k in x)
        elif type(x) is not type(y) or x != y:
            return False
    return True


@settings(max_examples=300, deadline=None)
@given(_VALUES)
def test_values_round_trip_as_the_standard_library_reads_them(value: Any) -> None:
    wire = dumps(value)
    assert _same(json.loads(wire), value)
    assert _same(loads(wire), value)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64) | st.text(max_size=64).map(str.encode))
def test_any_bytes_read_as_the_standard_library_reads_them(data: bytes) -> None:
    want, got = _std(data), _ours(data)
    assert want[0] == got[0]
    assert _same(want[1], got[1])


@pytest.mark.parametrize("text", [
    '{"usage": {"prompt_tokens": NaN}}', '{"n": Infinity}', '{"n": -Infinity}',
    '{"n": 123456789012345678901234567890}', '{"t": "\\ud800"}', '{"a": 1, "a": 2}',
    '[' * 2000 + ']' * 2000, '[' * 100_000, '{"text": "x"} trailing', '', ' ', '"\xff"',
    '{"t": "\u2028\u2029"}', '1e400', '-0', '0.1', '[1.0, 2.5e-7]',
])
def test_odd_replies_read_as_before(text: str) -> None:
    for data in (text, text.encode("utf-8", "surrogatepass")):
        want, got = _std(data), _ours(data)
        assert want[0] == got[0], data[:40]
        assert _same(want[1], got[1])


def test_bodies_orjson_cannot_write_take_the_standard_path() -> None:
    for value in ({1: "int key"}, {"n": 2**70}, {"nested": [{"k": -(2**65)}]}):
        assert dumps(value) == json.dumps(value, separators=(",", ":"),
                                          ensure_ascii=False).encode("utf-8")


@pytest.mark.parametrize("text", [
    '{"created": 1733600000, "usage": {"prompt_tokens": 12345678901234567890123}}',
    '{"n": -9223372036854775809}', '{"n": [1234567890123456789]}',
    '{"id": "cmpl-1234567890-1234567890-1234567890", "n": 18446744073709551616}',
    '{"id": "1234567890123456789", "n": 1e5}', '{"a": 123456789012345678}',
])
def test_long_integers_in_bytes_are_read_exactly(text: str) -> None:
    """Bytes find a run of 19 digits without the regular expression (mapped to zeros); every
    integer orjson would turn into a float is still read exactly, as `json` reads it."""
    data = text.encode()
    assert _same(loads(data), json.loads(data))
    assert _same(loads(text), json.loads(text))
