"""The gateway's aiohttp application: the three protocols, health, readiness and metrics.

Example::

    gateway = Gateway.from_config("router.toml")
    app = create_app(gateway)          # the app closes the gateway when it shuts down
    web.run_app(app, host="127.0.0.1", port=8080)

A middleware gives every request an id, authenticates the tenant (except for `/health`,
`/ready` and `/metrics`, which has its own `metrics_key`) and makes sure that nothing, not even
an unknown route or a bug, answers with anything but the caller's protocol's error shape.
`listen` serves the app with the connection caps and deadlines of `connections.py`.
"""

from __future__ import annotations

import hmac
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web

from .._ids import new_id
from . import mistral, ollama, openai, tgi
from .connections import GuardedHandler, GuardedSite
from .gateway import Gateway
from .http import (
    GATEWAY_KEY,
    HEADER_REQUEST_ID,
    REQUEST_ID_KEY,
    TENANT_KEY,
    Dialect,
    error_response,
)
from .logs import log_access, log_problem
from .problems import GatewayError, Problem, problem_for
from .settings import ServerSettings

__all__ = ["RUNNER_OPTIONS", "create_app", "listen"]

# How the app must be run (`web.run_app` or `web.AppRunner`): a client that hangs up cancels its
# handler at once, which closes the upstream stream and books its cost, instead of the gateway
# noticing only at its next write (aiohttp no longer cancels handlers by default since 3.9).
RUNNER_OPTIONS: dict[str, Any] = {"handler_cancellation": True, "access_log": None}

logger = logging.getLogger("starcoder_router.server")

_OPEN_PATHS = frozenset({"/health", "/ready", "/metrics"})
_OPENAI = openai.OpenAIDialect()
_OLLAMA = ollama.OllamaDialect()
_TGI = tgi.TGIDialect()

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _dialect_for(path: str) -> Dialect:
    if path.startswith("/api/"):
        return _OLLAMA
    if path in ("/", "/generate", "/generate_stream", "/info"):
        return _TGI
    return _OPENAI


@web.middleware
async def _guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    dialect = _dialect_for(request.path)
    response = await _answer(request, handler, dialect)
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    gateway = request.app[GATEWAY_KEY]
    protocol = request.protocol
    if isinstance(protocol, GuardedHandler):
        protocol.served += 1
        if protocol.served >= gateway.settings.max_requests_per_connection:
            response.force_close()  # the client opens a new connection: no endless keep-alive
    metrics = gateway.metrics
    elapsed = time.perf_counter() - started
    metrics.child(metrics.requests, dialect.name, route, str(response.status)).inc()
    metrics.child(metrics.latency, dialect.name, route).observe(elapsed)
    if response.status >= 400:
        metrics.child(metrics.errors, f"http_{response.status}").inc()
    if gateway.settings.access_log:
        tenant = request.get(TENANT_KEY)
        log_access(request, response.status, elapsed, tenant.name if tenant else None,
                   request.get(REQUEST_ID_KEY, ""))
    return response


async def _answer(request: web.Request, handler: Handler,
                  dialect: Dialect) -> web.StreamResponse:
    request[REQUEST_ID_KEY] = rid = _request_id(request)
    try:
        _authenticate(request)
        if request.path in _OPEN_PATHS:
            return await handler(request)
        async with request.app[GATEWAY_KEY].fairness.turn(request.get(TENANT_KEY)):
            return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status)
        problem = Problem(exc.status, "invalid_request_error", code, exc.reason)
        return error_response(dialect, problem, rid)
    except Exception as exc:
        problem = problem_for(exc)
        log_problem(problem, exc, rid)
        return error_response(dialect, problem, rid)


# A caller's request id goes into our logs and answers: plain tokens only (no control or
# escape characters to forge log lines or terminal output with), else one of our own.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")


def _request_id(request: web.Request) -> str:
    given = request.headers.get(HEADER_REQUEST_ID)
    return given if given is not None and _REQUEST_ID.fullmatch(given) else new_id()


