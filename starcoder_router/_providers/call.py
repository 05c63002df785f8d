"""The values that cross the provider boundary, and small pure helpers to read them.

Adapters are pure: they turn a `Call` into a `WireRequest` and a `WireResponse` (or stream lines)
into a `ProviderResult`. Transports do the I/O. So the same adapter serves the sync and the async
router, and tests can check the exact bytes on the wire.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from .._errors import InvalidResponseError
from .._routing.catalog import Deployment
from .._routing.render import Rendered
from .._routing.request import CompletionRequest
from .._routing.tokens import CountKind
from .._secrets import Secret
from .._transports.base import StreamFormat, WireRequest, WireResponse

__all__ = [
    "Call",
    "Endpoint",
    "FinishReason",
    "ProviderResult",
    "StreamFormat",
    "WireRequest",
    "WireResponse",
    "dumps",
    "loads",
    "normalize_finish",
    "parse_retry_after",
]

# How a generation ended, in our terms (each provider maps its own words onto these);
# "cancelled" is ours alone: the caller closed a stream before its end; so is "superseded": a
# newer request of the same autocomplete session replaced this one before its end.
FinishReason = Literal["stop", "length", "error", "cancelled", "superseded"]


class Endpoint(NamedTuple):
    """Where and how to reach one provider: resolved base URL, key and timeouts."""

    provider: str
    base_url: str
    api_key: Secret | None = None
    timeout: float = 60.0
    connect_timeout: float = 5.0
    headers: tuple[tuple[str, str], ...] = ()


class Call(NamedTuple):
    """Everything an adapter needs for one attempt.

    `prompt_tokens` is the router's count of `rendered.prompt` and `prompt_count_kind` says what
    kind of count it is: "exact" (the real tokenizer), "bound" (the UTF-8 byte length, an upper
    bound) or "estimate"; None when unknown. Adapters that compare it with the server's own count
    must only treat an "exact" count as the prompt's true size.
    """

    deployment: Deployment
    request: CompletionRequest
    rendered: Rendered
    endpoint: Endpoint
    prompt_tokens: int | None = None
    prompt_count_kind: CountKind | None = None


@dataclass
class ProviderResult:
    """A provider's answer in our terms. Token counts are None when the provider did not say."""

    text: str
    finish_reason: FinishReason
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    request_id: str | None = None
    model: str | None = None
    raw_finish_reason: str | None = None
    warnings: list[str] = field(default_factory=list)


def dumps(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def loads(data: bytes | str, *, provider: str, what: str = "response") -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested thousands deep
        preview = data[:200] if isinstance(data, str) else data[:200].decode("utf-8", "replace")
        raise InvalidResponseError(
            f"{provider} sent a {what} that is not JSON: {preview!r}", provider=provider
        ) from exc


_STOP = frozenset({"stop", "eos_token", "stop_sequence", "eos", "word", "end_turn", "stopped",
                   "eosfound"})
_LENGTH = frozenset({"length", "max_tokens", "limit", "maxpredictedtokensreached",
                     "model_length"})


def normalize_finish(raw: str | None, *, default: FinishReason = "stop") -> FinishReason:
    """Map every provider's finish reasons onto stop / length / error."""
    if raw is None:
        return default
    key = raw.lower()
    if key in _STOP:
        return "stop"
    if key in _LENGTH:
        return "length"
    if key in ("error", "abort", "aborted"):
        return "error"
    return default


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_retry_after(headers: Mapping[str, str], *,
                      now: dt.datetime | None = None) -> float | None:
    """Seconds to wait, from `Retry-After` (seconds or an HTTP date), `retry-after-ms`, or the
    `x-ratelimit-reset-*` headers some providers send ("1s", "6m0s", "20ms")."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value:
        value = value.strip()
        try:
            return max(0.0, float(value))
        except ValueError:
            import email.utils

            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                when = None
            if when is not None:
                now = now or dt.datetime.now(dt.UTC)
                if when.tzinfo is None:
                    when = when.replace(tzinfo=dt.UTC)
                return max(0.0, (when - now).total_seconds())
    resets = [
        _parse_duration(v) for k, v in headers.items()
        if k.startswith("x-ratelimit-reset")
    ]
    found = [r for r in resets if r is not None]
    return max(found) if found else None


def _parse_duration(text: str) -> float | None:
    text = text.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * _UNIT[u] for n, u in parts)
