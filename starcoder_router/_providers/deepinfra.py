"""DeepInfra: OpenAI-compatible completions under api.deepinfra.com/v1/openai.

Quirks handled here:
* The base URL must end in `/v1/openai`; plain `/v1` answers 404 to everything.
* The key goes by three names in the wild: DEEPINFRA_API_KEY (AI SDK), DEEPINFRA_TOKEN
  (DeepInfra's own docs), DEEPINFRA_API_TOKEN (LangChain). We accept all three.
* Deprecated models keep answering but are silently redirected to a replacement: we compare the
  answer's `model` with what we asked for, add a warning to the completion, and log it once per
  (asked, served) pair and router.
* At most 4 stop sequences; the caller's come first, then ours by importance.
* Only `json_object` is documented for structured output, so a schema is enforced by validating
  the answer on our side; GBNF grammars are refused before anything is sent.
* Usage comes on the chunk that carries `finish_reason` (the base decoder reads it anywhere).
* Validation errors are 422 `{"detail": [...]}`; over 200 concurrent requests per model is 429
  "Rate limited", which also happens briefly while a model scales up (retryable).
"""

from __future__ import annotations

import logging
import threading
from typing import Any, ClassVar

from .._routing.request import ResponseFormat
from .base import Provider
from .call import Call, ProviderResult

__all__ = ["DeepInfra"]

logger = logging.getLogger("starcoder_router")


class DeepInfra(Provider):
    name: ClassVar[str] = "deepinfra"
    default_base_url: ClassVar[str] = "https://api.deepinfra.com/v1/openai"
    key_envs: ClassVar[tuple[str, ...]] = ("DEEPINFRA_API_KEY", "DEEPINFRA_TOKEN",
                                           "DEEPINFRA_API_TOKEN")
    key_required: ClassVar[bool] = True
    local: ClassVar[bool] = False
    max_stop: ClassVar[int | None] = 4

    def __init__(self) -> None:
        self._warned: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def response_format_fields(self, call: Call, fmt: ResponseFormat) -> dict[str, Any]:
        if fmt.type == "grammar":
            return super().response_format_fields(call, fmt)  # refuses grammars
        return {"response_format": {"type": "json_object"}}

    def check(self, call: Call, result: ProviderResult) -> None:
        asked, served = call.deployment.model, result.model
        if served and served != asked:
            msg = (f"deepinfra served {served!r} for {asked!r}: the model was probably "
                   "deprecated and redirected")
            result.warnings.append(msg)
            with self._lock:
                first = (asked, served) not in self._warned
                self._warned.add((asked, served))
            if first:
                logger.warning(msg)
