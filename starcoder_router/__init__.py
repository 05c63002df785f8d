"""starcoder-router: route code-generation requests across the StarCoder 2 family and providers.

Users import everything from here; the modules behind it are private.
"""

from __future__ import annotations

import typing as _typing

from ._budget_types import (
    AsyncSpendStore,
    BudgetKey,
    BudgetStatus,
    LedgerEntry,
    Reservation,
    SpendStore,
)
from ._catalog import Catalog, Deployment, Score, Variant
from ._clock import Clock, FakeClock, SystemClock
from ._completion import Attempt, Completion, StreamChunk, Usage
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
from ._fit import TrimReport
from ._health import HealthPolicy
from ._hooks import Hooks
from ._policy import Budget, CostPolicy, QualityFloor
from ._request import CompletionRequest, Message, RepoFile, ResponseFormat
from ._retry import HedgePolicy, RetryPolicy
from ._router import Router
from ._routing import Candidate, RoutingDecision
from ._store_memory import MemoryStore
from ._stream import AsyncStream, Stream
from ._tokens import EstimatingCounter, TokenCounter, TokenizerCounter, load_token_counter

if _typing.TYPE_CHECKING:
    from ._async_router import AsyncRouter
    from ._discovery import discover_local
    from ._spend_report import spend_report
    from ._store_redis import RedisStore
    from ._store_sqlite import SQLiteStore

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
    "spend_report",
]

# Loaded on first use: they pull in asyncio, sqlite3, redis or httpx, which
# `import starcoder_router` should not pay for when they are not used.
_LAZY = {
    "AsyncRouter": "._async_router",
    "SQLiteStore": "._store_sqlite",
    "RedisStore": "._store_redis",
    "discover_local": "._discovery",
    "spend_report": "._spend_report",
}


def __getattr__(name: str) -> _typing.Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'starcoder_router' has no attribute {name!r}")
    import importlib as _importlib

    value = getattr(_importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
