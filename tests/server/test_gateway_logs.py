"""What the gateway answers and logs when it cannot serve: a 4xx that says why for what will
not change by waiting, a logged 503 for failed upstreams, and an access line per request, none
of which carries a key or prompt text."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
from upstream import Reply

from starcoder_router import RetryPolicy
from starcoder_router._server.settings import ServerSettings, TenantSettings
from starcoder_router._server.tenants import hash_key

SECRET_PROMPT = "def very_secret_function_name():"
KEY = "sk-acme-0123456789"
TENANTS = (TenantSettings(name="acme", key_sha256=hash_key(KEY)),)
AUTH = {"Authorization": f"Bearer {KEY}"}


def _lines(caplog: pytest.LogCaptureFixture, name: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == name]


@pytest.fixture(autouse=True)
def _info(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="starcoder_router")


def test_chat_without_a_chat_deployment_is_a_400_that_says_why(
        serve: Any, catalog_of: Any, caplog: pytest.LogCaptureFixture) -> None:
    gw = serve(catalog=catalog_of("starcoder2-3b"))
    r = httpx.post(gw.url + "/v1/chat/completions", json={
        "model": "starcoder2", "messages": [{"role": "user", "content": SECRET_PROMPT}]},
        timeout=10)
    assert r.status_code == 400
    assert "Retry-After" not in r.headers
    error = r.json()["error"]
    assert error["code"] == "unsupported_request"
    assert error["type"] == "invalid_request_error"
    assert "lacks chat" in error["message"]
    rid = r.headers["x-request-id"]
    logged = [m for m in _lines(caplog, "starcoder_router.server") if rid in m]
    assert len(logged) == 1
    assert "400 unsupported_request" in logged[0]
    assert SECRET_PROMPT not in caplog.text


def test_unknown_model_is_logged(serve: Any, caplog: pytest.LogCaptureFixture) -> None:
    gw = serve()
    r = httpx.post(gw.url + "/api/generate", json={"model": "llama3", "prompt": "x"},
                   timeout=10)
    assert r.status_code == 404
    assert "Retry-After" not in r.headers
    logged = _lines(caplog, "starcoder_router.server")
    assert any(r.headers["x-request-id"] in m and "model_not_found" in m for m in logged)


@pytest.mark.parametrize("stream", [False, True])
def test_failed_upstream_is_logged_without_key_or_prompt(
        serve: Any, upstream: Any, caplog: pytest.LogCaptureFixture, stream: bool) -> None:
    gw = serve(retry=RetryPolicy(max_retries=0), settings=ServerSettings(tenants=TENANTS),
               providers={"openai-compatible": {"api_key": "sk-upstream-secret"}})
    upstream.script(*[Reply(status=500, error=f"boom {SECRET_PROMPT}")] * 6)
    r = httpx.post(gw.url + "/v1/completions", headers=AUTH, json={
        "model": "starcoder2", "prompt": SECRET_PROMPT, "max_tokens": 4, "stream": stream},
        timeout=10)
    assert r.status_code == 503
    rid = r.headers["x-request-id"]
    warned = [rec for rec in caplog.records
              if rec.name == "starcoder_router.server" and rid in rec.getMessage()]
    assert len(warned) == 1
    assert warned[0].levelno == logging.WARNING
    line = warned[0].getMessage()
    assert "upstream_failed" in line
    assert "mock/starcoder2-3b" in line and "HTTP 500" in line
    for secret in (SECRET_PROMPT, KEY, "sk-upstream-secret"):
        assert secret not in caplog.text


def test_access_log_line_per_request(serve: Any, caplog: pytest.LogCaptureFixture) -> None:
    gw = serve(settings=ServerSettings(tenants=TENANTS))
    # A key in the query string must stay out of the gateway's access log. The test's own
    # client (httpx) would log the URL it sends, which is not the gateway's doing: mute it.
    client_log = logging.getLogger("httpx")
    client_log.disabled = True
    try:
        ok = httpx.post(gw.url + "/v1/completions?api_key=" + KEY, headers=AUTH,
                        json={"model": "starcoder2", "prompt": SECRET_PROMPT, "max_tokens": 2},
                        timeout=10)
    finally:
        client_log.disabled = False
    assert ok.status_code == 200
    denied = httpx.get(gw.url + "/v1/models", timeout=10)
    assert denied.status_code == 401
    lines = _lines(caplog, "starcoder_router.access")
    assert len(lines) == 2
    method, path, status, took, tenant, rid = lines[0].split()
    assert (method, path, status) == ("POST", "/v1/completions", "200")
    assert took.endswith("ms") and float(took[:-2]) >= 0
    assert tenant == "tenant=acme"
    assert rid == "request_id=" + ok.headers["x-request-id"]
    assert lines[1].split()[:3] == ["GET", "/v1/models", "401"]
    assert "tenant=-" in lines[1]
    for secret in (SECRET_PROMPT, KEY):
        assert secret not in caplog.text


def test_access_log_can_be_turned_off(serve: Any, caplog: pytest.LogCaptureFixture) -> None:
    gw = serve(settings=ServerSettings(access_log=False))
    assert httpx.get(gw.url + "/v1/models", timeout=10).status_code == 200
    assert _lines(caplog, "starcoder_router.access") == []
