"""The HTTP side every protocol shares: reading a capped JSON body, answering a completion or
a stream, the response headers, and turning any error into the protocol's error shape.

A protocol module supplies a `Dialect` (how its bodies, stream events and errors look); this
module drives the gateway with it. Streams start only once the first chunk is there, so a
failure before any output is still an HTTP error status; the upstream stream is closed on
every path (end, error, client gone, shutdown), which books its cost.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from .._ids import new_id
from .._routing.limits import InputLimits
from .._wire_json import dumps as wire_dumps
from .autocomplete import (
    HEADER_MODE,
    HEADER_SERVED_FROM,
    HEADER_SUPERSEDED,
    with_mode,
    with_session,
)
from .fairness import TimeSlice
from .first_token import with_first_token_timeout
from .gateway import Call, Gateway
from .inputs import check_call, load_json
from .logs import log_problem
from .problems import GatewayError, Problem, invalid, problem_for
from .settings import TenantSettings
from .tenants import TokenHold

if TYPE_CHECKING:
    from .._running.results import Completion, StreamChunk

__all__ = ["Dialect", "Parsed", "handle", "json_body", "parse_body", "read_json"]

logger = logging.getLogger("starcoder_router.server")

_M = TypeVar("_M", bound=BaseModel)
DEFAULT_LIMITS = InputLimits()

GATEWAY_KEY: web.AppKey[Gateway] = web.AppKey("gateway", Gateway)
REQUEST_ID_KEY: web.RequestKey[str] = web.RequestKey("request_id", str)
TENANT_KEY: web.RequestKey[TenantSettings | None] = web.RequestKey("tenant")

HEADER_DEPLOYMENT = "x-starcoder-router-deployment"
HEADER_COST = "x-starcoder-router-cost-usd"
HEADER_ATTEMPTS = "x-starcoder-router-attempts"
HEADER_REQUEST_ID = "x-request-id"
JSON_CONTENT_TYPE = "application/json; charset=utf-8"  # what `web.json_response` sends


def json_body(payload: Any) -> bytes:
    """`payload` as compact UTF-8 JSON, with orjson where it can (`_wire_json`); what it
    refuses (a lone surrogate in a completion, say) is written by `json` as before, escaped."""
    try:
        return wire_dumps(payload)
    except (TypeError, ValueError, UnicodeEncodeError):
        return json.dumps(payload, separators=(",", ":")).encode()


class Parsed(NamedTuple):
    """A request as a dialect understood it: the gateway call and whatever the dialect needs
    to shape its answer (`meta`)."""

    call: Call
    stream: bool
    meta: Any = None


class Dialect(Protocol):
    name: str
    stream_content_type: str

    def error_body(self, problem: Problem) -> dict[str, Any] | None: ...

    def completion_body(self, completion: Completion, parsed: Parsed) -> Any: ...

    def stream_chunk(self, chunk: StreamChunk, parsed: Parsed) -> bytes: ...

    def stream_end(self, completion: Completion | None, parsed: Parsed) -> bytes: ...

    def stream_error(self, problem: Problem, parsed: Parsed) -> bytes: ...


async def read_json(request: web.Request, max_bytes: int,
                    max_depth: int = DEFAULT_LIMITS.max_json_depth) -> dict[str, Any]:
    """The body as a JSON object: 413 above `max_bytes`, 408 when it takes longer than the
    gateway's `body_timeout_s`, 415 when compressed, 400 when not a JSON object or nested
    deeper than `max_depth`."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise _too_large(max_bytes)
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding != "identity":  # the app does not inflate bodies: no decompression bombs
        raise GatewayError(Problem(415, "invalid_request_error", "unsupported_content_encoding",
                                   "compressed request bodies are not accepted"))
    content = request.content
    if content.is_eof():  # the whole body came with the headers: nothing to wait for
        data = content.read_nowait()
        if len(data) > max_bytes:
            raise _too_large(max_bytes)
        return load_json(data, max_depth)
    chunks: list[bytes] = []
    size = 0
    body_timeout_s = request.app[GATEWAY_KEY].settings.body_timeout_s
    try:
        async with asyncio.timeout(body_timeout_s):
            async for data in content.iter_any():
                size += len(data)
                if size > max_bytes:
                    raise _too_large(max_bytes)
                chunks.append(data)
    except TimeoutError:
        raise GatewayError(Problem(408, "invalid_request_error", "request_timeout",
                                   f"the request body was not received within "
                                   f"{body_timeout_s:g} s (body_timeout_s)")) from None
    return load_json(b"".join(chunks), max_depth)


def _too_large(max_bytes: int) -> GatewayError:
    return GatewayError(Problem(413, "invalid_request_error", "request_too_large",
                                f"the body is larger than {max_bytes} bytes (max_body_bytes)"))


