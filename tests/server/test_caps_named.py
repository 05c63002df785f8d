"""Every answer over a cap names the cap's setting, so that a caller (or an operator reading a
client's error) knows what to change: the body's size and deadline, the token limit, the input
caps and the caps on requests in flight (SECURITY.md, "Request caps")."""

from __future__ import annotations

import json
from typing import Any

import httpx

from starcoder_router._server.settings import ServerSettings
from support.raw_http import connect, read_response


def test_a_body_over_the_size_cap_names_max_body_bytes(serve: Any) -> None:
    gw = serve(settings=ServerSettings(max_body_bytes=2000))
    r = httpx.post(gw.url + "/v1/completions", timeout=10, json={"prompt": "x" * 5000})
    assert r.status_code == 413
    assert "max_body_bytes" in r.json()["error"]["message"]


def test_a_body_sent_too_slowly_names_body_timeout_s(serve: Any) -> None:
    gw = serve(settings=ServerSettings(body_timeout_s=0.5))
    host, port = gw.url.removeprefix("http://").split(":")
    with connect(gw.url) as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: " + host.encode() + b":"
                     + port.encode() + b"\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 500\r\n\r\n{")
        r = read_response(sock)
    assert r is not None and r.status == 408
    assert "body_timeout_s" in json.loads(r.body)["error"]["message"]


def test_a_token_limit_over_the_cap_names_max_tokens(serve: Any) -> None:
    gw = serve(settings=ServerSettings(max_tokens=64))
    r = httpx.post(gw.url + "/v1/completions", timeout=10,
                   json={"prompt": "x", "max_tokens": 65})
    assert r.status_code == 400
    assert "max_tokens" in r.json()["error"]["message"]


def test_a_tenant_over_its_queue_gets_a_429_naming_max_queued_per_tenant(
        serve: Any, upstream: Any) -> None:
    import asyncio

    from upstream import Reply  # loaded by conftest.py

    from starcoder_router._server.settings import TenantSettings
    from starcoder_router._server.tenants import hash_key

    key = "sk-caps-named-1"
    gw = serve(settings=ServerSettings(
        tenants=(TenantSettings(name="acme", key_sha256=hash_key(key)),),
        max_requests_in_flight_per_tenant=1, max_queued_per_tenant=0))
    upstream.script(Reply(delay_s=1.0))

    async def two() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=10) as c:
            first = asyncio.create_task(c.post(
                gw.url + "/v1/completions", json={"prompt": "def a():"},
                headers={"Authorization": f"Bearer {key}"}))
            await asyncio.sleep(0.3)
            second = await c.post(gw.url + "/v1/completions", json={"prompt": "def b():"},
                                  headers={"Authorization": f"Bearer {key}"})
            return [await first, second]

    first, second = asyncio.run(two())
    assert first.status_code == 200
    assert second.status_code == 429
    assert second.headers["Retry-After"] == "1"
    assert "max_queued_per_tenant" in second.json()["error"]["message"]
