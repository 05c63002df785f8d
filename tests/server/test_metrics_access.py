"""`/metrics` tells nothing to a stranger: behind `metrics_key` when one is set, without tenant
names when `metrics_tenant_labels = false`, and with label sets that clients cannot multiply
(unknown models and paths add none)."""

from __future__ import annotations

import secrets
from typing import Any

import httpx
import pytest

from starcoder_router._errors import ConfigError
from starcoder_router._server.settings import ServerSettings, TenantSettings
from starcoder_router._server.tenants import hash_key
from support.raw_http import exchange

KEY = "sk-metrics-tenant-91c2"
METRICS_KEY = "sk-metrics-scraper-0a7d3e"
AUTH = {"Authorization": f"Bearer {KEY}"}
BODY = {"model": "starcoder2", "prompt": "x", "max_tokens": 4}


def settings(**extra: Any) -> ServerSettings:
    return ServerSettings(tenants=(TenantSettings(name="acme-corp", key_sha256=hash_key(KEY)),),
                          **extra)


def scrape(url: str, key: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    return httpx.get(url + "/metrics", headers=headers, timeout=10)


def test_metrics_need_the_metrics_key_when_one_is_set(serve: Any) -> None:
    gw = serve(settings=settings(metrics_key=METRICS_KEY))
    assert httpx.post(gw.url + "/v1/completions", json=BODY, headers=AUTH,
                      timeout=10).status_code == 200
    for key in (None, "wrong", METRICS_KEY[:-1], METRICS_KEY + "x", KEY):
        r = scrape(gw.url, key)
        assert r.status_code == 401, key
        assert "acme-corp" not in r.text
    raw = exchange(gw.url, b"GET /metrics HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer "
                   + METRICS_KEY.encode() + b"\xff\r\n\r\n")
    assert raw is not None and raw.status == 401
    r = scrape(gw.url, METRICS_KEY)
    assert r.status_code == 200
    assert 'tenant="acme-corp"' in r.text
    assert httpx.get(gw.url + "/health", timeout=10).status_code == 200  # still open


def test_metrics_stay_open_without_a_metrics_key(serve: Any) -> None:
    assert scrape(serve(settings=settings()).url).status_code == 200


def test_an_empty_metrics_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        ServerSettings(metrics_key="  ")
    assert METRICS_KEY not in repr(settings(metrics_key=METRICS_KEY))


def test_tenant_labels_can_be_dropped(serve: Any) -> None:
    from starcoder_router import Budget, CostPolicy

    policy = CostPolicy(budgets=[Budget(limit_usd=5.0, period="day", scope="tenant")])
    gw = serve(settings=settings(metrics_tenant_labels=False), policy=policy)
    assert httpx.post(gw.url + "/v1/completions", json=BODY, headers=AUTH,
                      timeout=10).status_code == 200
    text = scrape(gw.url).text
    assert "starcoder_router_tokens_total" in text
    assert "acme-corp" not in text


def _series(text: str) -> set[str]:
    return {line.split(" ")[0] for line in text.splitlines()
            if line and not line.startswith("#")}


def _visit(c: httpx.Client, name: str) -> None:
    c.post("/v1/completions", json={**BODY, "model": name})
    c.post("/api/generate", json={"model": name, "prompt": "x"})
    c.post("/api/show", json={"model": name})
    c.get(f"/{name}")
    c.get(f"/v1/{name}/completions")
    c.request("PATCH", f"/api/{name}")
    c.delete("/v1/completions")


def test_clients_cannot_add_label_sets(serve: Any) -> None:
    gw = serve(settings=settings())
    with httpx.Client(base_url=gw.url, headers=AUTH, timeout=10) as c:
        _visit(c, "warm-up")  # every route and status these requests reach, once
        scrape(gw.url)
        before = _series(scrape(gw.url).text)
        names = [secrets.token_hex(6) for _ in range(20)]
        for name in names:
            _visit(c, name)
        text = scrape(gw.url).text
    assert not any(name in text for name in names)
    assert _series(text) == before
