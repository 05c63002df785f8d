"""The provider adapter base: an OpenAI-compatible `/completions` client, as pure functions.

Every StarCoder 2 host speaks some dialect of OpenAI's completions API, so the base class is that
dialect and each provider module overrides only its quirks (a different path, a body field, an
error text). We always send the raw rendered prompt to `/completions`: it is the one endpoint that
applies no template of its own, so the tokens the model sees are the tokens we counted.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar

from .._errors import BadRequestError, InvalidResponseError, ProviderError
from .._routing.catalog import Deployment
from .._routing.request import ResponseFormat
from .._secrets import Secret
from .._wire_json import loads as wire_loads
from .call import (
    Call,
    Endpoint,
    FinishReason,
    ProviderResult,
    StreamFormat,
    WireRequest,
    WireResponse,
    dumps,
    loads,
    normalize_finish,
)
from .errormap import error_from_response, extract_message
from .stops import StreamCutter, cut_at_stop, send_order
from .validate import checked, optional_str, text_or_none

__all__ = ["Provider", "SSEDecoder", "StreamDecoder", "side_request", "starcoder2_variant"]


class StreamDecoder:
    """Turns a provider's stream, line by line, into text deltas and a final result.

    Subclasses implement `read(line)` (the raw text delta of a line) and `on_event(obj)` for each
    JSON event. `feed` returns the text the caller may see: the delta with every stop enforced,
    holding back a tail that may begin one ("" or None when there is nothing to pass on);
    `finished` turns true on the provider's end-of-stream marker; `result()` raises
    `InvalidResponseError` if the stream was cut short.
    """

    __slots__ = ("call", "completion_tokens", "cutter", "finish_raw", "finished", "model",
                 "parts", "prompt_tokens", "provider", "request_id", "warnings")

    def __init__(self, provider: Provider, call: Call):
        self.provider = provider
        self.call = call
        self.parts: list[str] = []
        self.finished = False
        self.finish_raw: str | None = None
        self.prompt_tokens: int | None = None
        self.completion_tokens: int | None = None
        self.request_id: str | None = None
        self.model: str | None = None
        self.warnings: list[str] = []
        self.cutter = StreamCutter(call.rendered.stop)

    def feed(self, line: bytes) -> str | None:
        delta = self.read(line)
        return self.cutter.push(delta, end=self.finished or self.finish_raw is not None)

    def read(self, line: bytes) -> str | None:
        raise NotImplementedError

    def idle(self, line: bytes) -> bool:
        """Whether `line` would change nothing: a blank line while no event is pending. Drivers
        skip such lines without feeding them (SSE sends one after every event)."""
        return not line and not self.finished

    def on_event(self, obj: Any) -> str | None:
        raise NotImplementedError

    def stream_error(self, obj: Mapping[str, Any]) -> ProviderError:
        """An error event inside a 200 stream."""
        body = dumps(obj)
        err = obj.get("error")
        status = err.get("code") if isinstance(err, dict) else obj.get("code")
        code = status if isinstance(status, int) and status >= 400 else 500
        return self.provider.error(self.call, WireResponse(code, {}, body))

    def result(self) -> ProviderResult:
        if self.finish_raw is None and not self.finished:
            raise InvalidResponseError(
                f"{self.call.deployment.provider} stream ended before the completion finished",
                provider=self.call.deployment.provider, model=self.call.deployment.model,
                deployment=self.call.deployment.name, request_id=self.request_id,
            )
        result = ProviderResult(
            text="".join(self.parts),
            finish_reason=normalize_finish(self.finish_raw),
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            request_id=self.request_id,
            model=self.model,
            raw_finish_reason=self.finish_raw,
            warnings=self.warnings,
        )
        checked(self.call, result)
        # The same stops and quirk checks as a plain answer (a silent model swap shows in
        # streams too).
        self.provider.enforce_stops(self.call, result)
        self.provider.check(self.call, result)
        return result


class SSEDecoder(StreamDecoder):
    """Server-sent events: `data:` lines, an event per blank line, `data: [DONE]` at the end."""

    __slots__ = ("_data",)

    def __init__(self, provider: Provider, call: Call):
        super().__init__(provider, call)
        self._data: list[bytes] = []

    def idle(self, line: bytes) -> bool:
        return not line and not self._data and not self.finished

    def read(self, line: bytes) -> str | None:
        if line.startswith(b"data:"):
            payload = line[6:] if line[5:6] == b" " else line[5:]
            # Every server we know sends one JSON object per `data:` line; dispatching at once
            # saves waiting for the blank line that ends the event.
            if payload == b"[DONE]":
                self.finished = True
                return None
            if payload.startswith(b"{"):
                try:
                    obj = wire_loads(payload)
                except (ValueError, RecursionError):  # said as every unreadable reply is
                    obj = loads(payload, provider=self.call.deployment.provider,
                                what="stream event")
                return self.on_event(obj)
            self._data.append(payload)
            return None
        if not line and self._data:
            data, self._data = b"\n".join(self._data), []
            if data == b"[DONE]":
                self.finished = True
                return None
            return self.on_event(loads(data, provider=self.call.deployment.provider,
                                       what="stream event"))
        return None


class OpenAIStreamDecoder(SSEDecoder):
    """OpenAI-style completion chunks; usage may come in a last chunk with `choices: []`, on the
    chunk that carries `finish_reason`, or never."""

    __slots__ = ()

    def on_event(self, obj: Any) -> str | None:
        if not isinstance(obj, dict):
            return None
        # Newer servers nest the error; older vLLM sends it flat: {"object": "error", ...}.
        if "error" in obj or obj.get("object") == "error":
            raise self.stream_error(obj)
        if self.request_id is None:
            self.request_id = optional_str(obj.get("id"))
            self.model = optional_str(obj.get("model"))
        usage = obj.get("usage")
        if isinstance(usage, dict):
            self.prompt_tokens = usage.get("prompt_tokens", self.prompt_tokens)
            self.completion_tokens = usage.get("completion_tokens", self.completion_tokens)
        choices = obj.get("choices")
        if not choices:
            return None
        if not isinstance(choices, list) or not isinstance(choices[0], dict):
            raise self.provider.invalid(self.call, "a stream event's choices are not objects")
        choice = choices[0]
        fr = choice.get("finish_reason")
        if fr is not None:
            fr = text_or_none(self.call, fr, "finish reason")
            if fr:
                self.finish_raw = fr
        text = choice.get("text")
        if type(text) is not str:
            text = text_or_none(self.call, text, "text")
        if text is None:
            delta = choice.get("delta")
            text = text_or_none(self.call, delta.get("content"), "text") \
                if isinstance(delta, dict) else None
        if text:
            self.parts.append(text)
            return text
        return None


class Provider:
    """An OpenAI-compatible provider. Subclasses set the class attributes and override quirks.

    Instances are immutable and pure: `build` makes the request, `parse`/`stream_decoder` read
    the answer, `error` maps a failure. The router's transports do the sending.
    """

    name: ClassVar[str] = "openai-compatible"
    default_base_url: ClassVar[str] = "http://localhost:8000/v1"
    key_envs: ClassVar[tuple[str, ...]] = ()
    key_required: ClassVar[bool] = False
    local: ClassVar[bool] = True
    max_stop: ClassVar[int | None] = None
    completions_path: ClassVar[str] = "/completions"

    # -- configuration -----------------------------------------------------------------------

    @classmethod
    def key_from_env(cls, env: Mapping[str, str] | None = None) -> Secret | None:
        env = os.environ if env is None else env
        for var in cls.key_envs:
            value = env.get(var)
            if value:
                return Secret(value)
        return None

    @classmethod
    def not_ready_reason(cls, endpoint: Endpoint) -> str | None:
        """Why this provider cannot be called as configured, or None when it can."""
        if cls.key_required and not endpoint.api_key:
            names = " or ".join(cls.key_envs) or "an API key"
            return f"provider {cls.name!r} not configured: set {names}"
        return None

    # -- requests ----------------------------------------------------------------------------

    def build(self, call: Call) -> WireRequest:
        """The HTTP request for one attempt."""
        body = self.completion_body(call)
        return self.post(call, self.completions_path, body,
                         stream="sse" if call.request.stream else None)

    def completion_body(self, call: Call) -> dict[str, Any]:
        req = call.request
        body: dict[str, Any] = {
            "model": call.deployment.model,
            "prompt": call.rendered.prompt,
            "max_tokens": req.max_tokens,
            **self.sampling(call),
        }
        if req.stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        if req.response_format is not None:
            body.update(self.response_format_fields(call, req.response_format))
        if req.extra_body:
            body.update(req.extra_body)
        return body

    def sampling(self, call: Call) -> dict[str, Any]:
        """The sampling settings the caller gave (temperature, top_p, seed) and the stops, under
        their OpenAI names; unset ones are left out so the server's defaults apply."""
        req = call.request
        out: dict[str, Any] = {}
        if req.temperature is not None:
            out["temperature"] = req.temperature
        if req.top_p is not None:
            out["top_p"] = req.top_p
        if req.seed is not None:
            out["seed"] = req.seed
        stops = self.stops(call)
        if stops:
            out["stop"] = stops
        return out

    def stops(self, call: Call) -> list[str]:
        """The stops to send, cut to what the provider accepts (most important first); those
        left out are enforced on our side (`enforce_stops`, and the stream decoder)."""
        stops = list(call.rendered.stop)
        limit = call.deployment.max_stop or self.max_stop  # a measured limit wins
        if limit is None or len(stops) <= limit:
            return stops
        return send_order(stops)[:limit]

    def response_format_fields(self, call: Call, fmt: ResponseFormat) -> dict[str, Any]:
        """OpenAI's shapes: `json_object`, or `json_schema` with name and schema."""
        if fmt.type == "grammar":
            dep = call.deployment
            raise BadRequestError(f"{dep.provider} does not take GBNF grammars",
                                  provider=dep.provider, model=dep.model, deployment=dep.name)
        if fmt.type == "json_schema" and fmt.json_schema is not None:
            return {"response_format": {
                "type": "json_schema",
                "json_schema": {"name": fmt.name, "schema": fmt.json_schema, "strict": fmt.strict},
            }}
        return {"response_format": {"type": "json_object"}}

    def headers(self, call: Call, *, stream: bool) -> dict[str, str]:
        """A fresh dict (subclasses add to it) from one built per endpoint and kind."""
        endpoint = call.endpoint
        return dict(_base_headers(endpoint.api_key, endpoint.headers, stream))

    def url(self, call: Call, path: str) -> str:
        return call.endpoint.base_url.rstrip("/") + path

    def post(self, call: Call, path: str, body: Mapping[str, Any],
             stream: StreamFormat | None = None) -> WireRequest:
        return WireRequest("POST", self.url(call, path),
                           self.headers(call, stream=stream is not None), dumps(body), stream)

    # -- answers -----------------------------------------------------------------------------

    def parse(self, call: Call, response: WireResponse) -> ProviderResult:
        data = loads(response.body, provider=call.deployment.provider)
        try:
            choice = data["choices"][0]
        except (KeyError, IndexError, TypeError) as exc:
            raise self.invalid(call, f"no choices in the answer: {_preview(response.body)}") \
                from exc
        if not isinstance(choice, dict):
            raise self.invalid(call, "the answer's choice is not an object")
        text = choice.get("text")
        if text is None and isinstance(choice.get("message"), dict):
            text = choice["message"].get("content")
        if not isinstance(text, str):
            raise self.invalid(call, "the answer has no text")
        usage = data.get("usage")
        usage = usage if isinstance(usage, dict) else {}
        raw = text_or_none(call, choice.get("finish_reason"), "finish reason")
        result = ProviderResult(
            text=text,
            finish_reason=self.finish(raw),
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
            request_id=response.headers.get("x-request-id") or data.get("id"),
            model=data.get("model"),
            raw_finish_reason=raw,
        )
        checked(call, result)
        self.enforce_stops(call, result)
        self.check(call, result)
        return result

    def finish(self, raw: str | None) -> FinishReason:
        return normalize_finish(raw)

    def stream_decoder(self, call: Call) -> StreamDecoder:
        return OpenAIStreamDecoder(self, call)

    def enforce_stops(self, call: Call, result: ProviderResult) -> None:
        """Cut `result.text` at the first stop the provider let through (one it was not sent,
        or could not see); the generation then ended on a stop. Usage is left as reported."""
        text, hit = cut_at_stop(result.text, call.rendered.stop)
        if hit:
            result.text = text
            result.finish_reason = "stop"

    def check(self, call: Call, result: ProviderResult) -> None:
        """Look for quirks in an answer (e.g. a silent model swap); add `result.warnings`."""

    def error(self, call: Call, response: WireResponse) -> ProviderError:
        return error_from_response(call, response.status, response.headers, response.body)

    def invalid(self, call: Call, message: str) -> InvalidResponseError:
        dep = call.deployment
        return InvalidResponseError(f"{dep.provider}: {message}", provider=dep.provider,
                                    model=dep.model, deployment=dep.name)

    # -- optional helpers --------------------------------------------------------------------

    def probe(self, endpoint: Endpoint) -> list[WireRequest]:
        """Requests that find the StarCoder 2 models a local server serves (for discovery)."""
        return []

    def probe_more(self, endpoint: Endpoint,
                   responses: list[WireResponse | None]) -> list[WireRequest]:
        """Follow-up probes that depend on the answers so far (e.g. one per model a listing
        named); `responses` answers every probe sent until now, in order. [] when done."""
        return []

    def discovered(self, endpoint: Endpoint,
                   responses: list[WireResponse | None]) -> list[Deployment]:
        """Deployments found from the answers to `probe` and `probe_more`, in the order the
        requests were made (None where a probe failed)."""
        return []

    def probe_request(self, endpoint: Endpoint, method: str, path: str,
                      body: Mapping[str, Any] | None = None) -> WireRequest:
        """A side request to `path` under the endpoint's base URL (see `side_request`)."""
        return side_request(endpoint, method, endpoint.base_url.rstrip("/") + path, body)

    def tokenize_request(self, endpoint: Endpoint, text: str) -> WireRequest | None:
        """A request that counts `text`'s tokens on the server (`token_count` reads the
        answer); None when the provider has no way to."""
        return None

    def token_count(self, response: WireResponse) -> int:
        """The number of tokens in the answer to `tokenize_request`."""
        raise NotImplementedError(f"{self.name} cannot count tokens")

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


