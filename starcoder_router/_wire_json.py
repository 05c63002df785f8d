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

    # 19 digits reach past 2**63: such a number may not fit orjson's integers. In bytes, a run
    # of 19 is found by mapping every ASCII digit to "0" and everything else to a space, then
    # looking for 19 zeros: two passes in C, a fifth of what the regular expression's search
    # costs on a stream event (the largest cost of decoding one, before orjson itself). `\d` in
    # a bytes pattern is ASCII digits only, so the two agree; text keeps the expression, whose
    # `\d` also matches other scripts' digits.
    _DIGITS = bytes(48 if 48 <= b <= 57 else 32 for b in range(256))
    _RUN = b"0" * 19
    _LONG_TEXT = re.compile(r"\d{19}")

    def loads(data: bytes | str) -> Any:
        """As `json.loads`: raises ValueError (or RecursionError) on what it cannot read."""
        if isinstance(data, str):
            long = _LONG_TEXT.search(data) is not None
        else:
            long = len(data) >= 19 and _RUN in data.translate(_DIGITS)
        if long:
            return json.loads(data)
        try:
            return _orjson_loads(data)
        except _DecodeError:
            return json.loads(data)
else:  # pragma: no cover
    dumps = _std_dumps
    loads = json.loads