def _authenticate(request: web.Request) -> None:
    """The tenant into the request (or /metrics' key checked); 401 otherwise."""
    gateway = request.app[GATEWAY_KEY]
    if request.path in _OPEN_PATHS and request.path != "/metrics":
        return
    headers = request.headers.getall("Authorization", ())
    if len(headers) > 1:  # which one counts would depend on who reads them: none does
        raise GatewayError(Problem(401, "invalid_request_error", "invalid_api_key",
                                   "send one Authorization header"))
    authorization = headers[0] if headers else None
    if request.path == "/metrics":
        _check_metrics_key(gateway, authorization)
    else:
        request[TENANT_KEY] = gateway.tenants.authenticate(authorization)


async def _expect(request: web.Request) -> web.StreamResponse | None:
    """`Expect: 100-continue` is answered only once the caller is authenticated, so that a
    stranger is not invited to send a body; aiohttp's own handler would say 100 first (and
    echo an unknown Expect value in its 417)."""
    dialect = _dialect_for(request.path)
    rid = _request_id(request)
    try:
        _authenticate(request)
    except GatewayError as exc:
        return error_response(dialect, exc.problem, rid)
    expect = request.headers.get("Expect", "").strip().lower()
    if expect != "100-continue":
        return error_response(dialect, Problem(417, "invalid_request_error",
                                               "expectation_failed", "unknown Expect value"), rid)
    if request.version >= (1, 1):
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # as aiohttp's own handler: the answer has not started
    return None


def _check_metrics_key(gateway: Gateway, authorization: str | None) -> None:
    """401 unless `Authorization: Bearer <metrics_key>` (when a metrics key is configured)."""
    expected = gateway.settings.metrics_key
    if expected is None:
        return
    scheme, _, presented = (authorization or "").strip().partition(" ")
    ok = hmac.compare_digest(presented.strip().encode("utf-8", "surrogatepass"),
                             expected.get_secret_value().encode())
    if scheme.lower() != "bearer" or not ok:
        raise GatewayError(Problem(401, "invalid_request_error", "invalid_api_key",
                                   "/metrics needs 'Authorization: Bearer <metrics_key>'"))


async def _health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _ready(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY_KEY]
    if gateway.ready():
        return web.json_response({"status": "ready"})
    return web.json_response({"status": "no deployment can serve"}, status=503)


async def _metrics(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY_KEY]
    await gateway.refresh_gauges()
    body, content_type = gateway.metrics.render()
    response = web.Response(body=body)
    response.headers["Content-Type"] = content_type
    return response


def create_app(gateway: Gateway) -> web.Application:
    """The application serving `gateway`; it closes the gateway on shutdown."""
    app = web.Application(middlewares=[_guard],
                          client_max_size=gateway.settings.max_body_bytes)
    app[GATEWAY_KEY] = gateway
    openai.add_routes(app)
    mistral.add_routes(app)
    ollama.add_routes(app)
    tgi.add_routes(app)
    app.router.add_get("/health", _health)
    app.router.add_get("/ready", _ready)
    app.router.add_get("/metrics", _metrics)
    for route in app.router.routes():
        # aiohttp has no public way to change a route's expect handler once it is added.
        route._expect_handler = _expect

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await gateway.start()
        yield
        await gateway.aclose()

    app.cleanup_ctx.append(lifecycle)
    return app


async def listen(app: web.Application, settings: ServerSettings, *, host: str, port: int,
                 reuse_port: bool | None = None, shutdown_timeout: float | None = None,
                 ) -> web.AppRunner:
    """Serve `app` on host:port with `settings`' connection caps and deadlines; `cleanup()` the
    returned runner to stop."""
    timeout = settings.shutdown_timeout_s if shutdown_timeout is None else shutdown_timeout
    runner = web.AppRunner(app, shutdown_timeout=timeout, **RUNNER_OPTIONS)
    await runner.setup()
    try:
        await GuardedSite(runner, settings, host=host, port=port, reuse_port=reuse_port).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner
