"""What the gateway does around the protocols: disconnects, caps, shutdown, health, metrics."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest
from upstream import Reply  # loaded by conftest.py

from starcoder_router import Budget, CostPolicy, RetryPolicy
from starcoder_router._server.settings import ServerSettings, TenantSettings
from starcoder_router._server.tenants import hash_key


def wait_for(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def test_client_disconnect_closes_upstream_and_books_partial_cost(serve: Any,
                                                                  upstream: Any) -> None:
    gw = serve()
    upstream.script(Reply(text="one two three four five six", hang_after=2))
    body = {"model": "starcoder2", "prompt": "def f():", "max_tokens": 16, "stream": True}
    with httpx.Client(timeout=10) as client, \
            client.stream("POST", gw.url + "/v1/completions", json=body) as r:
        assert r.status_code == 200
        events = 0
        for line in r.iter_lines():
            events += line.startswith("data:")
            if events == 2:
                break
    # The client hung up while the upstream was still "generating".
    wait_for(lambda: upstream.closed_streams == 1)
    wait_for(lambda: len(gw.gateway.store.ledger()) == 1)
    entry = gw.gateway.store.ledger()[0]
    assert entry.outcome == "cancelled"
    assert entry.completion_tokens >= 1
    assert entry.cost_nano > 0


def test_body_over_the_cap_is_a_413(serve: Any, upstream: Any) -> None:
    gw = serve(settings=ServerSettings(max_body_bytes=2000))
    r = httpx.post(gw.url + "/v1/completions", timeout=10,
                   json={"model": "starcoder2", "prompt": "x" * 5000})
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "request_too_large"
    r = httpx.post(gw.url + "/api/generate", timeout=10,
                   json={"model": "starcoder2", "prompt": "x" * 5000})
    assert r.status_code == 413
    assert "error" in r.json()
    assert upstream.bodies == []


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/completions", b"{not json"),
    ("/v1/completions", b"[1, 2]"),
    ("/v1/completions", b'{"prompt": 5}'),
    ("/v1/completions", b'{"prompt": "x", "max_tokens": "many"}'),
    ("/v1/chat/completions", b'{"messages": []}'),
    ("/v1/chat/completions", b'{"messages": [{"role": "robot", "content": "x"}]}'),
    ("/api/generate", b'{"prompt": "x"}'),
    ("/api/generate", b'{"model": "starcoder2", "options": {"num_predict": "x"}}'),
    ("/generate", b'{"inputs": null}'),
])
def test_malformed_bodies_are_400s_in_the_protocols_shape(serve: Any, path: str,
                                                          body: bytes) -> None:
    gw = serve()
    r = httpx.post(gw.url + path, content=body, timeout=10,
                   headers={"content-type": "application/json"})
    assert r.status_code == 400
    err = r.json()["error"]
    if path.startswith("/v1/"):
        assert err["type"] == "invalid_request_error"
    else:
        assert isinstance(err, str)


def test_unknown_routes_and_methods_keep_the_error_shape(serve: Any) -> None:
    gw = serve()
    r = httpx.get(gw.url + "/v1/nothing", timeout=10)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"
    r = httpx.get(gw.url + "/v1/completions", timeout=10)
    assert r.status_code == 405
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_health_ready_and_metrics(serve: Any, upstream: Any, upstream_url: str) -> None:
    tenants = (TenantSettings(name="acme", key_sha256=hash_key("sk-acme")),)
    policy = CostPolicy(budgets=[Budget(limit_usd=1, period="day", scope="tenant")])
    gw = serve(settings=ServerSettings(tenants=tenants), policy=policy)
    # the probes need no key
    assert httpx.get(gw.url + "/health", timeout=10).json() == {"status": "ok"}
    assert httpx.get(gw.url + "/ready", timeout=10).status_code == 200
    auth = {"Authorization": "Bearer sk-acme"}
    r = httpx.post(gw.url + "/v1/completions", headers=auth, timeout=10,
                   json={"model": "starcoder2", "prompt": "def add(a, b):", "max_tokens": 8})
    assert r.status_code == 200
    assert httpx.post(gw.url + "/v1/completions", timeout=10, json={}).status_code == 401
    text = httpx.get(gw.url + "/metrics", timeout=10).text
    assert ('starcoder_router_requests_total{protocol="openai",route="/v1/completions",'
            'status="200"} 1.0') in text
    assert 'starcoder_router_requests_total{protocol="openai",route="/v1/completions",' \
           'status="401"} 1.0' in text
    assert 'starcoder_router_tokens_total{deployment="mock/starcoder2-3b",kind="output",' \
           'tenant="acme"} 4.0' in text
    assert 'starcoder_router_spend_usd_total{deployment="mock/starcoder2-3b",tenant="acme"}' \
        in text
    assert 'starcoder_router_circuit_open{deployment="mock/starcoder2-3b"} 0.0' in text
    assert 'starcoder_router_budget_remaining_usd{budget="tenant:acme/day",' \
           'key="tenant:acme/day|' in text
    assert "starcoder_router_request_seconds_bucket" in text


def test_ready_is_503_when_no_deployment_can_serve(serve: Any, upstream: Any) -> None:
    from starcoder_router import HealthPolicy

    gw = serve(retry=RetryPolicy(max_retries=0), health=HealthPolicy(failure_threshold=1,
                                                                     cooldown_s=30))
    upstream.script(*[Reply(status=500)] * 3)
    r = httpx.post(gw.url + "/v1/completions", timeout=10,
                   json={"model": "starcoder2", "prompt": "x", "max_tokens": 4})
    assert r.status_code == 503
    text = httpx.get(gw.url + "/metrics", timeout=10).text
    assert 'starcoder_router_circuit_open{deployment="mock/starcoder2-3b"} 1.0' in text
    assert 'starcoder_router_errors_total{type="ProviderServerError"} 2.0' in text
    # every deployment that takes a plain completion is cooling down
    assert httpx.get(gw.url + "/ready", timeout=10).status_code == 503


def test_graceful_shutdown_lets_a_stream_finish(serve: Any, upstream: Any,
                                                loop_thread: Any) -> None:
    gw = serve(settings=ServerSettings(shutdown_timeout_s=5))
    upstream.script(Reply(text="one two three four", chunk_delay_s=0.15))
    got: list[str] = []

    def read() -> None:
        body = {"model": "starcoder2", "prompt": "x", "max_tokens": 8, "stream": True}
        with httpx.stream("POST", gw.url + "/v1/completions", json=body, timeout=10) as r:
            got.extend(r.iter_lines())

    reader = threading.Thread(target=read)
    reader.start()
    wait_for(lambda: upstream.open_streams == 1)
    loop_thread.run(gw.stop())
    reader.join(10)
    assert "data: [DONE]" in got
    assert len(gw.gateway.store.ledger()) == 1
    assert gw.gateway.store.ledger()[0].outcome == "ok"


def test_shutdown_cancels_a_stream_past_the_timeout_and_books_it(serve: Any, upstream: Any,
                                                                 loop_thread: Any) -> None:
    gw = serve(settings=ServerSettings(shutdown_timeout_s=0.3))
    upstream.script(Reply(text="one two three four", hang_after=2))
    got: list[str] = []

    def read() -> None:
        body = {"model": "starcoder2", "prompt": "x", "max_tokens": 8, "stream": True}
        try:
            with httpx.stream("POST", gw.url + "/v1/completions", json=body, timeout=10) as r:
                got.extend(r.iter_lines())
        except httpx.HTTPError:
            pass  # the gateway closed the connection: expected

    reader = threading.Thread(target=read)
    reader.start()
    wait_for(lambda: upstream.open_streams == 1)
    time.sleep(0.1)
    started = time.monotonic()
    loop_thread.run(gw.stop())
    assert time.monotonic() - started < 3
    reader.join(10)
    assert "data: [DONE]" not in got
    wait_for(lambda: upstream.closed_streams == 1)
    (entry,) = gw.gateway.store.ledger()
    assert entry.outcome == "cancelled"
    assert entry.completion_tokens >= 2  # counted by the router on the text delivered
    assert entry.cost_nano > 0


def test_an_opened_circuit_reaches_every_model_names_router(serve: Any, upstream: Any) -> None:
    from starcoder_router import HealthPolicy

    # a cooldown longer than a request's deadline: the router does not wait it out
    gw = serve(settings=ServerSettings(request_timeout_s=5), retry=RetryPolicy(max_retries=0),
               health=HealthPolicy(failure_threshold=1, cooldown_s=30))
    body = {"prompt": "x", "max_tokens": 4}
    pinned = httpx.post(gw.url + "/v1/completions", json={**body, "model": "starcoder2-3b"},
                        timeout=10)
    assert pinned.status_code == 200  # the pinned router exists before the failure
    upstream.fail_models.add("mock-starcoder2-3b")
    r = httpx.post(gw.url + "/v1/completions", json={**body, "model": "starcoder2"}, timeout=10)
    assert r.headers["x-starcoder-router-deployment"] == "mock/starcoder2-7b"
    sent = len(upstream.bodies)
    for model in ("starcoder2-3b", "starcoder2:3b"):  # an existing router, and a new one
        r = httpx.post(gw.url + "/v1/completions", json={**body, "model": model}, timeout=10)
        assert r.status_code == 503
    assert len(upstream.bodies) == sent  # neither tried the deployment known to be down


def test_a_hung_redis_store_gives_a_503_within_its_timeout(serve: Any) -> None:
    """A Redis that accepts and never answers: the request is refused in time, not held."""
    import socket
    import time

    pytest.importorskip("redis")
    from starcoder_router import RedisStore

    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(16)  # the kernel completes the handshakes; nobody ever reads or writes
        url = f"redis://127.0.0.1:{hung.getsockname()[1]}/0"
        gw = serve(store=RedisStore(url, timeout_s=0.3))
        began = time.monotonic()
        r = httpx.post(gw.url + "/v1/completions", timeout=30,
                       json={"model": "starcoder2", "prompt": "x", "max_tokens": 4})
        assert r.status_code == 503
        assert r.json()["error"]["type"] == "store_error" or "store" in r.text.lower()
        assert time.monotonic() - began < 5.0  # a few store calls of 0.3 s each, not a hang
