"""What the local OpenAI-compatible servers (vLLM, TGI, LM Studio) share for discovery and side
requests: the server root outside `/v1`, reading probe answers, and turning a served model id
into a catalog `Deployment`. Requests outside a completion go through `side_request`.

Example::

    find_variant("bigcode/starcoder2-15b-instruct-v0.1")   # "starcoder2-15b-instruct"
    find_variant("my-alias", "bigcode/starcoder2-7b")      # "starcoder2-7b" (vLLM's `root`)
    find_variant("codellama/CodeLlama-7b-hf")              # None: not a StarCoder 2 model
"""

from __future__ import annotations

import json
import re
from typing import Any

from .._routing.catalog import Capability, Deployment
from .._transports.base import WireResponse
from .base import starcoder2_variant
from .call import Endpoint

__all__ = ["find_variant", "json_body", "local_deployment", "server_root"]

def server_root(base_url: str) -> str:
    """The server's root: `/tokenize`, `/info` and `/api/v0` live beside `/v1`, not under it."""
    url = base_url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def json_body(response: WireResponse | None) -> Any:
    """The JSON of a successful answer; None for a failed probe, an error status or non-JSON."""
    if response is None or response.status != 200:
        return None
    try:
        return json.loads(response.body)
    except ValueError:
        return None


def find_variant(*names: Any, family_known: bool = False) -> str | None:
    """The catalog variant of the first of `names` that is a StarCoder 2 model we know (these
    servers list other models too). `family_known`: the server already said "starcoder2"."""
    for name in names:
        if not isinstance(name, str):
            continue
        if not family_known and "starcoder2" not in re.sub(r"[^a-z0-9]", "", name.lower()):
            continue
        variant = starcoder2_variant(name)
        if variant is not None:
            return variant
    return None


def local_deployment(provider: str, endpoint: Endpoint, model: str, variant: str,
                     context_window: int, *, structured: bool, source: str) -> Deployment:
    """A discovered deployment, named `provider/model` so two models of one variant (an alias
    and a quantisation, say) can both be listed."""
    caps: set[Capability] = {"completion", "streaming"}
    # The instruct model is not trained for FIM; base models have no chat format.
    caps.add("chat" if variant.endswith("instruct") else "fim")
    if structured:
        caps.add("structured_output")
    return Deployment(
        name=f"{provider}/{model}", provider=provider, variant=variant, model=model,
        context_window=context_window, pricing="local", capabilities=frozenset(caps),
        base_url=endpoint.base_url, source=source,
    )
