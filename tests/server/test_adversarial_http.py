"""A hostile client with raw sockets: slow or missing headers and bodies, too many
connections, malformed and duplicated headers carrying a valid key, odd methods and paths,
pipelining, `Expect: 100-continue`, compressed bodies. The gateway answers each with a 4xx (or
closes), on time, never with a 5xx, never echoing a header, never logging a key (the
session-wide log scan in conftest.py checks every record too)."""

from __future__ import annotations

import gzip
import json
import logging
import re
import socket
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from starcoder_router._server.connections import ConnectionGuard, client_of
from starcoder_router._server.settings import ServerSettings, TenantSettings
from starcoder_router._server.tenants import hash_key
from support.raw_http import closed_within, connect, exchange, read_response

KEY = "sk-adversarial-CANARY-5b0c9d2e7f"
KEY_B = KEY.encode()


def settings(**overrides: Any) -> ServerSettings:
    values: dict[str, Any] = {
        "tenants": (TenantSettings(name="acme", key_sha256=hash_key(KEY)),),
        "header_timeout_s": 0.5, "body_timeout_s": 0.5, "max_body_bytes": 20_000}
    values.update(overrides)
    return ServerSettings(**values)


@pytest.fixture
def gw(serve: Any) -> Any:
    return serve(settings=settings())


def request(method: bytes = b"GET", path: bytes = b"/v1/models", headers: bytes = b"",
            body: bytes = b"", auth: bool = True) -> bytes:
    lines = b"Host: gateway\r\n" + (b"Authorization: Bearer " + KEY_B + b"\r\n" if auth else b"")
    if body:
        lines += b"Content-Length: %d\r\n" % len(body)
    return method + b" " + path + b" HTTP/1.1\r\n" + lines + headers + b"\r\n" + body


def assert_no_key(*texts: bytes | str) -> None:
    for text in texts:
        raw = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text
        assert KEY_B not in raw and KEY_B[-12:] not in raw and b"CANARY" not in raw


# -- deadlines --------------------------------------------------------------------------------


def test_a_connection_that_sends_nothing_is_closed(gw: Any) -> None:
    with connect(gw.url) as sock:
        took = closed_within(sock, 5)
    assert took is not None and took < 2.5


def test_headers_trickled_slowly_are_cut_off(gw: Any) -> None:
    with connect(gw.url) as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: gateway\r\n")
        start = time.monotonic()
        closed = False
        while time.monotonic() - start < 5 and not closed:
            try:
                sock.sendall(b"X-Slow: 1\r\n")
            except OSError:
                closed = True
                break
            closed = closed_within(sock, 0.1) is not None
        assert closed
        assert time.monotonic() - start < 2.5


def _trickle_body(sock: socket.socket, total_s: float) -> bytes:
    """Send a body a byte at a time until the server answers; what it answered."""
    start = time.monotonic()
    got = b""
    while time.monotonic() - start < total_s:
        try:
            sock.sendall(b" ")
        except OSError:
            break
        sock.settimeout(0.1)
        try:
            data = sock.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            break
        if not data:
            break
        got += data
        if b"\r\n\r\n" in got:
            break
    return got


def test_a_trickled_body_gets_408_on_time(gw: Any) -> None:
    with connect(gw.url) as sock:
        sock.sendall(request(b"POST", b"/v1/completions", b"Content-Length: 500\r\n"))
        start = time.monotonic()
        got = _trickle_body(sock, 5)
        assert got.startswith(b"HTTP/1.1 408"), got[:200]
        assert time.monotonic() - start < 2.5
        assert closed_within(sock, 2) is not None  # half a body: the connection is done


def test_a_body_never_sent_gets_408_on_time(gw: Any) -> None:
    with connect(gw.url) as sock:
        sock.sendall(request(b"POST", b"/v1/completions", b"Content-Length: 500\r\n"))
        start = time.monotonic()
        r = read_response(sock)
        assert r is not None and r.status == 408
        assert time.monotonic() - start < 2.5


