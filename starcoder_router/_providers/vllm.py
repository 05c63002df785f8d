"""vLLM's OpenAI-compatible server, by default at localhost:8000/v1.

Quirks handled here:
* No key unless the server runs with `--api-key`; then VLLM_API_KEY (the server's own variable)
  is sent as a Bearer token. A wrong key is 401 `{"error": "Unauthorized"}`.
* `suffix` is refused with 400 "suffix is not currently supported": FIM goes as a PSM prompt,
  like everywhere else, and no `suffix` field is ever sent.
* Structured output uses OpenAI's `response_format` (`json_object`, or `json_schema` whenever
  a schema is given), not `structured_outputs`: `response_format` is the field every vLLM
  release with structured output accepts, while `structured_outputs` is the newer name that
  replaced `guided_*` (removed in v0.12), so an older server would drop it. Callers who want
  regex or choice constraints can still pass `extra_body={"structured_outputs": {...}}`.
  GBNF grammars are refused before sending.
* Errors come nested (`{"error": {"message", "type", "code"}}`) or, from older versions, flat
  (`{"object": "error", "message", ...}`), also as events inside a 200 stream. Overflow is
  "This model's maximum context length is N tokens. However, you requested M tokens (P in the
  messages, C in the completion)" or "'max_tokens' ... is too large: C. This model's maximum
  context length is N tokens and your request has P input tokens".
* Stop strings are matched against text decoded with `skip_special_tokens=True`
  (vllm/v1/engine/detokenizer.py; vLLM issues #792, #2123), so a stop such as `<file_sep>` or
  `<|endoftext|>` never fires. Stops that are StarCoder 2 special tokens therefore go as
  `stop_token_ids` (their vocabulary ids), the others as `stop`.
* `/tokenize` sits beside `/v1`, not under it, and answers `{count, max_model_len, tokens}`.
* Discovery reads `GET /v1/models`, whose entries carry `max_model_len`: the window the server
  was started with, which can be smaller than StarCoder 2's 16,384.
"""

from __future__ import annotations

from typing import Any, ClassVar

from .._errors import InvalidResponseError
from .._routing.catalog import Deployment
from .._routing.render import SPECIAL_TOKEN_IDS
from .._routing.request import ResponseFormat
from .._transports.base import WireRequest, WireResponse
from .base import Provider, side_request
from .call import Call, Endpoint, loads
from .errormap import error_for
from .local import find_variant, json_body, local_deployment, server_root

__all__ = ["VLLM"]

_NATIVE_WINDOW = 16384


class VLLM(Provider):
    name: ClassVar[str] = "vllm"
    default_base_url: ClassVar[str] = "http://localhost:8000/v1"
    key_envs: ClassVar[tuple[str, ...]] = ("VLLM_API_KEY",)
    key_required: ClassVar[bool] = False
    local: ClassVar[bool] = True

    def sampling(self, call: Call) -> dict[str, Any]:
        out = super().sampling(call)
        stops = out.pop("stop", [])
        ids = [SPECIAL_TOKEN_IDS[s] for s in stops if s in SPECIAL_TOKEN_IDS]
        text = [s for s in stops if s not in SPECIAL_TOKEN_IDS]
        if text:
            out["stop"] = text
        if ids:
            out["stop_token_ids"] = ids
        return out

    def response_format_fields(self, call: Call, fmt: ResponseFormat) -> dict[str, Any]:
        if fmt.type != "grammar" and fmt.json_schema is not None:
            # A schema given with `json_object` is enforced by the server too, not only by us.
            fmt = fmt.model_copy(update={"type": "json_schema"})
        return super().response_format_fields(call, fmt)

    # -- discovery and token counts ------------------------------------------------------------

    def probe(self, endpoint: Endpoint) -> list[WireRequest]:
        return [side_request(endpoint, "GET", endpoint.base_url.rstrip("/") + "/models")]

    def discovered(self, endpoint: Endpoint,
                   responses: list[WireResponse | None]) -> list[Deployment]:
        data = json_body(responses[0] if responses else None)
        models = data.get("data") if isinstance(data, dict) else None
        found: list[Deployment] = []
        for entry in models if isinstance(models, list) else ():
            if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
                continue
            # `id` may be a --served-model-name alias; `root` is the path the model came from.
            variant = find_variant(entry["id"], entry.get("root"))
            if variant is None:
                continue
            window = entry.get("max_model_len")
            found.append(local_deployment(
                self.name, endpoint, entry["id"], variant,
                window if isinstance(window, int) and window > 0 else _NATIVE_WINDOW,
                structured=True, source=f"discovered: {endpoint.base_url}/models",
            ))
        return found

    def tokenize_request(self, endpoint: Endpoint, text: str) -> WireRequest:
        # `model` may be left out: the server tokenizes with the model it serves.
        return side_request(endpoint, "POST", server_root(endpoint.base_url) + "/tokenize",
                            {"prompt": text})

    def token_count(self, response: WireResponse) -> int:
        if response.status >= 400:
            raise error_for(response.status, response.headers, response.body, provider=self.name)
        data = loads(response.body, provider=self.name)
        count = data.get("count") if isinstance(data, dict) else None
        if not isinstance(count, int):
            raise InvalidResponseError(f"{self.name}: /tokenize answered without a count",
                                       provider=self.name)
        return count