def parse_body(model: type[_M], body: dict[str, Any]) -> _M:
    """Validate a protocol body; every problem becomes one 400 naming the fields."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        message = f"{where}: {first['msg']}" if where else first["msg"]
        raise invalid(message, param=where or None) from None


def request_id(request: web.Request) -> str:
    return request.get(REQUEST_ID_KEY) or new_id()


def error_response(dialect: Dialect, problem: Problem, rid: str) -> web.Response:
    headers = {HEADER_REQUEST_ID: rid}
    if problem.retry_after is not None:
        headers["Retry-After"] = str(max(1, round(problem.retry_after)))
    body = dialect.error_body(problem)
    response: web.Response
    if body is None:  # the protocol answers this status without a body
        response = web.Response(status=problem.status, headers=headers)
    else:
        response = web.json_response(body, status=problem.status, headers=headers)
    if problem.status in (408, 413):
        # The rest of the body was not read: the connection cannot carry another request.
        response.force_close()
    return response


def _headers(completion: Completion | None, rid: str) -> dict[str, str]:
    headers = {HEADER_REQUEST_ID: rid}
    if completion is not None:
        headers[HEADER_DEPLOYMENT] = completion.deployment.name
        headers[HEADER_COST] = f"{completion.total_cost_usd:.9f}"
        headers[HEADER_ATTEMPTS] = str(len(completion.attempts))
        if completion.mode is not None:
            headers[HEADER_MODE] = completion.mode
        headers[HEADER_SERVED_FROM] = completion.served_from
        if completion.finish_reason == "superseded":
            headers[HEADER_SUPERSEDED] = "1"
    return headers


Parser = Callable[[web.Request, dict[str, Any], Gateway], Parsed]


async def handle(request: web.Request, dialect: Dialect, parse: Parser) -> web.StreamResponse:
    """Rate-limit, parse and serve one completion request in `dialect` (the middleware has
    authenticated it)."""
    gateway = request.app[GATEWAY_KEY]
    rid = request_id(request)
    hold = None
    try:
        tenant = request.get(TENANT_KEY)
        limits = gateway.settings.limits
        body = await read_json(request, gateway.settings.max_body_bytes, limits.max_json_depth)
        await gateway.fairness.take_turn(tenant)  # parsing and routing: one tenant's at a time
        parsed = parse(request, body, gateway)
        call = parsed.call
        check_call(call, limits)
        fields = with_mode(call.fields, request, body, gateway, dialect.name)
        fields = with_first_token_timeout(fields, request.headers)
        gateway.router(call.model)  # an unknown model is a 404 before any counting
        call = call._replace(fields=fields)
        hold = await gateway.admit(tenant, call)
        # The session is the router's, not part of the prompt: added after the token hold.
        call = call._replace(tenant=tenant, request_id=rid, hold=hold,
                             fields=with_session(fields, request, gateway))
        parsed = parsed._replace(call=call)
        await gateway.fairness.take_turn(tenant)  # routing, when the admission paused
        if parsed.stream:
            return await _stream(request, gateway, dialect, parsed, rid)
        completion = await gateway.complete(call)
        headers = _headers(completion, rid)
        headers["Content-Type"] = JSON_CONTENT_TYPE
        return web.Response(body=json_body(dialect.completion_body(completion, parsed)),
                            headers=headers)
    except Exception as exc:
        return _failed(dialect, exc, rid)
    finally:
        if hold is not None:
            # This handler owns the hold: settle it even when the client is gone and the task
            # is being cancelled (shielded, so a second cancel cannot leave it held).
            await _settle(gateway, hold)


async def _settle(gateway: Gateway, hold: TokenHold) -> None:
    settling = asyncio.ensure_future(gateway.settle(hold))
    try:
        await asyncio.shield(settling)
    except asyncio.CancelledError:
        await settling
        raise
    except Exception:  # the store is down: the hold ends with its window
        logger.warning("could not settle a token hold", exc_info=True)


def _failed(dialect: Dialect, exc: Exception, rid: str) -> web.Response:
    problem = problem_for(exc)
    log_problem(problem, exc, rid)
    return error_response(dialect, problem, rid)


async def _stream(request: web.Request, gateway: Gateway, dialect: Dialect, parsed: Parsed,
                  rid: str) -> web.StreamResponse:
    call = parsed.call
    stream, chunk = await gateway.open_stream(call)
    response = web.StreamResponse(headers={
        "Content-Type": dialect.stream_content_type, "Cache-Control": "no-cache",
        HEADER_REQUEST_ID: rid,
    })
    if "mode" in call.fields:
        response.headers[HEADER_MODE] = call.fields["mode"]
    response.headers[HEADER_SERVED_FROM] = stream.served_from
    if chunk is not None and chunk.finish_reason == "superseded":
        response.headers[HEADER_SUPERSEDED] = "1"
    try:
        await response.prepare(request)
        try:
            # Buffered chunks do not wait: share the loop with other tenants between them.
            turns = TimeSlice(gateway.fairness, call.tenant)
            while chunk is not None:
                await response.write(dialect.stream_chunk(chunk, parsed))
                await turns.share()
                chunk = await gateway.next_chunk(call, stream)
            await response.write(dialect.stream_end(stream.completion, parsed))
        except OSError:
            raise
        except Exception as exc:
            # Headers are out: the error travels as the protocol's last event.
            problem = problem_for(exc)
            log_problem(problem, exc, rid)
            await response.write(dialect.stream_error(problem, parsed))
        await response.write_eof()
    except OSError:  # ConnectionResetError among them
        # The client went away: the `finally` closes the upstream stream, booking its cost.
        logger.info("request %s: client disconnected mid-stream", rid)
    finally:
        await gateway.close_stream(call, stream)
    return response
