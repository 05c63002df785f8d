"""llama.cpp's `llama-server`: OpenAI-compatible `/v1/completions` by default; `api="native"`
for `/completion`, and for fill-in-the-middle through `/infill`.

The base URL defaults to `http://localhost:8080`, the port llama-server used for years; its newest
README gives 9931 (host 127.0.0.1), so point `STARCODER_ROUTER_LLAMACPP_BASE_URL` or the
provider settings at your server. `--api-key` / `LLAMA_API_KEY` turns on Bearer auth; we send
`LLAMA_API_KEY` when it is set.

Quirks handled here (llama.cpp's tools/server/README.md and server sources, checked against a
real server in tests/real_servers/test_server_protocol.py):

* `/v1/completions` silently ignores `suffix`, `echo` and `response_format` in the builds we test
  (older docs say it rejects `suffix`). We never send `suffix`: FIM goes as our raw PSM prompt.
  Structured output goes as llama.cpp's own `json_schema` (a JSON object for "json_object") or
  `grammar` (GBNF), which both endpoints honour.
* `api="native"` is how a deployment asks for llama.cpp's own endpoints: `/completion` for plain
  and instruct prompts, `/infill` for FIM. `/infill` builds the FIM prompt itself from
  `input_prefix`, `input_suffix` and `input_extra` (the repository files), and cuts silently:
  the prefix to its last 3/4 of `n_batch` tokens, the suffix to its first 1/4, the extra files
  to `n_ctx - n_batch` tokens (their start is dropped), and, for models that declare no FIM
  file-separator token (StarCoder 2 GGUFs converted from the Hugging Face checkpoints), the
  file names. There is no place for a repository name. We compare the prompt the server echoes
  with what we sent and add a warning to the completion when anything was cut.
* The native stream is SSE without `[DONE]`: the last event has `stop: true`, the counts
  (`tokens_evaluated`, `tokens_predicted`) and `stop_type` (eos / word → stop, limit → length).
* Errors are `{"error": {"code", "message", "type"}}`. A prompt longer than the context is 400
  `exceed_context_size_error` with `n_prompt_tokens` and `n_ctx` (a `ContextLengthError` carrying
  both); 501 `not_supported_error` is `/infill` on a model without FIM tokens (BadRequestError);
  503 `unavailable_error` while the model loads (retryable). There is no 429: requests queue.
* The server closes the connection after every stream, even under keep-alive.
"""

from __future__ import annotations

import logging
import posixpath
from typing import Any, ClassVar

from .._errors import InvalidResponseError
from .._routing.catalog import Catalog, Deployment
from .._routing.render import FIM_MIDDLE, FIM_PREFIX, FIM_SUFFIX
from .._routing.request import ResponseFormat
from .base import Provider, SSEDecoder, StreamDecoder, starcoder2_variant
from .call import (
    Call,
    Endpoint,
    FinishReason,
    ProviderResult,
    StreamFormat,
    WireRequest,
    WireResponse,
    loads,
    normalize_finish,
)
from .errormap import error_for
from .local import json_body, local_deployment

__all__ = ["LlamaCpp"]

logger = logging.getLogger("starcoder_router")

# `<repo_name><file_sep><fim_prefix>` in the StarCoder 2 vocabulary: a server that tokenizes it
# to these ids has StarCoder 2's tokenizer, whatever its model file is called.
_STARCODER2_PROBE = "<repo_name><file_sep><fim_prefix>"
_STARCODER2_IDS = [5, 6, 1]


