"""The providers we know, by name. Adapters are imported on first use, never at package import.

Adding a provider: one module in this package, one line here, one test file.
"""

from __future__ import annotations

import functools
import importlib

from .._errors import ConfigError
from .base import Provider

__all__ = ["PROVIDERS", "provider_class"]

PROVIDERS: dict[str, str] = {
    "deepinfra": "deepinfra:DeepInfra",
    "fireworks": "fireworks:Fireworks",
    "llamacpp": "llamacpp:LlamaCpp",
    "lmstudio": "lmstudio:LMStudio",
    "ollama": "ollama:Ollama",
    "openai-compatible": "base:Provider",
    "tgi": "tgi:TGI",
    "vllm": "vllm:VLLM",
}


@functools.cache
def provider_class(name: str) -> type[Provider]:
    try:
        target = PROVIDERS[name]
    except KeyError:
        known = ", ".join(sorted(PROVIDERS))
        raise ConfigError(f"unknown provider {name!r}; known providers: {known}") from None
    module_name, _, class_name = target.partition(":")
    module = importlib.import_module(f"{__package__}.{module_name}")
    cls: type[Provider] = getattr(module, class_name)
    return cls
