"""JSON for wire bodies: orjson when it is installed (a core dependency where it has wheels),
else the standard library, with the standard library's results on every input.

Per request the router encodes one body and decodes one reply, and per streamed chunk it decodes
one event; with `json` these were the largest single costs of a streamed chunk on our side
(benchmarks/profiles/astream.txt): orjson decodes a completion chunk about six times faster.
Where the two libraries disagree, the standard library decides, so nothing a caller or a provider
sees changes: orjson refuses what `json` accepts beyond strict JSON (NaN, integers past 64 bits,
lone surrogates, more than 1024 levels) and what it cannot encode (keys that are not strings,
integers past 64 bits), and those inputs take the `json` path.
"""

from __future__ import annotations

import json
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

    def loads(data: bytes | str) -> Any:
        """As `json.loads`: raises ValueError (or RecursionError) on what it cannot read."""
        try:
            return _orjson_loads(data)
        except _DecodeError:
            return json.loads(data)
else:  # pragma: no cover
    dumps = _std_dumps
    loads = json.loads