class LlamaCpp(Provider):
    name: ClassVar[str] = "llamacpp"
    default_base_url: ClassVar[str] = "http://localhost:8080"
    key_envs: ClassVar[tuple[str, ...]] = ("LLAMA_API_KEY",)
    local: ClassVar[bool] = True
    completions_path: ClassVar[str] = "/v1/completions"

    # -- requests ----------------------------------------------------------------------------

    def build(self, call: Call) -> WireRequest:
        if call.deployment.api != "native":
            return super().build(call)
        stream: StreamFormat | None = "sse" if call.request.stream else None
        if call.rendered.fim is not None:
            return self.post(call, "/infill", self.infill_body(call), stream)
        return self.post(call, "/completion", self.native_body(call, call.rendered.prompt), stream)

    def headers(self, call: Call, *, stream: bool) -> dict[str, str]:
        headers = super().headers(call, stream=stream)
        if stream:
            # The server closes the connection after every stream, whatever keep-alive says;
            # saying so keeps a client pool from reusing the dead connection for the next call.
            headers["connection"] = "close"
        return headers

    def response_format_fields(self, call: Call, fmt: ResponseFormat) -> dict[str, Any]:
        if fmt.type == "grammar":
            return {"grammar": fmt.grammar}
        return {"json_schema": fmt.json_schema if fmt.json_schema is not None
                else {"type": "object"}}

    def native_body(self, call: Call, prompt: str | None) -> dict[str, Any]:
        """A `/completion` body (and the options `/infill` shares)."""
        req = call.request
        body: dict[str, Any] = {"model": call.deployment.model}
        if prompt is not None:
            body["prompt"] = prompt
        body["n_predict"] = req.max_tokens
        body.update(self.sampling(call))
        body["stream"] = req.stream
        body["cache_prompt"] = True
        if req.response_format is not None:
            body.update(self.response_format_fields(call, req.response_format))
        if req.extra_body:
            body.update(req.extra_body)
        return body

    def infill_body(self, call: Call) -> dict[str, Any]:
        """An `/infill` body from the FIM parts (after our escaping and any trimming)."""
        fim = call.rendered.fim
        assert fim is not None
        body = self.native_body(call, None)
        body["input_prefix"] = _fim_prefix(call)
        body["input_suffix"] = fim.suffix
        if fim.files:
            body["input_extra"] = [{"filename": f.path, "text": f.text} for f in fim.files]
        return body

    def tokenize_request(self, endpoint: Endpoint, text: str) -> WireRequest:
        """`POST /tokenize` for `text`, special tokens parsed as the completion endpoints do;
        `token_count` reads the answer."""
        return self.probe_request(endpoint, "POST", "/tokenize",
                                  {"content": text, "add_special": False, "parse_special": True})

    def token_count(self, response: WireResponse) -> int:
        """The number of tokens in a `/tokenize` answer."""
        if response.status >= 400:
            raise error_for(response.status, response.headers, response.body, provider=self.name)
        data = loads(response.body, provider=self.name)
        tokens = data.get("tokens") if isinstance(data, dict) else None
        if not isinstance(tokens, list):
            raise InvalidResponseError(f"{self.name}: /tokenize answered without tokens",
                                       provider=self.name)
        return len(tokens)

    # -- answers -----------------------------------------------------------------------------

    def parse(self, call: Call, response: WireResponse) -> ProviderResult:
        if call.deployment.api != "native":
            return super().parse(call, response)
        data = loads(response.body, provider=call.deployment.provider)
        if not isinstance(data, dict) or not isinstance(data.get("content"), str):
            raise self.invalid(call, "the answer has no `content`")
        result = ProviderResult(
            text=data["content"],
            finish_reason=self.native_finish(data),
            prompt_tokens=data.get("tokens_evaluated"),
            completion_tokens=data.get("tokens_predicted"),
            model=data.get("model"),
            raw_finish_reason=data.get("stop_type"),
        )
        self.check_native(call, result, data)
        self.check(call, result)
        return result

    @staticmethod
    def native_finish(data: dict[str, Any]) -> FinishReason:
        return normalize_finish(data.get("stop_type"))

    def check_native(self, call: Call, result: ProviderResult, final: dict[str, Any]) -> None:
        """Warn when the server cut what we sent: `truncated`, or an `/infill` echo that lacks
        part of the prefix, suffix or files."""
        problems = []
        if final.get("truncated") is True:
            problems.append("llama.cpp truncated the prompt to fit its context")
        fim = call.rendered.fim
        echo = final.get("prompt")
        if fim is not None and isinstance(echo, str):
            problems += _infill_cuts(call, echo)
        for msg in problems:
            if msg not in result.warnings:  # idempotent, like every check
                result.warnings.append(msg)
                logger.warning("%s: %s", call.deployment.name, msg)

    def stream_decoder(self, call: Call) -> StreamDecoder:
        if call.deployment.api != "native":
            return super().stream_decoder(call)
        return NativeStreamDecoder(self, call)

    # -- discovery ---------------------------------------------------------------------------

    def probe(self, endpoint: Endpoint) -> list[WireRequest]:
        return [
            self.probe_request(endpoint, "GET", "/props"),
            self.probe_request(endpoint, "GET", "/v1/models"),
            self.tokenize_request(endpoint, _STARCODER2_PROBE),
        ]

    def discovered(self, endpoint: Endpoint,
                   responses: list[WireResponse | None]) -> list[Deployment]:
        props, models, tokens = (json_body(r) for r in [*responses, None, None, None][:3])
        entries = models.get("data") if isinstance(models, dict) else None
        if not isinstance(entries, list) or not entries:
            return []
        settings = props.get("default_generation_settings") if isinstance(props, dict) else None
        is_llama = isinstance(settings, dict)
        slot_ctx = settings.get("n_ctx") if isinstance(settings, dict) else None
        same_vocab = isinstance(tokens, dict) and tokens.get("tokens") == _STARCODER2_IDS
        variants = Catalog.default().variants
        found = []
        for entry in entries:
            if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
                continue
            if not (is_llama or entry.get("owned_by") == "llamacpp"):
                continue
            model_id: str = entry["id"]
            meta: dict[str, Any] = entry["meta"] if isinstance(entry.get("meta"), dict) else {}
            single = len(entries) == 1
            if not ("starcoder2" in model_id.lower() or (single and same_vocab)):
                continue
            variant = starcoder2_variant(posixpath.basename(model_id), meta.get("n_params"))
            window = slot_ctx if single and isinstance(slot_ctx, int) else meta.get("n_ctx")
            if variant not in variants or not isinstance(window, int) or window <= 0:
                continue
            dep = local_deployment(
                self.name, endpoint, model_id, variant, window, structured=True,
                source=f"discovered: llama-server /props and /v1/models at {endpoint.base_url}",
            )
            # The id is the -m path unless --alias names it: the file name reads better.
            found.append(dep.model_copy(
                update={"name": f"{self.name}/{posixpath.basename(model_id)}"}))
        return found


class NativeStreamDecoder(SSEDecoder):
    """`/completion` and `/infill` streams: SSE events, no `[DONE]`; the `stop: true` event ends
    the stream with the counts."""

    __slots__ = ("_final",)

    provider: LlamaCpp

    def __init__(self, provider: LlamaCpp, call: Call):
        super().__init__(provider, call)
        self._final: dict[str, Any] | None = None

    def on_event(self, obj: Any) -> str | None:
        if not isinstance(obj, dict):
            return None
        if "error" in obj:
            raise self.stream_error(obj)
        text = obj.get("content")
        if text:
            self.parts.append(text)
        if obj.get("stop") is True:
            self.finished = True
            self.finish_raw = obj.get("stop_type") or "stop"
            self.prompt_tokens = obj.get("tokens_evaluated")
            self.completion_tokens = obj.get("tokens_predicted")
            self.model = obj.get("model")
            self._final = obj
        return text or None

    def result(self) -> ProviderResult:
        result = super().result()
        if self._final is not None:
            self.provider.check_native(self.call, result, self._final)
        return result


def _fim_prefix(call: Call) -> str:
    """The prefix as our PSM prompt has it: behind the current file's path when one is given."""
    fim = call.rendered.fim
    assert fim is not None
    return f"{fim.path}\n{fim.prefix}" if fim.path else fim.prefix


def _infill_cuts(call: Call, echo: str) -> list[str]:
    """What `/infill` left out, judged from the prompt it echoes."""
    fim = call.rendered.fim
    assert fim is not None
    prefix, suffix = _fim_prefix(call), fim.suffix
    psm = f"{FIM_PREFIX}{prefix}{FIM_SUFFIX}{suffix}{FIM_MIDDLE}"
    spm = f"{FIM_SUFFIX}{suffix}{FIM_PREFIX}{prefix}{FIM_MIDDLE}"
    problems = []
    if not (echo.endswith(psm) or echo.endswith(spm)):
        problems.append("llama.cpp /infill cut the prefix or suffix to fit one batch "
                        "(it keeps at most 3/4 of n_batch tokens of prefix, 1/4 of suffix)")
    lost = [f.path for f in fim.files if f.text not in echo]
    if lost:
        problems.append(f"llama.cpp /infill dropped repository context it had no room for: "
                        f"{', '.join(lost)} (extra context gets n_ctx - n_batch tokens)")
    if fim.repo_name:
        problems.append("llama.cpp /infill has no place for a repository name; it was not sent")
    return problems
