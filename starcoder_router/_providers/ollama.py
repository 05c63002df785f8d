"""Ollama: the native `POST /api/generate` by default; `/v1/completions` with `api="openai"`.

Quirks handled here (ollama/ollama docs/api.md and its server sources):

* **Silent truncation.** Ollama's default context is small (2,048 tokens, then 4,096, now tiered
  by VRAM) and an over-long prompt loses a block after its first `num_keep` tokens, with only a
  server log line to show for it. So every native request sends `options.num_ctx` = the
  deployment's window, plus `truncate: false` and `shift: false`: servers that know those fields
  answer an over-long prompt with an error (a `ContextLengthError`, so the router learns the
  window and moves on) and stop at the window instead of dropping the prompt's start to keep
  generating. Older servers ignore both fields, so every reply is also checked; see
  `truncation_warning`.
* **Raw prompts only.** We render FIM and instruct prompts ourselves and always send `raw: true`,
  so no Modelfile template wraps them. We never send `suffix`: it needs a template with
  `.Suffix` (else 400 "does not support insert"), and an empty one silently disables FIM.
* **Streaming is the default** of `/api/generate`, so a plain request sends `stream: false`.
  Streams are NDJSON; only the final `done: true` line has `prompt_eval_count` / `eval_count`
  and `done_reason`, and an error can arrive as an `{"error": ...}` line inside a 200 stream.
* **Structured output** is `format`: `"json"`, or the JSON schema itself. No GBNF grammars.
* **`api="openai"`** (`/v1/completions`) cannot set `num_ctx` (only a Modelfile
  `PARAMETER num_ctx` or `OLLAMA_CONTEXT_LENGTH` can), applies the model's template (there is no
  raw mode there), forces `temperature` and `top_p` to 1.0 when they are omitted, and takes no
  `response_format`. Use it only where the native API is unavailable.
* **Errors** are `{"error": "..."}`: 404 `model "x" not found, try pulling it first`, 400
  `... does not support insert`, 400 "the prompt is longer than the context length ..." or "the
  input length exceeds the context length", 503 "server busy, please try again" (queue full,
  retryable). Some paths report a failure without its status (500, or an error line with no
  `status`); a context overflow is recognised by its text there too.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from .._errors import BadRequestError, ProviderError
from .._routing.catalog import Catalog, Deployment
from .._routing.request import ResponseFormat
from .base import Provider, StreamDecoder, starcoder2_variant
from .call import (
    Call,
    Endpoint,
    FinishReason,
    ProviderResult,
    WireRequest,
    WireResponse,
    dumps,
    loads,
    normalize_finish,
)
from .errormap import error_from_response, extract_message, is_context_overflow
from .local import json_body, local_deployment

__all__ = ["Ollama", "truncation_warning"]

logger = logging.getLogger("starcoder_router")

# Ollama keeps this many tokens from the prompt's start when it truncates (`num_keep` default).
_NUM_KEEP = 4


class Ollama(Provider):
    name: ClassVar[str] = "ollama"
    default_base_url: ClassVar[str] = "http://localhost:11434"
    local: ClassVar[bool] = True
    completions_path: ClassVar[str] = "/v1/completions"

    # -- requests ----------------------------------------------------------------------------

    def build(self, call: Call) -> WireRequest:
        if call.deployment.api == "openai":
            return super().build(call)
        stream = call.request.stream
        headers = self.headers(call, stream=False)
        if stream:
            headers["accept"] = "application/x-ndjson"
        return WireRequest("POST", self.url(call, "/api/generate"), headers,
                           dumps(self.generate_body(call)), "ndjson" if stream else None)

    def generate_body(self, call: Call) -> dict[str, Any]:
        """The `/api/generate` body: our rendered prompt, raw, with the window always set."""
        req = call.request
        options: dict[str, Any] = {
            "num_ctx": call.deployment.context_window,
            "num_predict": req.max_tokens,
            **self.sampling(call),
        }
        body: dict[str, Any] = {
            "model": call.deployment.model,
            "prompt": call.rendered.prompt,
            "raw": True,
            "stream": req.stream,
            "truncate": False,
            "shift": False,
            "options": options,
        }
        if req.response_format is not None:
            body["format"] = self._format(call, req.response_format)
        if req.extra_body:
            body.update(req.extra_body)
        return body

    def _format(self, call: Call, fmt: ResponseFormat) -> Any:
        if fmt.type == "grammar":
            raise self._refuse(call, "ollama does not take GBNF grammars")
        if fmt.json_schema is not None:
            return fmt.json_schema
        return "json"

    def response_format_fields(self, call: Call, fmt: ResponseFormat) -> dict[str, Any]:
        raise self._refuse(call, "ollama's /v1/completions takes no response_format; use the "
                                 "native API (the deployment's default)")

    def _refuse(self, call: Call, message: str) -> BadRequestError:
        dep = call.deployment
        return BadRequestError(message, provider=dep.provider, model=dep.model,
                               deployment=dep.name)

    # -- answers -----------------------------------------------------------------------------

    def parse(self, call: Call, response: WireResponse) -> ProviderResult:
        if call.deployment.api == "openai":
            return super().parse(call, response)
        data = loads(response.body, provider=call.deployment.provider)
        if not isinstance(data, dict):
            raise self.invalid(call, "the answer is not a JSON object")
        if "error" in data:
            raise self.line_error(call, data)
        text = data.get("response")
        if not isinstance(text, str) or data.get("done") is not True:
            raise self.invalid(call, "the answer has no finished `response`")
        raw, finish = self.finish_of(call, data)
        result = ProviderResult(
            text=text,
            finish_reason=finish,
            prompt_tokens=data.get("prompt_eval_count"),
            completion_tokens=data.get("eval_count"),
            request_id=response.headers.get("x-request-id"),
            model=data.get("model"),
            raw_finish_reason=raw,
        )
        self.check(call, result)
        return result

    def finish_of(self, call: Call, final: dict[str, Any]) -> tuple[str | None, FinishReason]:
        """`done_reason`; servers too old to send it stopped at the limit when they generated
        `num_predict` tokens."""
        raw = final.get("done_reason")
        if raw is None and final.get("eval_count") == call.request.max_tokens:
            return None, "length"
        return raw, normalize_finish(raw)

    def stream_decoder(self, call: Call) -> StreamDecoder:
        if call.deployment.api == "openai":
            return super().stream_decoder(call)
        return OllamaStreamDecoder(self, call)

    def check(self, call: Call, result: ProviderResult) -> None:
        num_ctx = None if call.deployment.api == "openai" else call.deployment.context_window
        msg = truncation_warning(call, result.prompt_tokens, num_ctx=num_ctx)
        if msg and msg not in result.warnings:  # idempotent: streams may be checked twice
            result.warnings.append(msg)
            logger.warning("%s: %s", call.deployment.name, msg)

    def error(self, call: Call, response: WireResponse) -> ProviderError:
        message, fields = extract_message(response.body)
        if response.status >= 500 and is_context_overflow(message, fields):
            # The status was lost on the way (see the module docstring); the text is clear.
            err = error_from_response(call, 400, response.headers, response.body)
            return _restated(err, response.status, f"ollama answered {response.status}")
        return error_from_response(call, response.status, response.headers, response.body)

    def line_error(self, call: Call, obj: dict[str, Any]) -> ProviderError:
        """An `{"error": ...}` object in a 200 answer or stream, with its `status` when given;
        without one, the class follows the text and `status_code` stays None."""
        message = str(obj.get("error"))
        status = obj.get("status")
        body = dumps({"error": message})
        if isinstance(status, int) and status >= 400:
            return self.error(call, WireResponse(status, {}, body))
        err = self.error(call, WireResponse(_status_of(message), {}, body))
        return _restated(err, None, "ollama reported an error in a 200 answer")

    # -- discovery ---------------------------------------------------------------------------

    def probe(self, endpoint: Endpoint) -> list[WireRequest]:
        return [self.probe_request(endpoint, "GET", "/api/tags")]

    def probe_more(self, endpoint: Endpoint,
                   responses: list[WireResponse | None]) -> list[WireRequest]:
        if len(responses) != 1:
            return []
        return [self.probe_request(endpoint, "POST", "/api/show", {"model": name})
                for name, _ in _starcoder2_models(responses[0])]

    def discovered(self, endpoint: Endpoint,
                   responses: list[WireResponse | None]) -> list[Deployment]:
        models = _starcoder2_models(responses[0] if responses else None)
        found: list[Deployment] = []
        variants = Catalog.default().variants
        for (name, details), show in zip(models, responses[1:], strict=False):
            info = json_body(show)
            if not isinstance(info, dict):
                continue
            capabilities = info.get("capabilities")
            if isinstance(capabilities, list) and "completion" not in capabilities:
                continue
            variant = starcoder2_variant(name, _parameter_count(details))
            if variant is None or variant not in variants:
                continue
            window = _context_length(info) or variants[variant].context_window
            found.append(local_deployment(
                self.name, endpoint, name, variant, window, structured=True,
                source=f"discovered: ollama /api/show at {endpoint.base_url}",
            ))
        return found


class OllamaStreamDecoder(StreamDecoder):
    """`/api/generate` NDJSON: one object per line, counts and `done_reason` on the `done` one."""

    __slots__ = ()

    provider: Ollama

    def feed(self, line: bytes) -> str | None:
        line = line.strip()
        if not line:
            return None
        return self.on_event(loads(line, provider=self.call.deployment.provider,
                                   what="stream line"))

    def on_event(self, obj: Any) -> str | None:
        if not isinstance(obj, dict):
            return None
        if "error" in obj:
            raise self.provider.line_error(self.call, obj)
        if self.model is None:
            self.model = obj.get("model")
        text = obj.get("response")
        if text:
            self.parts.append(text)
        if obj.get("done") is True:
            self.finished = True
            self.finish_raw, finish = self.provider.finish_of(self.call, obj)
            if self.finish_raw is None:
                self.finish_raw = finish
            self.prompt_tokens = obj.get("prompt_eval_count")
            self.completion_tokens = obj.get("eval_count")
        return text or None

    def result(self) -> ProviderResult:
        result = super().result()
        self.provider.check(self.call, result)
        return result


def truncation_warning(call: Call, evaluated: int | None, *, num_ctx: int | None) -> str | None:
    """What to warn about when Ollama evaluated fewer prompt tokens than it was sent.

    Ollama's `prompt_eval_count` is the number of prompt tokens the runner kept, after any
    truncation and before prompt-cache reuse (runner.go `numPromptInputs`), so a shortfall means
    the prompt was cut. Our own count is only sometimes exact, so there are three tests, each of
    which holds without trusting an inexact count:

    1. The count is exact and the server evaluated clearly fewer tokens: more than 1% short,
       which leaves room for small tokenizer differences between old GGUF conversions and the
       Hugging Face tokenizer. A byte bound or an estimate is never used this way: a bound is
       typically three times the true count, and an estimate is meant to over-count.
    2. The server evaluated the whole `num_ctx` we sent (or more). The router only sends a
       prompt whose count plus `max_tokens` fits the window, so a full window means our count
       was wrong and the prompt was cut to the window (what Ollama's runners do), or at best left
       no room to generate.
    3. The server evaluated exactly `num_keep + (num_ctx - num_keep) // 2` tokens while our
       (exact or upper-bound) count is higher: the half-window cut of runners built on
       llama-server's context shift (e.g. 2,050 of a 4,096 window, with `num_keep` 4).

    Not detectable: a cut to a window smaller than `num_ctx` (a server that caps `num_ctx` at the
    model's trained length) when our count is not exact, and a cut under 1% of an exact count
    that misses both signatures. With `api="openai"` (`num_ctx=None`) only test 1 applies.
    """
    sent = call.prompt_tokens
    if evaluated is None or sent is None:
        return None
    if call.prompt_count_kind == "exact" and evaluated < sent - sent // 100:
        return (f"ollama evaluated {evaluated} of the prompt's {sent} tokens: the server "
                "truncated the prompt (its context is smaller than the deployment's window)")
    if num_ctx is None:
        return None
    if evaluated >= num_ctx:
        return (f"ollama evaluated {evaluated} prompt tokens, the whole num_ctx window of "
                f"{num_ctx}: the prompt was truncated or leaves no room to generate (our count "
                f"was {sent}, {call.prompt_count_kind or 'kind unknown'})")
    half = _NUM_KEEP + (num_ctx - _NUM_KEEP) // 2
    if evaluated == half and sent > evaluated:
        return (f"ollama evaluated exactly {evaluated} prompt tokens, the half-window a "
                f"context-shifting server keeps of num_ctx {num_ctx}: the prompt was probably "
                "truncated")
    return None


def _restated(err: ProviderError, status: int | None, head: str) -> ProviderError:
    """`err` with the status the server really sent, and a message that says so."""
    err.status_code = status
    err.message = f"{head}: {err.provider_message}"
    err.args = (err.message,)
    return err


def _status_of(message: str) -> int:
    """The status an error with no status would have had, from its text."""
    text = message.lower()
    if is_context_overflow(message, {}) or "does not support" in text:
        return 400
    if "not found" in text:
        return 404
    if "server busy" in text or "maximum pending requests" in text:
        return 503
    return 500


def _starcoder2_models(tags: WireResponse | None) -> list[tuple[str, dict[str, Any]]]:
    """(name, details) of each StarCoder 2 model that `/api/tags` lists, in its order."""
    data = json_body(tags)
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, list):
        return []
    found: list[tuple[str, dict[str, Any]]] = []
    for m in models:
        if not isinstance(m, dict):
            continue
        name = m.get("model") or m.get("name")
        details: dict[str, Any] = m["details"] if isinstance(m.get("details"), dict) else {}
        if not isinstance(name, str):
            continue
        families = [details.get("family"), *(details.get("families") or [])]
        if "starcoder2" in families or "starcoder2" in name.lower():
            found.append((name, details))
    return found


def _parameter_count(details: dict[str, Any]) -> float | None:
    """`parameter_size` such as "3B", "16B" or "7.2B" as a number."""
    size = str(details.get("parameter_size") or "").strip().upper()
    scale = {"B": 1e9, "M": 1e6}.get(size[-1:])
    try:
        return float(size[:-1]) * scale if scale else None
    except ValueError:
        return None


def _context_length(info: dict[str, Any]) -> int | None:
    """`model_info["<architecture>.context_length"]` from `/api/show`."""
    model_info = info.get("model_info")
    if not isinstance(model_info, dict):
        return None
    arch = model_info.get("general.architecture")
    value = model_info.get(f"{arch}.context_length")
    if not isinstance(value, int):
        value = next((v for k, v in model_info.items()
                      if k.endswith(".context_length") and isinstance(v, int)), None)
    return value if isinstance(value, int) and value > 0 else None
