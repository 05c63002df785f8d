"""The gateway's aiohttp application: the three protocols, health, readiness and metrics.

Example::

    gateway = Gateway.from_config("router.toml")
    app = create_app(gateway)          # the app closes the gateway when it shuts down
    web.run_app(app, host="127.0.0.1", port=8080)

A middleware gives every request an id, authenticates the tenant (except for `/health`,
`/ready` and `/metrics`) and makes sure that nothing, not even an unknown route or a bug,
answers with anything but the caller's protocol's error shape.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web

from .._ids import new_id
from . import mistral, ollama, openai, tgi
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
from .problems import Problem, problem_for

__all__ = ["RUNNER_OPTIONS", "create_app"]

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
    metrics = gateway.metrics
    elapsed = time.perf_counter() - started
    metrics.requests.labels(dialect.name, route, str(response.status)).inc()
    metrics.latency.labels(dialect.name, route).observe(elapsed)
    if response.status >= 400:
        metrics.errors.labels(f"http_{response.status}").inc()
    if gateway.settings.access_log:
        tenant = request.get(TENANT_KEY)
        log_access(request, response.status, elapsed, tenant.name if tenant else None,
                   request.get(REQUEST_ID_KEY, ""))
    return response


async def _answer(request: web.Request, handler: Handler,
                  dialect: Dialect) -> web.StreamResponse:
    rid = request.headers.get(HEADER_REQUEST_ID) or new_id()
    request[REQUEST_ID_KEY] = rid = rid[:128]
    try:
        if request.path not in _OPEN_PATHS:
            gateway = request.app[GATEWAY_KEY]
            request[TENANT_KEY] = gateway.tenants.authenticate(request.headers.get("Authorization"))
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

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await gateway.start()
        yield
        await gateway.aclose()

    app.cleanup_ctx.append(lifecycle)
    return app