def test_a_huge_content_length_is_refused_before_any_body(gw: Any) -> None:
    start = time.monotonic()
    r = exchange(gw.url, request(b"POST", b"/v1/completions",
                                 b"Content-Length: 99999999999\r\n"))
    assert r is not None and r.status == 413
    assert time.monotonic() - start < 1


# -- connection caps --------------------------------------------------------------------------


def test_one_client_cannot_take_every_connection(serve: Any) -> None:
    gw = serve(settings=settings(header_timeout_s=10, max_connections_per_client=4))
    idle = [connect(gw.url) for _ in range(4)]
    try:
        time.sleep(0.1)
        refused = exchange(gw.url, request(path=b"/health"))
        assert refused is not None and refused.status == 429
        other = exchange(gw.url, request(path=b"/health"), source="127.0.0.2")
        assert other is not None and other.status == 200
    finally:
        for sock in idle:
            sock.close()
    time.sleep(0.2)
    again = exchange(gw.url, request(path=b"/health"))
    assert again is not None and again.status == 200


def test_a_full_gateway_refuses_new_connections_with_503(serve: Any) -> None:
    gw = serve(settings=settings(header_timeout_s=10, max_connections=3))
    idle = [connect(gw.url, source=f"127.0.0.{i}") for i in (1, 2, 3)]
    try:
        time.sleep(0.1)
        r = exchange(gw.url, request(path=b"/health"), source="127.0.0.4")
        assert r is not None and r.status == 503
    finally:
        for sock in idle:
            sock.close()


def test_a_keep_alive_connection_serves_a_bounded_number_of_requests(serve: Any) -> None:
    gw = serve(settings=settings(max_requests_per_connection=3))
    with connect(gw.url) as sock:
        sock.sendall(request(path=b"/health") * 5)  # pipelined
        buf = bytearray()
        answers = [read_response(sock, buf) for _ in range(4)]
    assert [a.status if a else None for a in answers] == [200, 200, 200, None]
    assert answers[2] is not None and answers[2].headers.get("connection") == "close"


def test_pipelined_requests_are_answered_in_order(gw: Any) -> None:
    with connect(gw.url) as sock:
        sock.sendall(request(path=b"/health") + request(path=b"/nowhere")
                     + request(path=b"/v1/models", auth=False) + request(path=b"/v1/models"))
        buf = bytearray()
        statuses = [getattr(read_response(sock, buf), "status", None) for _ in range(4)]
    assert statuses == [200, 404, 401, 200]


# -- hostile headers --------------------------------------------------------------------------

HOSTILE = {
    "cr after the key": b"Authorization: Bearer " + KEY_B + b"\rX-Injected: 1\r\n",
    "nul after the key": b"Authorization: Bearer " + KEY_B + b"\x00\r\n",
    "nul inside the key": b"Authorization: Bearer " + KEY_B[:8] + b"\x00" + KEY_B[8:] + b"\r\n",
    "lf inside the key": b"Authorization: Bearer " + KEY_B[:8] + b"\n" + KEY_B[8:] + b"\r\n",
    "non-utf-8 after the key": b"Authorization: Bearer " + KEY_B + b"\xff\xfe\r\n",
    "over-long key": b"Authorization: Bearer " + KEY_B * 400 + b"\r\n",
    "over-long other header": b"X-Pad: " + KEY_B * 400 + b"\r\n",
    "space before the colon": b"Authorization : Bearer " + KEY_B + b"\r\n",
    "folded line": b"Authorization: Bearer\r\n " + KEY_B + b"\r\n",
    "key in a header name": KEY_B + b": 1\r\n",
    "key in a bad header name": KEY_B + b"\x01: 1\r\n",
    "key in the request id": b"X-Request-Id: " + KEY_B + b"\x7f\r\n",
    "control chars": b"X-Thing: \x01\x02\x1b[31m" + KEY_B + b"\r\n",
    "too many headers": b"".join(b"X-%d: %s\r\n" % (i, KEY_B) for i in range(100)),
    "two content lengths": b"Content-Length: 3\r\nContent-Length: 4\r\n",
    "length and chunked": b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
}


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_headers_never_echo_or_log_the_key(gw: Any, name: str,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    for path in (b"/v1/models", b"/v1/completions", b"/health"):
        raw = (b"POST " + path + b" HTTP/1.1\r\nHost: gateway\r\n" + HOSTILE[name]
               + b"\r\n{}")
        r = exchange(gw.url, raw)
        if r is not None:
            assert 400 <= r.status < 500 or r.status == 200, (name, r.raw[:300])
            assert b"Traceback" not in r.body
            assert_no_key(r.raw)
    assert_no_key(*(rec.getMessage() for rec in caplog.records))
    assert_no_key(*(caplog.text,))


@pytest.mark.parametrize("key", [b"sk-\xff\xfe", b"\xc3\x28", b"sk-" + b"\x80" * 40,
                                 b"sk-\xed\xa0\x80"])
def test_a_key_that_is_not_utf8_is_a_clean_401(gw: Any, key: bytes,
                                               caplog: pytest.LogCaptureFixture) -> None:
    for method, path in ((b"GET", b"/v1/models"), (b"POST", b"/v1/completions"),
                         (b"POST", b"/api/generate"), (b"POST", b"/generate")):
        r = exchange(gw.url, method + b" " + path + b" HTTP/1.1\r\nHost: g\r\n"
                     b"Authorization: Bearer " + key + b"\r\nContent-Length: 2\r\n\r\n{}")
        assert r is not None and r.status == 401, r
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR]


def test_duplicate_authorization_headers_are_refused(gw: Any) -> None:
    both_valid = b"Authorization: Bearer " + KEY_B + b"\r\n"
    for extra in (both_valid, b"Authorization: Bearer sk-other\r\n"):
        r = exchange(gw.url, request(headers=extra))
        assert r is not None and r.status == 401
    r = exchange(gw.url, request(auth=False, headers=b"Authorization: Bearer sk-other\r\n"
                                 + both_valid))
    assert r is not None and r.status == 401


# -- methods, paths, bodies -------------------------------------------------------------------

ODD = [
    b"BREW /v1/models HTTP/1.1", b"TRACE /v1/models HTTP/1.1", b"OPTIONS * HTTP/1.1",
    b"CONNECT 127.0.0.1:22 HTTP/1.1", b"DELETE /v1/completions HTTP/1.1",
    b"GET /../../etc/passwd HTTP/1.1", b"GET /%2e%2e/%2e%2e/etc/passwd HTTP/1.1",
    b"GET //etc/passwd HTTP/1.1", b"GET /v1/models/../../../etc/passwd HTTP/1.1",
    b"GET /v1/models%00 HTTP/1.1", b"GET /api/%2fetc%2fpasswd HTTP/1.1",
    b"GET http://169.254.169.254/latest/meta-data HTTP/1.1", b"GET /\xff\xfe HTTP/1.1",
    b"GET /" + b"a" * 10_000 + b" HTTP/1.1", b"GET /v1/models HTTP/9.9", b"GET /v1/models",
]


@pytest.mark.parametrize("line", ODD, ids=lambda b: b[:40].decode("latin-1"))
def test_odd_methods_and_paths_get_a_4xx(gw: Any, line: bytes) -> None:
    r = exchange(gw.url, line + b"\r\nHost: g\r\nAuthorization: Bearer " + KEY_B + b"\r\n\r\n")
    if r is not None:
        assert 400 <= r.status < 500 or r.status == 200, r.raw[:300]
        assert b"root:" not in r.body
        assert_no_key(r.raw)


def test_expect_continue_waits_for_the_key(gw: Any) -> None:
    body = b'{"model": "starcoder2", "prompt": "x", "max_tokens": 2}'
    head = b"Content-Length: %d\r\nExpect: 100-continue\r\n" % len(body)
    with connect(gw.url) as sock:
        sock.sendall(request(b"POST", b"/v1/completions", head, auth=False))
        first = sock.recv(65536)
    assert first.startswith(b"HTTP/1.1 401"), first[:100]
    with connect(gw.url) as sock:
        sock.sendall(request(b"POST", b"/v1/completions", head))
        assert sock.recv(65536).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(body)
        r = read_response(sock)
    assert r is not None and r.status == 200
    odd = exchange(gw.url, request(b"POST", b"/v1/completions",
                                   b"Content-Length: 2\r\nExpect: " + KEY_B + b"\r\n"))
    assert odd is not None and odd.status == 417
    assert_no_key(odd.raw)


def test_compressed_bodies_are_refused_without_inflating_them(gw: Any) -> None:
    bomb = gzip.compress(b"\x00" * 50_000_000, compresslevel=9)
    start = time.monotonic()
    r = exchange(gw.url, request(b"POST", b"/v1/completions", b"Content-Encoding: gzip\r\n",
                                 body=bomb))
    assert r is not None and r.status in (413, 415)
    assert time.monotonic() - start < 2
    r = exchange(gw.url, request(b"POST", b"/v1/completions", b"Content-Encoding: gzip\r\n",
                                 body=gzip.compress(b'{"prompt": "x"}')))
    assert r is not None and r.status == 415


# -- fuzzing ----------------------------------------------------------------------------------

PATHS = [b"/v1/completions", b"/v1/chat/completions", b"/v1/models", b"/api/generate",
         b"/api/show", b"/api/tags", b"/api/version", b"/generate", b"/generate_stream", b"/",
         b"/info", b"/health", b"/metrics", b"/nowhere", b"/v1/models/../../etc/passwd"]
HEADER_NAMES = [b"Authorization", b"Content-Length", b"Transfer-Encoding", b"Content-Type",
                b"Expect", b"Connection", b"X-Request-Id", b"Content-Encoding", b"Host",
                b"Upgrade", b"Accept"]
HEADER_VALUES = [b"Bearer " + KEY_B, b"Bearer " + KEY_B + b"\r", b"Bearer " + KEY_B + b"\x00",
                 b"Bearer " + KEY_B + b"\xff", b"bearer  " + KEY_B + b" ", b"\x00", b"chunked",
                 b"chunked, gzip", b"-1", b"99999999999", b"0x10", b"100-continue", b"gzip",
                 b"close", b"keep-alive, Upgrade", b"websocket", b"h2c", KEY_B * 300,
                 b"application/json; charset=\xff"]

methods = st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE", b"HEAD", b"OPTIONS", b"PATCH",
                           b"BREW", b"G\x00T", b"PRI"]) | st.binary(min_size=1, max_size=8)
paths = st.sampled_from(PATHS) | st.binary(min_size=1, max_size=40).map(lambda b: b"/" + b)
header = st.tuples(st.sampled_from(HEADER_NAMES) | st.binary(min_size=1, max_size=12),
                   st.sampled_from(HEADER_VALUES) | st.binary(max_size=40))
bodies = st.sampled_from([b"", b"{}", b'{"model": "starcoder2", "prompt": "x", "max_tokens": 2}',
                          b'{"prompt": "PROMPT-CANARY", "max_tokens": 99999, "stream": true}',
                          b'{"model": "starcoder2", "messages": [{"role": "user", '
                          b'"content": "PROMPT-CANARY"}], "max_tokens": 2}',
                          b'{"inputs": "PROMPT-CANARY", "parameters": {"max_new_tokens": -1}}',
                          b"0\r\n\r\n", b"5\r\nhello\r\n0\r\n\r\n"]) | st.binary(max_size=100)


@pytest.fixture
def fuzz_gw(serve: Any) -> Any:
    return serve(settings=settings(header_timeout_s=0.3, body_timeout_s=0.3,
                                   max_connections_per_client=1000))


