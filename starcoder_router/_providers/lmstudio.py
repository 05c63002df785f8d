"""LM Studio's OpenAI-compatible server, by default at localhost:1234/v1.

Quirks handled here:
* No key unless "Require Authentication" is on; then LM_API_TOKEN (the name LM Studio's docs
  use) is sent as a Bearer token.
* Structured output takes only `json_schema`; `json_object` is reported as unsupported. A plain
  JSON request therefore goes as the most permissive schema, `{"type": "object"}`, which asks
  for exactly what `json_object` means. GBNF grammars are refused before sending.
* FIM goes as a PSM prompt (the backend is llama.cpp; a `suffix` field is not documented).
* Discovery prefers the native `/api/v0/models`, which reports `max_context_length`, `arch` and
  `state` (loaded or not), and falls back to `/v1/models`, which has ids only (the window is
  then StarCoder 2's 16,384). Loaded models are listed; when none is, every StarCoder 2 model
  is, since LM Studio loads a model on its first request unless just-in-time loading is off.
  `max_context_length` is the model's maximum: LM Studio may load it with a smaller window, which
  the router learns from the first overflow error.
"""

from __future__ import annotations

from typing import Any, ClassVar

from .._routing.catalog import Deployment
from .._routing.request import ResponseFormat
from .._transports.base import WireRequest, WireResponse
from .base import Provider, side_request
from .call import Call, Endpoint
from .local import find_variant, json_body, local_deployment, server_root

__all__ = ["LMStudio"]

_NATIVE_WINDOW = 16384


class LMStudio(Provider):
    name: ClassVar[str] = "lmstudio"
    default_base_url: ClassVar[str] = "http://localhost:1234/v1"
    key_envs: ClassVar[tuple[str, ...]] = ("LM_API_TOKEN",)
    key_required: ClassVar[bool] = False
    local: ClassVar[bool] = True

    def response_format_fields(self, call: Call, fmt: ResponseFormat) -> dict[str, Any]:
        if fmt.type == "grammar":
            return super().response_format_fields(call, fmt)  # refuses grammars
        schema = fmt.json_schema or {"type": "object"}
        return super().response_format_fields(
            call, fmt.model_copy(update={"type": "json_schema", "json_schema": schema}))

    def probe(self, endpoint: Endpoint) -> list[WireRequest]:
        return [side_request(endpoint, "GET", server_root(endpoint.base_url) + "/api/v0/models"),
                side_request(endpoint, "GET", endpoint.base_url.rstrip("/") + "/models")]

    def discovered(self, endpoint: Endpoint,
                   responses: list[WireResponse | None]) -> list[Deployment]:
        native = _entries(json_body(responses[0] if responses else None))
        if native is not None:
            return self._from_native(endpoint, native)
        found = []
        for entry in _entries(json_body(responses[1] if len(responses) > 1 else None)) or []:
            variant = find_variant(entry["id"])
            if variant is not None:
                found.append(local_deployment(
                    self.name, endpoint, entry["id"], variant, _NATIVE_WINDOW, structured=True,
                    source=f"discovered: {endpoint.base_url}/models"))
        return found

    def _from_native(self, endpoint: Endpoint, entries: list[dict[str, Any]]) -> list[Deployment]:
        ours: list[tuple[dict[str, Any], str]] = []
        for entry in entries:
            if entry.get("type", "llm") not in ("llm", "vlm"):
                continue  # embedding models
            family_known = entry.get("arch") == "starcoder2"
            variant = find_variant(entry["id"], family_known=family_known)
            if variant is not None:
                ours.append((entry, variant))
        loaded = [(e, v) for e, v in ours if e.get("state") == "loaded"]
        source = f"discovered: {server_root(endpoint.base_url)}/api/v0/models"
        found = []
        for entry, variant in loaded or ours:
            window = entry.get("max_context_length")
            found.append(local_deployment(
                self.name, endpoint, entry["id"], variant,
                window if isinstance(window, int) and window > 0 else _NATIVE_WINDOW,
                structured=True, source=source))
        return found


def _entries(data: Any) -> list[dict[str, Any]] | None:
    """The model entries of a `{"data": [...]}` listing (None when it is not one)."""
    items = data.get("data") if isinstance(data, dict) else None
    if not isinstance(items, list):
        return None
    return [e for e in items if isinstance(e, dict) and isinstance(e.get("id"), str)]
