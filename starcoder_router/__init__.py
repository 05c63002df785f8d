"""starcoder-router: route code-generation requests across the StarCoder 2 family and providers.

Users import everything from here; the modules behind it are private.
"""

from __future__ import annotations

import typing as _typing

from ._errors import (
    AuthenticationError,
    BadRequestError,
    BudgetExceededError,
    ConfigError,
    ContextLengthError,
    FirstTokenTimeoutError,
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
    RouterClosedError,
    StarcoderRouterError,
    StoreError,
    StreamInterruptedError,
    StructuredOutputError,
)

if _typing.TYPE_CHECKING:
    from ._autocomplete.sessions import AutocompletePolicy
    from ._clock import Clock, FakeClock, SystemClock
    from ._config import ProviderSettings, StoreSettings
    from ._discovery import discover_local
    from ._fleet import Fleet, FleetPolicy
    from ._routing.catalog import Catalog, Deployment, Score, Variant
    from ._routing.decision import Candidate, RoutingDecision
    from ._routing.fit import TrimReport
    from ._routing.health import HealthPolicy
    from ._routing.policy import Budget, CostPolicy, QualityFloor
    from ._routing.request import CompletionRequest, Message, RepoFile, ResponseFormat
    from ._routing.selfhosted import SelfHostedPrice
    from ._routing.tokens import (
        EstimatingCounter,
        TokenCounter,
        TokenizerCounter,
        load_token_counter,
    )
    from ._running.async_router import AsyncRouter
    from ._running.hooks import CoolingWait, Hooks
    from ._running.results import Attempt, Completion, StreamChunk, Usage
    from ._running.retry import HedgePolicy, RetryPolicy
    from ._running.streams import AsyncStream, Stream
    from ._running.sync_router import Router
    from ._server.telemetry import otel_hooks
    from ._simulate import (
        PolicySummary,
        SimulationResult,
        SimulationSettings,
        WorkloadRequest,
        read_workload,
        simulate,
        stream_workload,
    )
    from ._stores.base import (
        AsyncSpendStore,
        BudgetKey,
        BudgetStatus,
        LedgerEntry,
        Reservation,
        SpendStore,
    )
    from ._stores.memory import MemoryStore
    from ._stores.outage import OutageTolerantStore
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
    "AutocompletePolicy",
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
    "CoolingWait",
    "CostPolicy",
    "Deployment",
    "EstimatingCounter",
    "FakeClock",
    "FirstTokenTimeoutError",
    "Fleet",
    "FleetPolicy",
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
    "OutageTolerantStore",
    "PolicySummary",
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
    "RouterClosedError",
    "RoutingDecision",
    "SQLiteStore",
    "Score",
    "SelfHostedPrice",
    "SimulationResult",
    "SimulationSettings",
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
    "WorkloadRequest",
    "discover_local",
    "load_token_counter",
    "otel_hooks",
    "read_workload",
    "simulate",
    "spend_report",
    "stream_workload",
]

# Everything but the exceptions is loaded on first use: `import starcoder_router` costs almost
# nothing (no pydantic, httpx, asyncio or sqlite3), and each name brings in only what it needs.
_LAZY = {
    "AsyncRouter": "._running.async_router",
    "AsyncSpendStore": "._stores.base",
    "AsyncStream": "._running.streams",
    "Attempt": "._running.results",
    "AutocompletePolicy": "._autocomplete.sessions",
    "Budget": "._routing.policy",
    "BudgetKey": "._stores.base",
    "BudgetStatus": "._stores.base",
    "Candidate": "._routing.decision",
    "Catalog": "._routing.catalog",
    "Clock": "._clock",
    "Completion": "._running.results",
    "CompletionRequest": "._routing.request",
    "CoolingWait": "._running.hooks",
    "CostPolicy": "._routing.policy",
    "Deployment": "._routing.catalog",
    "EstimatingCounter": "._routing.tokens",
    "FakeClock": "._clock",
    "Fleet": "._fleet",
    "FleetPolicy": "._fleet",
    "HealthPolicy": "._routing.health",
    "HedgePolicy": "._running.retry",
    "Hooks": "._running.hooks",
    "LedgerEntry": "._stores.base",
    "MemoryStore": "._stores.memory",
    "Message": "._routing.request",
    "OutageTolerantStore": "._stores.outage",
    "PolicySummary": "._simulate",
    "ProviderSettings": "._config",
    "QualityFloor": "._routing.policy",
    "RedisStore": "._stores.redis",
    "RepoFile": "._routing.request",
    "Reservation": "._stores.base",
    "ResponseFormat": "._routing.request",
    "RetryPolicy": "._running.retry",
    "Router": "._running.sync_router",
    "RoutingDecision": "._routing.decision",
    "SQLiteStore": "._stores.sqlite",
    "Score": "._routing.catalog",
    "SelfHostedPrice": "._routing.selfhosted",
    "SimulationResult": "._simulate",
    "SimulationSettings": "._simulate",
    "SpendStore": "._stores.base",
    "StoreSettings": "._config",
    "Stream": "._running.streams",
    "StreamChunk": "._running.results",
    "SystemClock": "._clock",
    "TokenCounter": "._routing.tokens",
    "TokenizerCounter": "._routing.tokens",
    "TrimReport": "._routing.fit",
    "Usage": "._running.results",
    "Variant": "._routing.catalog",
    "WorkloadRequest": "._simulate",
    "discover_local": "._discovery",
    "load_token_counter": "._routing.tokens",
    "read_workload": "._simulate",
    "simulate": "._simulate",
    "stream_workload": "._simulate",
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


def __dir__() -> list[str]:
    return sorted(set(__all__) | set(globals()))
