"""JSON for wire bodies: orjson when it is installed (a core dependency where it has wheels),
else the standard library, with the standard library's results on every input.

Per request the router encodes one body and decodes one reply, and per streamed chunk it decodes
one event; with `json` these were the largest single costs of a streamed chunk on our side
(benchmarks/profiles/astream.txt): orjson decodes a completion chunk about six times faster.
Where the two libraries disagree, the standard library decides, so nothing a caller or a provider
sees changes: orjson refuses what `json` accepts beyond strict JSON (NaN, lone surrogates, more
than 1024 levels) and what it cannot encode (keys that are not strings, integers past 64 bits),
and those inputs take the `json` path. orjson reads an integer past 64 bits as a float where
`json` keeps it exact, so text with a run of 19 or more digits is read by `json` too.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["dumps", "loads"]

try:
    import orjson as _orjson
except ImportError:  # pragma: no cover - a platform without an orjson wheel
    _orjson = None  # type: ignore[assignment]


def _std_dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


if _orjson is not None:
    _orjson_dumps, _orjson_loads = _orjson.dumps, _orjson.loads
    _DecodeError = _orjson.JSONDecodeError

    def dumps(obj: Any) -> bytes:
        """Compact UTF-8 JSON (as `json.dumps(separators=(",", ":"), ensure_ascii=False)`)."""
        try:
            return _orjson_dumps(obj)
        except TypeError:
            return _std_dumps(obj)

    # 19 digits reach past 2**63: such a number may not fit orjson's integers.
    _LONG_BYTES = re.compile(rb"\d{19}")
    _LONG_TEXT = re.compile(r"\d{19}")

    def loads(data: bytes | str) -> Any:
        """As `json.loads`: raises ValueError (or RecursionError) on what it cannot read."""
        long = _LONG_TEXT if isinstance(data, str) else _LONG_BYTES
        if long.search(data) is not None:  # type: ignore[arg-type]
            return json.loads(data)
        try:
            return _orjson_loads(data)
        except _DecodeError:
            return json.loads(data)
else:  # pragma: no cover
    dumps = _std_dumps
    loads = json.loads
