"""Hugging Face Text Generation Inference (TGI), by default at localhost:8080.

Two APIs on one server: OpenAI-compatible `/v1/completions` (the default) and the native
`/generate` + `/generate_stream`, chosen with `Deployment(api="native")`.

Quirks handled here (router/src/server.rs, validation.rs):
* `/v1/completions` builds its generation with `grammar: None`, so it cannot constrain output.
  Structured requests therefore always go to the native API with `parameters.grammar`
  `{"type": "json", "value": schema}`. Since 2.3 TGI refuses (422) a JSON grammar without
  top-level `properties`, and an empty `properties` only ever yields `{}`, so `json_object`
  without a schema goes as `{"type": "regex", "value": JSON_OBJECT_REGEX}`: any JSON object
  nested up to three levels deep. TGI takes JSON schemas and regexes, not GBNF grammars, which
  are refused before sending.
* In `/v1` requests a `model` other than "tgi" is taken as a LoRA adapter id, so we send "tgi".
* At most 4 stop sequences (the launcher's `--max-stop-sequences` default): the caller's first.
* `top_p` must be below 1.0 and, natively, `temperature` above 0: `top_p=1` (no nucleus cut)
  and `temperature=0` (greedy, TGI's native default) are expressed by leaving them out.
* `suffix` is a 422, so FIM goes as a PSM prompt. Usage always ends a `/v1` stream, so
  `stream_options` is not sent.
* Finish reasons are `eos_token`, `stop_sequence` and `length` (`/v1` non-stream answers say
  `stop` for `eos_token`); all map to stop / length. TGI keeps a matched stop sequence in the
  text, and a `/v1` stream's last chunk carries the special token that ended it
  (`<|endoftext|>`, `<file_sep>`): both are removed. A stop sequence that spans several tokens
  can still show in part at the end of a stream.
* Errors are `{"error": "...", "error_type": "..."}`, also as events inside a 200 stream; a
  `/v1/completions` stream nests them as `{"error": {"message", "http_status_code"}}` and is
  mapped by that status (router/src/server.rs). 422
  "`inputs` tokens + `max_new_tokens` must be <= N" and "`inputs` must have less than N
  tokens" are context overflows; 424 (generation failed) and 500 are server errors; 429 "Model
  is overloaded" means more than `max_concurrent_requests`. A wrong key is 401, empty body.
* The key check (`--api-key`, read by the server from `API_KEY`) is optional. We do not read
  `API_KEY` from the caller's environment: the name is too generic to send to a server unasked.
  Configure it with `providers={"tgi": {"api_key_env": "API_KEY"}}` (or `api_key=...`).
* `/info` (`max_input_tokens`, `max_total_tokens`) drives discovery; `/tokenize` counts tokens.
  Both sit at the server root, beside `/v1`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from .._errors import (
    BadRequestError,
    ContextLengthError,
    InvalidResponseError,
    ProviderError,
    ProviderServerError,
)
from .._routing.catalog import Deployment
from .._routing.render import SPECIAL_TOKENS
from .._routing.request import ResponseFormat
from .base import OpenAIStreamDecoder, Provider, SSEDecoder, StreamDecoder, side_request
from .call import (
    Call,
    Endpoint,
    ProviderResult,
    StreamFormat,
    WireRequest,
    WireResponse,
    dumps,
    loads,
)
from .errormap import error_for
from .local import find_variant, json_body, local_deployment, server_root
from .validate import checked, text_or_none

__all__ = ["JSON_OBJECT_REGEX", "TGI"]

# `error_type` of an error event inside a stream → the status TGI gives the same error.
_STREAM_ERROR_STATUS = {"validation": 422, "overloaded": 429, "generation": 424,
                        "incomplete_generation": 500}
def _json_regex(depth: int) -> str:
    """A regex for any JSON object nested up to `depth` levels (plain groups only: TGI compiles
    regex grammars with outlines, whose parser takes a subset of Python's syntax)."""
    ws = r"[ \t\n]*"
    string = r'"([^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*"'
    number = r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?"
    value = f"({string}|{number}|true|false|null)"
    obj = ""
    for _ in range(depth):
        member = f"{string}{ws}:{ws}{value}"
        obj = rf"\{{{ws}({member}({ws},{ws}{member})*)?{ws}\}}"
        array = rf"\[{ws}({value}({ws},{ws}{value})*)?{ws}\]"
        value = f"({string}|{number}|true|false|null|{obj}|{array})"
    return obj


JSON_OBJECT_REGEX = _json_regex(3)
_INPUT_LIMIT = ("`inputs` must have less than ", " tokens. Given: ")
_MAX_NEW_TOKENS = "`max_new_tokens` must be <="


class TGI(Provider):
    name: ClassVar[str] = "tgi"
    default_base_url: ClassVar[str] = "http://localhost:8080/v1"
    key_envs: ClassVar[tuple[str, ...]] = ()
    key_required: ClassVar[bool] = False
    local: ClassVar[bool] = True
    max_stop: ClassVar[int | None] = 4

    # -- requests ------------------------------------------------------------------------------

    def build(self, call: Call) -> WireRequest:
        stream: StreamFormat | None = "sse" if call.request.stream else None
        if not _native(call):
            return self.post(call, self.completions_path, self.completion_body(call), stream)
        path = "/generate_stream" if call.request.stream else "/generate"
        return WireRequest("POST", server_root(call.endpoint.base_url) + path,
                           self.headers(call, stream=stream is not None),
                           dumps(self.native_body(call)), stream)

    def completion_body(self, call: Call) -> dict[str, Any]:
        req = call.request
        body: dict[str, Any] = {"model": "tgi", "prompt": call.rendered.prompt,
                                "max_tokens": req.max_tokens}
        if req.temperature is not None:
            body["temperature"] = req.temperature  # /v1 turns 0 into greedy itself
        if req.top_p is not None and req.top_p < 1:
            body["top_p"] = req.top_p
        if stops := self.stops(call):
            body["stop"] = stops
        if req.seed is not None:
            body["seed"] = req.seed
        if req.stream:
            body["stream"] = True
        body.update(req.extra_body or {})
        return body

    def native_body(self, call: Call) -> dict[str, Any]:
        """`{"inputs", "parameters"}` for `/generate`; `extra_body` goes into `parameters`."""
        req = call.request
        params: dict[str, Any] = {"max_new_tokens": req.max_tokens, "details": True}
        if req.temperature:
            params["temperature"] = req.temperature
        if req.top_p is not None and req.top_p < 1:
            params["top_p"] = req.top_p
        if stops := self.stops(call):
            params["stop"] = stops
        if req.seed is not None:
            params["seed"] = req.seed
        if req.response_format is not None:
            params.update(self.response_format_fields(call, req.response_format))
        params.update(req.extra_body or {})
        return {"inputs": call.rendered.prompt, "parameters": params}

    def response_format_fields(self, call: Call, fmt: ResponseFormat) -> dict[str, Any]:
        if fmt.type == "grammar":
            dep = call.deployment
            raise BadRequestError("tgi takes JSON schemas and regexes, not GBNF grammars",
                                  provider=dep.provider, model=dep.model, deployment=dep.name)
        if fmt.json_schema is None:
            return {"grammar": {"type": "regex", "value": JSON_OBJECT_REGEX}}
        return {"grammar": {"type": "json", "value": fmt.json_schema}}

    # -- answers -------------------------------------------------------------------------------

    def parse(self, call: Call, response: WireResponse) -> ProviderResult:
        if not _native(call):
            result = super().parse(call, response)
            result.text = _strip_stop(result.text, result.raw_finish_reason, call)
            return result
        data = loads(response.body, provider=self.name)
        text = data.get("generated_text") if isinstance(data, dict) else None
        if not isinstance(text, str):
            raise self.invalid(call, "the answer has no generated_text")
        details = data.get("details")
        details = details if isinstance(details, dict) else {}
        raw = text_or_none(call, details.get("finish_reason"), "finish_reason")
        prompt = response.headers.get("x-prompt-tokens")
        result = ProviderResult(
            text=_strip_stop(text, raw, call),
            finish_reason=self.finish(raw),
            prompt_tokens=int(prompt) if prompt and prompt.isdigit() else None,
            completion_tokens=details.get("generated_tokens"),
            request_id=response.headers.get("x-request-id"),
            raw_finish_reason=raw,
        )
        checked(call, result)
        self.enforce_stops(call, result)
        self.check(call, result)
        return result

    def stream_decoder(self, call: Call) -> StreamDecoder:
        return _NativeDecoder(self, call) if _native(call) else _OpenAIDecoder(self, call)

    def error(self, call: Call, response: WireResponse) -> ProviderError:
        err = super().error(call, response)
        message = err.provider_message or ""
        if response.status == 424:
            return _as(ProviderServerError, err)
        if _MAX_NEW_TOKENS in message and "`inputs` tokens + " not in message:
            # Only without a fast tokenizer: the limit is on max_tokens, not the window.
            return _as(BadRequestError, err)
        if _INPUT_LIMIT[0] in message:
            window, _, given = message.split(_INPUT_LIMIT[0], 1)[1].partition(_INPUT_LIMIT[1])
            return _as(ContextLengthError, err, context_window=_int(window),
                       prompt_tokens=_int(given))
        return err

    # -- discovery and token counts ------------------------------------------------------------

    def probe(self, endpoint: Endpoint) -> list[WireRequest]:
        return [side_request(endpoint, "GET", server_root(endpoint.base_url) + "/info")]

    def discovered(self, endpoint: Endpoint,
                   responses: list[WireResponse | None]) -> list[Deployment]:
        info = json_body(responses[0] if responses else None)
        if not isinstance(info, dict) or not isinstance(info.get("model_id"), str):
            return []
        variant = find_variant(info["model_id"])
        total = info.get("max_total_tokens")
        if variant is None or not isinstance(total, int):
            return []
        # Older TGI says max_input_length. A prompt must stay within max_input_tokens and prompt
        # + max_tokens within max_total_tokens: a window of min(total, input + 1) keeps both.
        max_input = info.get("max_input_tokens", info.get("max_input_length"))
        window = min(total, max_input + 1) if isinstance(max_input, int) else total
        return [local_deployment(self.name, endpoint, info["model_id"], variant, window,
                                 structured=True,
                                 source=f"discovered: {server_root(endpoint.base_url)}/info")]

    def tokenize_request(self, endpoint: Endpoint, text: str) -> WireRequest:
        return side_request(endpoint, "POST", server_root(endpoint.base_url) + "/tokenize",
                            {"inputs": text})

    def token_count(self, response: WireResponse) -> int:
        if response.status >= 400:
            raise error_for(response.status, response.headers, response.body, provider=self.name)
        tokens = loads(response.body, provider=self.name)
        if not isinstance(tokens, list):
            raise InvalidResponseError(f"{self.name}: /tokenize answered without a token list",
                                       provider=self.name)
        return len(tokens)


def _native(call: Call) -> bool:
    return call.deployment.api == "native" or call.request.response_format is not None


def _strip_stop(text: str, raw_finish: str | None, call: Call) -> str:
    if raw_finish == "stop_sequence":
        for stop in call.rendered.stop:
            if text.endswith(stop):
                return text[: -len(stop)]
    return text


def _stream_error(decoder: StreamDecoder, obj: Any) -> ProviderError:
    err = obj.get("error")
    nested = err.get("http_status_code") if isinstance(err, dict) else None
    if isinstance(nested, int) and nested >= 400:
        status = nested
    else:
        status = _STREAM_ERROR_STATUS.get(str(obj.get("error_type")), 500)
    return decoder.provider.error(decoder.call, WireResponse(status, {}, dumps(obj)))


def _as(cls: type[ProviderError], err: ProviderError, **extra: Any) -> ProviderError:
    return cls(err.message, provider=err.provider, model=err.model, deployment=err.deployment,
               status_code=err.status_code, request_id=err.request_id,
               provider_message=err.provider_message, **extra)


def _int(text: str) -> int | None:
    digits = text.strip().rstrip(".")
    return int(digits) if digits.isdigit() else None


class _OpenAIDecoder(OpenAIStreamDecoder):
    """`/v1/completions` chunks; the last one carries usage and the token that ended it."""

    __slots__ = ()

    def on_event(self, obj: Any) -> str | None:
        choices = obj.get("choices") if isinstance(obj, dict) else None
        if choices and isinstance(choices[0], dict) and choices[0].get("finish_reason"):
            last = choices[0].get("text")
            if last in SPECIAL_TOKENS or last in self.call.rendered.stop:
                obj = {**obj, "choices": [{**choices[0], "text": ""}]}
        return super().on_event(obj)

    def stream_error(self, obj: Any) -> ProviderError:
        return _stream_error(self, obj)


class _NativeDecoder(SSEDecoder):
    """`/generate_stream` events: a token each, `details` on the last; no `[DONE]`."""

    __slots__ = ()

    def on_event(self, obj: Any) -> str | None:
        if not isinstance(obj, dict):
            return None
        if "error" in obj:
            raise self.stream_error(obj)
        token = obj.get("token")
        token = token if isinstance(token, dict) else {}
        text = text_or_none(self.call, token.get("text"), "token text") \
            if not token.get("special") else None
        details = obj.get("details")
        if isinstance(details, dict):
            self.finish_raw = text_or_none(self.call, details.get("finish_reason"),
                                           "finish_reason")
            self.completion_tokens = details.get("generated_tokens")
            self.prompt_tokens = details.get("input_length")
            self.finished = True
            if self.finish_raw == "stop_sequence" and text in self.call.rendered.stop:
                text = None
        if text:
            self.parts.append(text)
            return str(text)
        return None

    def stream_error(self, obj: Any) -> ProviderError:
        return _stream_error(self, obj)
