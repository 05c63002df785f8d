"""The gateway's JSON answers: orjson's bytes where it can, the standard library's otherwise,
and the same JSON either way."""

from __future__ import annotations

import json

from starcoder_router._server.http import json_body


def test_a_plain_body_is_compact_utf8_json() -> None:
    payload = {"text": "déf fib(n):\n", "usage": {"total_tokens": 20}, "logprobs": None}
    assert json_body(payload) == json.dumps(payload, separators=(",", ":"),
                                            ensure_ascii=False).encode()


def test_what_orjson_refuses_is_written_escaped() -> None:
    payload = {"text": "a\ud800b", "big": 2**70}  # a lone surrogate, an integer past 64 bits
    body = json_body(payload)
    assert body == json.dumps(payload, separators=(",", ":")).encode()
    assert json.loads(body) == payload