@functools.lru_cache(maxsize=256)
def _base_headers(key: Secret | None, extra: tuple[tuple[str, str], ...],
                  stream: bool) -> Mapping[str, str]:
    """The headers of every completion call to an endpoint: the same few on every call, so
    built once (the caller copies them)."""
    headers = {
        "content-type": "application/json",
        "accept": "text/event-stream" if stream else "application/json",
    }
    if key:
        headers["authorization"] = "Bearer " + key.reveal()
    headers.update(extra)
    return MappingProxyType(headers)


def side_request(endpoint: Endpoint, method: str, url: str,
                 body: Mapping[str, Any] | None = None) -> WireRequest:
    """A request outside any completion call (a discovery probe, `/tokenize`), with the
    endpoint's key and configured headers."""
    headers = {"accept": "application/json"}
    if body is not None:
        headers["content-type"] = "application/json"
    if endpoint.api_key:
        headers["authorization"] = "Bearer " + endpoint.api_key.reveal()
    headers.update(endpoint.headers)
    return WireRequest(method, url, headers, dumps(body) if body is not None else None)


def _preview(body: bytes) -> str:
    return extract_message(body)[0][:200]


_SIZE = re.compile(r"(?<![0-9.])(3|7|15|16)(?:\.\d+)?b(?![a-z])", re.IGNORECASE)
_VARIANT_PARAMS = ((10e9, "15b"), (5e9, "7b"), (0.0, "3b"))


def starcoder2_variant(name: str, parameters: float | None = None) -> str | None:
    """The catalog variant a served model name most likely is, for discovery.

    The size comes from the name (`starcoder2:15b-instruct-q4_K_M`, `starcoder2-3b.Q8_0.gguf`,
    `bigcode/starcoder2-7b`), else from the parameter count the server reports; "instruct" in
    the name picks the instruct model, which exists only at 15B. None when neither says.
    """
    found = _SIZE.search(name)
    size = None
    if found:
        size = "15b" if found.group(1) in ("15", "16") else found.group(1) + "b"
    elif parameters:
        size = next(label for floor, label in _VARIANT_PARAMS if parameters >= floor)
    if size is None:
        return None
    if "instruct" in name.lower():
        return "starcoder2-15b-instruct" if size == "15b" else None
    return f"starcoder2-{size}"
