"""Reply text that is not valid Unicode (a lone surrogate, as JSON's "\\udfff" decodes) reaches
the client through every protocol, plain and streamed, as JSON escapes it; nothing fails."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from upstream import Reply

ODD = "ab\udfff cd"

BODIES: dict[str, dict[str, Any]] = {
    "/v1/completions": {"model": "starcoder2-3b", "prompt": "x", "max_tokens": 8},
    "/v1/chat/completions": {"model": "starcoder2-15b-instruct", "max_tokens": 8,
                             "messages": [{"role": "user", "content": "x"}]},
    "/v1/fim/completions": {"model": "starcoder2-3b", "prompt": "x", "suffix": "y",
                            "max_tokens": 8},
    "/api/generate": {"model": "starcoder2-3b", "prompt": "x", "options": {"num_predict": 8}},
    "/generate": {"inputs": "x", "parameters": {"max_new_tokens": 8}},
}


def _texts(path: str, raw: bytes, stream: bool) -> str:
    if not stream:
        body = json.loads(raw)
        if path == "/api/generate":
            return str(body["response"])
        if path == "/generate":
            return str(body["generated_text"])
        choice = body["choices"][0]
        return str(choice.get("text") or choice["message"]["content"])
    out = []
    for raw_line in raw.decode().splitlines():
        line = raw_line.removeprefix("data:").strip()
        if not line or line == "[DONE]":
            continue
        event = json.loads(line)
        if path == "/api/generate":
            out.append(event["response"])
        elif path == "/generate":
            if event.get("generated_text") is not None:
                return str(event["generated_text"])
        elif event.get("choices"):
            choice = event["choices"][0]
            out.append(choice.get("text") or choice.get("delta", {}).get("content") or "")
    return "".join(out)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("path", list(BODIES))
def test_a_lone_surrogate_reaches_the_client(serve: Any, upstream: Any, path: str,
                                             stream: bool) -> None:
    gw = serve()
    upstream.script(Reply(text=ODD))
    target = "/generate_stream" if path == "/generate" and stream else path
    body = {**BODIES[path], "stream": stream}
    r = httpx.post(gw.url + target, json=body, timeout=10)
    assert r.status_code == 200, r.text
    assert _texts(path, r.content, stream) == ODD
