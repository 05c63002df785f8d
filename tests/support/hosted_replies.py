"""Helpers for router tests: the default catalog's hosted deployments, mocked with respx.

`wire` scripts each deployment's answers by model id; every answer is one HTTP exchange, so
the tests can count calls and check the exact payload each deployment received.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

FW = "https://api.fireworks.ai/inference/v1/completions"
DI = "https://api.deepinfra.com/v1/openai/completions"
KEYS = {"FIREWORKS_API_KEY": "fw-secret-key-0123456789", "DEEPINFRA_TOKEN": "di-secret-key-987"}
MODELS = {
    "fw3": "accounts/fireworks/models/starcoder2-3b",
    "fw7": "accounts/fireworks/models/starcoder2-7b",
    "di15": "bigcode/starcoder2-15b",
}
NAMES = {"fw3": "fireworks/starcoder2-3b", "fw7": "fireworks/starcoder2-7b",
         "di15": "deepinfra/starcoder2-15b"}

Answer = httpx.Response | Callable[[dict[str, Any]], httpx.Response] | Exception


def ok(text: str = "pass", prompt_tokens: int = 10, completion_tokens: int = 5,
       model: str | None = None) -> Callable[[dict[str, Any]], httpx.Response]:
    def make(body: dict[str, Any]) -> httpx.Response:
        return httpx.Response(200, json={
            "id": "cmpl-1", "model": model or body["model"],
            "choices": [{"index": 0, "text": text, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        })
    return make


def sse(*texts: str, usage: tuple[int, int] | None = (10, 3), cut: bool = False,
        finish: str = "stop") -> httpx.Response:
    events = [{"id": "s", "choices": [{"index": 0, "text": t,
                                       "finish_reason": finish if i == len(texts) - 1 and not cut
                                       else None}]}
              for i, t in enumerate(texts)]
    if usage and not cut:
        events.append({"id": "s", "choices": [],
                       "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1]}})
    body = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
    if not cut:
        body += b"data: [DONE]\n\n"
    return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})


def status(code: int, message: str = "boom", headers: dict[str, str] | None = None
           ) -> httpx.Response:
    return httpx.Response(code, json={"error": {"message": message}}, headers=headers or {})


@dataclass
class Wire:
    """Scripted answers per deployment key ("fw3", "fw7", "di15"), and what each received."""

    answers: dict[str, list[Answer]] = field(default_factory=dict)
    default: dict[str, Answer] = field(default_factory=dict)
    received: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def script(self, key: str, *answers: Answer) -> None:
        self.answers.setdefault(key, []).extend(answers)

    def always(self, key: str, answer: Answer) -> None:
        self.default[key] = answer

    def calls(self, key: str) -> int:
        return len(self.received.get(key, []))

    def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        key = next(k for k, m in MODELS.items() if m == body["model"])
        self.received.setdefault(key, []).append(body)
        queue = self.answers.get(key)
        answer = queue.pop(0) if queue else self.default.get(key, ok())
        if isinstance(answer, Exception):
            raise answer
        if callable(answer):
            return answer(body)
        return answer


class BrokenStore:
    """A MemoryStore whose chosen operation fails the way an unreachable Redis would."""

    def __init__(self, inner: Any, failing: str):
        self.inner = inner
        self.failing = failing

    def __getattr__(self, name: str) -> Any:
        if name.lstrip("a") == self.failing:
            def broken(*args: Any, **kwargs: Any) -> Any:
                raise ConnectionError("Error 111 connecting to 127.0.0.1:6379")
            return broken
        return getattr(self.inner, name)
