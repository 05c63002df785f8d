"""The gateway's own settings: the `[server]` section of the router config file.

Example::

    [server]
    port = 8080
    max_body_bytes = 1_000_000
    max_tokens = 1024

    [[server.tenants]]
    name = "acme"
    key_sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    requests_per_minute = 600
    tokens_per_minute = 200_000

Keys are stored only as SHA-256 hex digests (`starcoder-router serve --hash-key KEY` prints
one). With no tenants configured the gateway needs no key.
"""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator

from .._errors import ConfigError
from .._routing.limits import InputLimits
from .._validation import FrozenModel, read_toml, validate_config

__all__ = ["ServerSettings", "TenantSettings", "load_server_settings"]


class TenantSettings(FrozenModel):
    """One tenant: a name (budgets with `scope = "tenant"` count it), its key's SHA-256 digest
    and its rate limits per minute (None: unlimited)."""

    name: str = Field(min_length=1)
    key_sha256: str = Field(repr=False)  # as good as the key to whoever can guess keys
    requests_per_minute: int | None = Field(default=None, gt=0)
    tokens_per_minute: int | None = Field(default=None, gt=0)
    # Its own cap on requests in flight (None: `[server] max_requests_in_flight_per_tenant`).
    max_requests_in_flight: int | None = Field(default=None, gt=0)

    @field_validator("key_sha256")
    @classmethod
    def _hex_digest(cls, value: str) -> str:
        value = value.strip().lower()
        if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
            raise ValueError("must be the 64-character hex SHA-256 digest of the key")
        return value


class ServerSettings(FrozenModel):
    """Where the gateway listens and what it accepts.

    `max_body_bytes` caps a request body (413 above it); `max_tokens` caps what a caller may ask
    for (400 above it; also the default when a protocol leaves it unset); `shutdown_timeout_s`
    is how long in-flight requests may run on after a stop signal before they are cancelled
    (a cancelled stream still books what it cost). `request_timeout_s` is every request's
    deadline (default: the retry policy's): an editor would rather get a quick 503 than wait
    for a deployment to come out of its cooldown. `tracing` records an OpenTelemetry span per
    attempt on the global tracer provider (the `otel` extra; configure the exporter as usual,
    e.g. with `OTEL_EXPORTER_OTLP_ENDPOINT` under `opentelemetry-instrument`).

    Every client is assumed hostile (SECURITY.md): `header_timeout_s` is how long a connection
    may take to send a request's headers (counted from when it opened or its last answer ended,
    so it is also how long an idle keep-alive connection is kept), `body_timeout_s` how long a
    request's body may take (408 after it), `send_timeout_s` how long a client may leave an
    answer unread while the gateway waits to send more (then it is closed); `max_connections`
    caps open connections in all and `max_connections_per_client` per client address (an IPv6
    client by its /64); over a cap a new connection is answered 503 (all) or 429 (one client)
    and closed.
    `max_requests_per_connection` closes a keep-alive connection after that many requests.
    `max_requests_in_flight_per_tenant` (a tenant's own `max_requests_in_flight` overrides it)
    and `max_requests_in_flight` cap the requests being served at once, per tenant and in all;
    a request over a cap waits, unread, in its tenant's queue, and slots go to the tenants
    with requests waiting in turn (`fairness.py`); over `max_queued_per_tenant` waiting, or
    after `max_queue_wait_s`, the answer is 429.
    `metrics_key`, when set, is the bearer token `/metrics` requires (401 without it);
    `metrics_tenant_labels = false` drops tenant names from the metrics. `access_log` writes
    one line per request to the `starcoder_router.access` logger (no keys, no bodies).
    `autocomplete_mode` is the completion mode of requests that name none (README, "Editor
    autocomplete"); by default none: completions follow the client's own parameters.
    `state_dir` is where `serve` keeps its spend database (`spend.db`) when the config has no
    `[store]` (default in `state_dir.py`: `$STARCODER_ROUTER_STATE_DIR`, else
    `$XDG_STATE_HOME/starcoder-router`, else `~/.local/state/starcoder-router`).
    """

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = Field(default=1_000_000, gt=0)
    max_tokens: int = Field(default=4096, gt=0)
    default_max_tokens: int = Field(default=256, gt=0)
    shutdown_timeout_s: float = Field(default=10.0, ge=0)
    request_timeout_s: float | None = Field(default=None, gt=0)
    tenants: tuple[TenantSettings, ...] = ()
    health_sync_s: float = Field(default=0.25, gt=0)
    tracing: bool = False
    header_timeout_s: float = Field(default=10.0, gt=0)
    body_timeout_s: float = Field(default=30.0, gt=0)
    send_timeout_s: float = Field(default=30.0, gt=0)
    max_connections: int = Field(default=1024, gt=0)
    max_connections_per_client: int = Field(default=64, gt=0)
    max_requests_per_connection: int = Field(default=1000, gt=0)
    max_requests_in_flight_per_tenant: int = Field(default=8, gt=0)
    max_requests_in_flight: int = Field(default=256, gt=0)
    max_queued_per_tenant: int = Field(default=256, ge=0)
    max_queue_wait_s: float = Field(default=30.0, gt=0)
    metrics_key: SecretStr | None = None
    metrics_tenant_labels: bool = True
    autocomplete_mode: Literal["line", "block", "auto"] | None = None
    state_dir: str | None = Field(default=None, min_length=1)

    @field_validator("metrics_key")
    @classmethod
    def _not_blank(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("must not be empty (leave it out to serve /metrics openly)")
        return value

    # Caps on one request's inputs, `[server.limits]` (table in _routing/limits.py).
    limits: InputLimits = InputLimits()
    access_log: bool = True

    @field_validator("tenants")
    @classmethod
    def _unique(cls, value: tuple[TenantSettings, ...]) -> tuple[TenantSettings, ...]:
        names = [t.name for t in value]
        digests = [t.key_sha256 for t in value]
        if len(set(names)) != len(names) or len(set(digests)) != len(digests):
            raise ValueError("tenant names and keys must be unique")
        return value


def load_server_settings(path: str | os.PathLike[str] | None) -> ServerSettings:
    """The `[server]` section of a config file (defaults when there is no file or section)."""
    if path is None:
        return ServerSettings()
    source = os.fspath(path)
    raw: Any = read_toml(source).get("server", {})
    if not isinstance(raw, dict):
        raise ConfigError("must be a table", source=source, field="server")
    return validate_config(ServerSettings, raw, source=source, prefix="server")
