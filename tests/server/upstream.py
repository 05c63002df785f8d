"""A scriptable OpenAI-compatible upstream for the gateway tests: `/v1/completions` and
`/v1/chat/completions`, plain and SSE, with usage, on a real loopback socket.

It records every body it receives, so tests assert what reached the provider (the rendered FIM
prompt, max_tokens, stop). `script(...)` queues replies: an error status, a delay, a slow
stream, or a stream that hangs after some chunks (to test client disconnects).
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

DEFAULT_TEXT = "return a + b"


@dataclass(frozen=True)
class Reply:
    text: str = DEFAULT_TEXT
    status: int = 200
    error: str = "scripted failure"
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    chunk_delay_s: float = 0.0
    hang_after: int | None = None  # stream: stop sending (but keep the socket) after N chunks
    finish_reason: str = "stop"
    # stream: the finish reason in a last chunk of its own with no text, as vLLM, llama.cpp
    # and OpenAI send it
    empty_final: bool = False


class Upstream:
    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self._script: deque[Reply] = deque()
        self.closed_streams = 0
        self.open_streams = 0
        self.fail_models: set[str] = set()  # these models always answer 500

    def script(self, *replies: Reply) -> None:
        self._script.extend(replies)

    def reset(self) -> None:
        self.bodies.clear()
        self.paths.clear()
        self._script.clear()
        self.closed_streams = 0
        self.open_streams = 0
        self.fail_models.clear()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/completions", self._handle)
        app.router.add_post("/v1/chat/completions", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.bodies.append(body)
        self.paths.append(request.path)
        reply = self._script.popleft() if self._script else Reply()
        if body.get("model") in self.fail_models:
            reply = Reply(status=500)
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        if reply.status >= 400:
            return web.json_response({"error": {"message": reply.error, "type": "scripted"}},
                                     status=reply.status, headers=reply.headers)
        chat = request.path.endswith("/chat/completions")
        prompt = json.dumps(body.get("messages")) if chat else str(body.get("prompt", ""))
        words = reply.text.split(" ")[: int(body.get("max_tokens", 16))]
        text = " ".join(words)
        usage = {"prompt_tokens": max(1, len(prompt) // 4), "completion_tokens": len(words),
                 "total_tokens": max(1, len(prompt) // 4) + len(words)}
        if body.get("stream"):
            return await self._stream(request, reply, words, usage, chat)
        choice: dict[str, Any] = {"index": 0, "finish_reason": reply.finish_reason}
        if chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        return web.json_response({"id": "up-1", "object": "x", "model": body.get("model"),
                                  "choices": [choice], "usage": usage})

    async def _stream(self, request: web.Request, reply: Reply, words: list[str],
                      usage: dict[str, int], chat: bool) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        self.open_streams += 1
        try:
            for i, word in enumerate(words):
                if reply.hang_after is not None and i >= reply.hang_after:
                    await asyncio.sleep(3600)  # until the gateway hangs up
                piece = word if i == 0 else " " + word
                last = i == len(words) - 1
                ends = last and not reply.empty_final
                choice: dict[str, Any] = {"index": 0,
                                          "finish_reason": reply.finish_reason if ends else None}
                if chat:
                    choice["delta"] = {"content": piece}
                else:
                    choice["text"] = piece
                await _event(response, {"id": "up-s", "choices": [choice]})
                if reply.chunk_delay_s:
                    await asyncio.sleep(reply.chunk_delay_s)
            if reply.empty_final:
                empty = {"delta": {}} if chat else {"text": ""}
                await _event(response, {"id": "up-s", "choices": [
                    {"index": 0, "finish_reason": reply.finish_reason, **empty}]})
            await _event(response, {"id": "up-s", "choices": [], "usage": usage})
            await response.write(b"data: [DONE]\n\n")
        except (asyncio.CancelledError, ConnectionResetError):
            self.closed_streams += 1
            raise
        return response


async def _event(response: web.StreamResponse, obj: dict[str, Any]) -> None:
    await response.write(b"data: " + json.dumps(obj).encode() + b"\n\n")
