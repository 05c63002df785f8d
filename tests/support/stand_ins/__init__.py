"""Loopback stand-ins for every provider, for tests that must talk HTTP to something that
behaves like the real thing (its paths, reply shapes, error wordings, stop limit, window and
special-token handling), and a router config that points every provider at them.

    with stand_in("fireworks", window=4096) as fw:
        path = write_config(tmp_path / "router.toml", [fw])
        Router.from_config(path) ...

No test ever sends a request to a hosted provider: their base URLs point here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .core import Behaviour, StandIn, count, generate
from .providers import DEFAULTS, base_url, stand_in

__all__ = ["DEFAULTS", "DEPLOYMENT_NAMES", "KEY", "Behaviour", "StandIn", "base_url", "count",
           "deployment_entry", "generate", "stand_in", "write_config"]

KEY = "stand-in-key-0123456789"
HOSTED = {"fireworks": "fireworks/starcoder2-7b", "deepinfra": "deepinfra/starcoder2-15b"}
LOCAL_WINDOW = {"ollama": 16384, "vllm": 16384, "llamacpp": 4096, "tgi": 4096, "lmstudio": 4096,
                "openai-compatible": 8192}
DEPLOYMENT_NAMES = {**HOSTED, **{p: f"{p}/starcoder2-3b" for p in LOCAL_WINDOW}}


def deployment_entry(si: StandIn, *, window: int | None = None) -> str:
    """A `[[deployments]]` table for a local stand-in, claiming `window` (default: the usual
    claim for that provider, whatever the stand-in really holds)."""
    caps = '["completion", "fim", "streaming", "structured_output"]'
    return (f'[[deployments]]\nprovider = "{si.provider}"\nvariant = "starcoder2-3b"\n'
            f'model = "{si.behaviour.model}"\n'
            f"context_window = {window or LOCAL_WINDOW[si.provider]}\n"
            f'base_url = "{base_url(si)}"\ncapabilities = {caps}\n')


def write_config(path: Path, stand_ins: Sequence[StandIn], *, extra: str = "") -> Path:
    """A router config whose providers are `stand_ins`: hosted ones through
    `[providers.NAME] base_url` and a key, local ones as deployments of their own."""
    parts = []
    for si in stand_ins:
        if si.provider in HOSTED:
            parts.append(f'[providers.{si.provider}]\nbase_url = "{base_url(si)}"\n'
                         f'api_key = "{KEY}"\n')
        else:
            parts.append(deployment_entry(si))
    path.write_text("\n".join(parts) + extra)
    return path
