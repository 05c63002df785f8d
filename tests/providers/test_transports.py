"""Transports on a real loopback server: the aiohttp transport (the async default) and the httpx
ones must put the same request on the wire and read answers, streams and failures alike."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from starcoder_router import ProviderConnectionError, ProviderTimeoutError
from starcoder_router._providers.call import WireRequest
from starcoder_router._transports.aiohttp_transport import AiohttpTransport
from starcoder_router._transports.httpx_transport import HttpxAsyncTransport, HttpxTransport
from starcoder_router.testing import FakeServer, Reply
from support.ports import free_port


@pytest.fixture
def server() -> Iterator[FakeServer]:
    with FakeServer() as s:
        yield s


def _request(server: FakeServer, **body: object) -> WireRequest:
    payload = {"model": "m", "prompt": "def f():", "max_tokens": 4, **body}
    return WireRequest("POST", server.base_url + "/completions",
                       {"content-type": "application/json", "accept": "application/json",
                        "authorization": "Bearer k-123"},
                       json.dumps(payload).encode(), "sse" if body.get("stream") else None)


def _send_all(server: FakeServer, request: WireRequest) -> list[tuple[int, bytes]]:
    out = []
    sync = HttpxTransport()
    resp = sync.send(request, timeout=5, connect_timeout=1)
    out.append((resp.status, resp.body))
    sync.close()

    async def run() -> None:
        for transport in (HttpxAsyncTransport(), AiohttpTransport()):
            r = await transport.asend(request, timeout=5, connect_timeout=1)
            out.append((r.status, r.body))
            await transport.aclose()

    asyncio.run(run())
    return out


def test_every_transport_sends_the_same_request(server: FakeServer) -> None:
    server.script(Reply(text="a"), Reply(text="a"), Reply(text="a"))
    answers = _send_all(server, _request(server))
    bodies = [{k: v for k, v in json.loads(body).items() if k != "id"} for _, body in answers]
    assert [status for status, _ in answers] == [200, 200, 200]
    assert bodies[0] == bodies[1] == bodies[2]
    assert bodies[0]["choices"][0]["text"] == "a"
    assert len(server.requests) == 3
    first = server.requests[0]
    for rec in server.requests:
        assert (rec.method, rec.path, rec.body) == (first.method, first.path, first.body)
        for name in ("content-type", "accept", "authorization"):
            assert rec.headers[name] == first.headers[name]


def test_error_statuses_come_back_as_responses(server: FakeServer) -> None:
    server.script(*[Reply(status=429, error="slow down", headers={"retry-after": "2"})] * 3)
    for status, body in _send_all(server, _request(server)):
        assert status == 429
        assert json.loads(body)["error"]["message"] == "slow down"


def test_streams_read_the_same_lines(server: FakeServer) -> None:
    server.script(*[Reply(text="one two three", chunks=3)] * 3)
    request = _request(server, stream=True)
    sync = HttpxTransport()
    handle = sync.open(request, timeout=5, connect_timeout=1)
    expected = list(handle.lines())
    handle.close()
    sync.close()
    assert expected[-2:] == [b"data: [DONE]", b""]

    async def run() -> None:
        for transport in (HttpxAsyncTransport(), AiohttpTransport()):
            h = await transport.aopen(request, timeout=5, connect_timeout=1)
            assert [line async for line in h.alines()] == expected
            await h.aclose()
            await transport.aclose()

    asyncio.run(run())


def test_timeouts_and_refused_connections_map_to_our_errors(server: FakeServer) -> None:
    server.script(*[Reply(delay_s=0.6)] * 3)
    request = _request(server)
    with pytest.raises(ProviderTimeoutError):
        HttpxTransport().send(request, timeout=0.2, connect_timeout=0.2)
    port = free_port()
    refused = WireRequest("POST", f"http://127.0.0.1:{port}/v1/completions", {}, b"{}")
    with pytest.raises(ProviderConnectionError):
        HttpxTransport().send(refused, timeout=1, connect_timeout=1)

    async def run() -> None:
        for transport in (HttpxAsyncTransport(), AiohttpTransport()):
            with pytest.raises(ProviderTimeoutError):
                await transport.asend(request, timeout=0.2, connect_timeout=0.2)
            with pytest.raises(ProviderConnectionError):
                await transport.asend(refused, timeout=1, connect_timeout=1)
            await transport.aclose()

    asyncio.run(run())


def test_keep_alive_reuses_one_connection(server: FakeServer) -> None:
    async def run() -> None:
        transport = AiohttpTransport()
        for _ in range(20):
            r = await transport.asend(_request(server), timeout=5, connect_timeout=1)
            assert r.status == 200
        await transport.aclose()

    asyncio.run(run())
    assert server.connections == 1


def test_closing_a_stream_early_closes_its_connection(server: FakeServer) -> None:
    server.script(Reply(text="a b c d e f", chunks=6, chunk_delay_s=0.05))

    async def run() -> None:
        transport = AiohttpTransport()
        handle = await transport.aopen(_request(server, stream=True), timeout=5, connect_timeout=1)
        lines = handle.alines()
        assert (await lines.__anext__()).startswith(b"data: ")
        await lines.aclose()
        await handle.aclose()
        # The next request cannot reuse the abandoned connection: a new one is opened.
        r = await transport.asend(_request(server), timeout=5, connect_timeout=1)
        assert r.status == 200
        await transport.aclose()

    asyncio.run(run())
    assert server.connections == 2
