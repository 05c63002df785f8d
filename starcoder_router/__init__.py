"""starcoder-router: route code-generation requests across the StarCoder 2 family and providers.

Users import everything from here; the modules behind it are private.
"""

from __future__ import annotations

import typing as _typing

from ._clock import Clock, FakeClock, SystemClock
from ._config import ProviderSettings, StoreSettings
from ._errors import (
    AuthenticationError,
    BadRequestError,
    BudgetExceededError,
    ConfigError,
    ContextLengthError,
    InvalidRequestError,
    InvalidResponseError,
    MissingDependencyError,
    NoRouteError,
    NotFoundError,
    ProviderConnectionError,
    ProviderError,
    ProviderServerError,
    ProviderStatusError,
    ProviderTimeoutError,
    ProviderTransportError,
    RateLimitError,
    StarcoderRouterError,
    StoreError,
    StreamInterruptedError,
    StructuredOutputError,
)
from ._routing.catalog import Catalog, Deployment, Score, Variant
from ._routing.decision import Candidate, RoutingDecision
from ._routing.fit import TrimReport
from ._routing.health import HealthPolicy
from ._routing.policy import Budget, CostPolicy, QualityFloor
from ._routing.request import CompletionRequest, Message, RepoFile, ResponseFormat
from ._routing.tokens import EstimatingCounter, TokenCounter, TokenizerCounter, load_token_counter
from ._running.hooks import Hooks
from ._running.results import Attempt, Completion, StreamChunk, Usage
from ._running.retry import HedgePolicy, RetryPolicy
from ._running.streams import AsyncStream, Stream
from ._running.sync_router import Router
from ._stores.base import (
    AsyncSpendStore,
    BudgetKey,
    BudgetStatus,
    LedgerEntry,
    Reservation,
    SpendStore,
)
from ._stores.memory import MemoryStore

if _typing.TYPE_CHECKING:
    from ._discovery import discover_local
    from ._running.async_router import AsyncRouter
    from ._server.telemetry import otel_hooks
    from ._stores.redis import RedisStore
    from ._stores.report import spend_report
    from ._stores.sqlite import SQLiteStore

__version__ = "0.1.0"

__all__ = [
    "AsyncRouter",
    "AsyncSpendStore",
    "AsyncStream",
    "Attempt",
    "AuthenticationError",
    "BadRequestError",
    "Budget",
    "BudgetExceededError",
    "BudgetKey",
    "BudgetStatus",
    "Candidate",
    "Catalog",
    "Clock",
    "Completion",
    "CompletionRequest",
    "ConfigError",
    "ContextLengthError",
    "CostPolicy",
    "Deployment",
    "EstimatingCounter",
    "FakeClock",
    "HealthPolicy",
    "HedgePolicy",
    "Hooks",
    "InvalidRequestError",
    "InvalidResponseError",
    "LedgerEntry",
    "MemoryStore",
    "Message",
    "MissingDependencyError",
    "NoRouteError",
    "NotFoundError",
    "ProviderConnectionError",
    "ProviderError",
    "ProviderServerError",
    "ProviderSettings",
    "ProviderStatusError",
    "ProviderTimeoutError",
    "ProviderTransportError",
    "QualityFloor",
    "RateLimitError",
    "RedisStore",
    "RepoFile",
    "Reservation",
    "ResponseFormat",
    "RetryPolicy",
    "Router",
    "RoutingDecision",
    "SQLiteStore",
    "Score",
    "SpendStore",
    "StarcoderRouterError",
    "StoreError",
    "StoreSettings",
    "Stream",
    "StreamChunk",
    "StreamInterruptedError",
    "StructuredOutputError",
    "SystemClock",
    "TokenCounter",
    "TokenizerCounter",
    "TrimReport",
    "Usage",
    "Variant",
    "discover_local",
    "load_token_counter",
    "otel_hooks",
    "spend_report",
]

# Loaded on first use: they pull in asyncio, sqlite3, redis or httpx, which
# `import starcoder_router` should not pay for when they are not used.
_LAZY = {
    "AsyncRouter": "._running.async_router",
    "SQLiteStore": "._stores.sqlite",
    "RedisStore": "._stores.redis",
    "discover_local": "._discovery",
    "spend_report": "._stores.report",
    "otel_hooks": "._server.telemetry",
}


def __getattr__(name: str) -> _typing.Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'starcoder_router' has no attribute {name!r}")
    import importlib as _importlib

    value = getattr(_importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