@hyp_settings(max_examples=300, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(method=methods, path=paths, headers=st.lists(header, max_size=6), body=bodies)
def test_any_request_gets_a_4xx_or_a_success(fuzz_gw: Any, method: bytes, path: bytes,
                                             headers: list[tuple[bytes, bytes]],
                                             body: bytes) -> None:
    head = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
    raw = method + b" " + path + b" HTTP/1.1\r\nHost: g\r\n" + head + b"\r\n" + body
    errors_before = len(_ERRORS)
    r = exchange(fuzz_gw.url, raw, timeout=5)
    if r is not None:
        assert r.status < 500, r.raw[:300]
        assert b"Traceback" not in r.raw
        assert_no_key(r.raw)
    assert len(_ERRORS) == errors_before, _ERRORS[errors_before:]


class _Errors(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        _ERRORS.append(f"{record.name}: {record.getMessage()}")


_ERRORS: list[str] = []


@pytest.fixture(autouse=True)
def _no_error_records() -> Any:
    """Nothing a client sends is worth an ERROR record (that is a bug's level)."""
    handler = _Errors(logging.ERROR)
    logging.getLogger().addHandler(handler)
    try:
        yield
    finally:
        logging.getLogger().removeHandler(handler)
    errors, _ERRORS[:] = list(_ERRORS), []
    assert not errors


def test_urls_in_a_body_are_never_called(gw: Any) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    here = f"http://127.0.0.1:{listener.getsockname()[1]}"
    named = {"base_url": here, "api_base": here, "url": here, "host": here, "endpoint": here,
             "images": [here], "image_url": {"url": here}}
    bodies = [
        {"model": here, "prompt": here},
        {"model": "starcoder2", "prompt": here, "max_tokens": 2, **named,
         "extra_body": named, "options": named, "parameters": named},
        {"model": "starcoder2", "messages": [{"role": "user", "content": here, **named}],
         "max_tokens": 2, **named},
        {"inputs": here, "parameters": {"max_new_tokens": 2, **named}, **named},
        {"model": f"{here}/v1", "name": here},
    ]
    try:
        for path in PATHS:
            for body in bodies:
                data = json.dumps(body).encode()
                r = exchange(gw.url, request(b"POST", path, b"Content-Type: application/json\r\n",
                                             body=data))
                assert r is None or r.status < 500
        with pytest.raises(TimeoutError):
            listener.accept()
    finally:
        listener.close()


def test_a_request_id_is_echoed_only_when_it_is_a_plain_token(gw: Any) -> None:
    r = exchange(gw.url, request(path=b"/nowhere", headers=b"X-Request-Id: req-42.a:b\r\n"))
    assert r is not None and r.headers["x-request-id"] == "req-42.a:b"
    for hostile in (b"a\x1b[31mred", b"a\x00b", b"\xff\xfe", b"x" * 200, b"a b", b"%0d%0a"):
        r = exchange(gw.url, request(path=b"/nowhere",
                                     headers=b"X-Request-Id: " + hostile + b"\r\n"))
        assert r is not None and r.status in (400, 404)  # 400: the parser refused it already
        if r.status == 404:
            assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"]), r.headers


def test_connections_are_counted_per_address_and_ipv6_per_64() -> None:
    assert client_of(("10.1.2.3", 5000)) == "10.1.2.3"
    assert client_of(("2001:db8::1", 5000, 0, 0)) == client_of(("2001:db8::ffff:1", 1, 0, 0))
    assert client_of(("2001:db8:0:1::1", 5000, 0, 0)) != client_of(("2001:db8::1", 1, 0, 0))
    assert client_of(None) == client_of("/tmp/socket") == "-"
    guard = ConnectionGuard(total=3, per_client=2)
    assert [guard.enter("a"), guard.enter("a"), guard.enter("a")] == [None, None, 429]
    assert guard.enter("b") is None
    assert guard.enter("c") == 503
    guard.leave("a")
    assert guard.enter("c") is None
    for who in ("a", "b", "c"):
        guard.leave(who)
    assert guard.open == 0 and guard.enter("a") is None


PROVIDER_KEY = "sk-provider-CANARY-4e1f0a9b8c7d"


@pytest.mark.parametrize("status", [401, 429, 500])
def test_a_provider_key_echoed_upstream_reaches_no_answer_or_log(
        serve: Any, upstream: Any, status: int, caplog: pytest.LogCaptureFixture) -> None:
    from upstream import Reply

    from starcoder_router._config import ProviderSettings
    from starcoder_router._running.retry import RetryPolicy

    caplog.set_level(logging.DEBUG)
    gw = serve(settings=settings(), retry=RetryPolicy(max_attempts=1),
               providers={"openai-compatible": ProviderSettings(api_key=PROVIDER_KEY)})
    upstream.script(*[Reply(status=status, error=f"key {PROVIDER_KEY} refused")] * 4)
    body = json.dumps({"model": "starcoder2", "prompt": "x", "max_tokens": 2}).encode()
    r = exchange(gw.url, request(b"POST", b"/v1/completions", body=body))
    assert r is not None and r.status in (429, 503), r.raw[:300]
    assert PROVIDER_KEY.encode() not in r.raw and PROVIDER_KEY[-8:].encode() not in r.raw
    assert PROVIDER_KEY[-8:] not in caplog.text


def test_a_client_that_stops_reading_a_stream_is_closed(serve: Any, upstream: Any) -> None:
    from upstream import Reply

    gw = serve(settings=settings(send_timeout_s=0.5))
    upstream.script(Reply(text=" ".join(["y" * 12_000] * 1500)))  # 18 MB: past any buffer
    body = json.dumps({"model": "starcoder2", "prompt": "x", "max_tokens": 1500,
                       "stream": True}).encode()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    host, port = gw.url.removeprefix("http://").split(":")
    sock.connect((host, int(port)))
    with sock:
        sock.sendall(request(b"POST", b"/v1/completions", body=body))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and upstream.closed_streams == 0:
            time.sleep(0.1)  # never reading
        assert upstream.closed_streams == 1  # the gateway gave up and closed the upstream
        assert closed_within(sock, 10) is not None


def test_garbage_cannot_flood_the_log(gw: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="starcoder_router")
    for _ in range(50):
        exchange(gw.url, b"GET / HTTP/1.1\r\nHost: g\r\nX: \x00\r\n\r\n")
    lines = [r for r in caplog.records if "malformed" in r.getMessage()]
    assert len(lines) <= 2


def test_settings_show_no_key_digest() -> None:
    s = settings(metrics_key="sk-metrics-CANARY-1234")
    for text in (repr(s), str(s), repr(s.tenants[0])):
        assert hash_key(KEY) not in text and "CANARY" not in text


def test_the_connection_cap_fits_the_open_file_limit() -> None:
    from starcoder_router._server.connections import fit_connections

    assert fit_connections(1024, 20_000, 20_000) == (1024, 20_000)  # room enough
    assert fit_connections(1024, 1024, 4096) == (1024, 2304)  # the soft limit goes up
    assert fit_connections(1024, 1024, 1024) == (384, 1024)  # it cannot: fewer connections
    assert fit_connections(1024, 1024, -1) == (1024, 2304)  # unlimited hard limit
    assert fit_connections(1024, -1, -1) == (1024, -1)
    assert fit_connections(10, 100, 100)[0] == 1


@pytest.mark.parametrize("text", ["\U00040000", "a\U0007ffff" * 300, "x" * 600 + "\U00050000"])
def test_characters_outside_the_vocabulary_are_counted(serve: Any, exact_counter: Any,
                                                       text: str) -> None:
    gw = serve(settings=settings(), tokenizer=exact_counter)
    body = json.dumps({"model": "starcoder2", "prompt": text, "max_tokens": 2}).encode()
    r = exchange(gw.url, request(b"POST", b"/v1/completions", body=body))
    assert r is not None and r.status == 200, r
    assert exact_counter.count(text) == len(exact_counter.encode(text)) > 0
    assert exact_counter.count("\U00040000") == 3  # as `tokenizers` counts: the 0xF1 is dropped
