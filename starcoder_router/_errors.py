"""The one exception tree of starcoder-router.

Every error the package raises derives from `StarcoderRouterError`::

    StarcoderRouterError
    ├── ConfigError                  a catalog, config file or constructor argument is wrong
    ├── InvalidRequestError          a CompletionRequest cannot be built (also a ValueError)
    ├── MissingDependencyError       an optional extra is needed (also an ImportError)
    ├── NoRouteError                 no deployment can take the request; carries the decision
    ├── RouterClosedError            the router was closed (also a RuntimeError)
    ├── BudgetExceededError          a budget cannot admit the request's worst-case cost
    ├── StoreError                   the spend store failed (e.g. Redis unreachable)
    └── ProviderError                a deployment was tried and failed
        ├── ProviderTransportError   we could not reach it, or it did not answer in time
        │   ├── ProviderConnectionError
        │   └── ProviderTimeoutError
        │       └── FirstTokenTimeoutError  no output before the first-token deadline
        ├── ProviderStatusError      it answered with an error status
        │   ├── BadRequestError              400 / 422
        │   │   └── ContextLengthError       the prompt does not fit the served window
        │   ├── AuthenticationError          401 / 403
        │   ├── NotFoundError                404: model missing or retired
        │   ├── RateLimitError               429, with `retry_after` when known
        │   └── ProviderServerError          5xx, overload
        ├── InvalidResponseError     the answer was malformed or the stream was cut
        │   └── StructuredOutputError        JSON that does not match the requested schema
        └── StreamInterruptedError   a stream failed after output reached the caller

"Couldn't reach it" is split from "it answered with an error", as in httpx. Each provider error
says whether trying again can help (`retryable`), and keeps the status code, provider, model,
request id and the provider's own message. No error ever holds an API key: messages pass through
`redact` before they are stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._routing.decision import RoutingDecision
    from ._running.results import Attempt, Completion
    from ._stores.base import BudgetStatus, LedgerEntry

__all__ = [
    "AuthenticationError",
    "BadRequestError",
    "BudgetExceededError",
    "ConfigError",
    "ContextLengthError",
    "FirstTokenTimeoutError",
    "InvalidRequestError",
    "InvalidResponseError",
    "MissingDependencyError",
    "NoRouteError",
    "NotFoundError",
    "ProviderConnectionError",
    "ProviderError",
    "ProviderServerError",
    "ProviderStatusError",
    "ProviderTimeoutError",
    "ProviderTransportError",
    "RateLimitError",
    "RouterClosedError",
    "StarcoderRouterError",
    "StoreError",
    "StreamInterruptedError",
    "StructuredOutputError",
]


class StarcoderRouterError(Exception):
    """Base class of every error raised by starcoder-router."""


class ConfigError(StarcoderRouterError):
    """A catalog, a config file or a constructor argument is invalid.

    `source` names the file (None for code), `field` the dotted path of the offending value
    (`policy.budgets.0.limit_usd`), `detail` the problem itself. The message names the value as
    the user wrote it: in a TOML file its table and key (`[[policy.budgets]] #1 limit_usd`), in
    code the keyword argument (`CostPolicy(min_quality=...)`).
    """

    def __init__(self, message: str, *, source: str | None = None, field: str | None = None):
        self.source = source
        self.field = field
        self.detail = message
        # Without a file the message itself names the argument (the field is for programs).
        where = ": ".join(p for p in (source, toml_key(field) if source and field else None) if p)
        super().__init__(f"{where}: {message}" if where else message)


def toml_key(field: str) -> str:
    """A dotted field path as it is written in a TOML file: `policy.min_quality` is
    `[policy] min_quality`, `deployments.2.model` (or `deployments[2].model`) is
    `[[deployments]] #3 model`, `providers.ollama.timeout` is `[providers.ollama] timeout`."""
    parts = field.replace("[", ".").replace("]", "").split(".")
    if len(parts) == 1 and parts[0] not in _TABLES:
        return parts[0]  # a top-level key such as `tokenizer`, not a table
    # The first index is the array of tables ([[deployments]]); a later one is a list value.
    i = next((i for i, p in enumerate(parts) if p.isdigit()), None)
    if i is not None:
        header, rest = f"[[{'.'.join(parts[:i])}]] #{int(parts[i]) + 1}", parts[i + 1:]
    else:
        n = 2 if parts[0] == "providers" and len(parts) > 1 else 1
        header, rest = f"[{'.'.join(parts[:n])}]", parts[n:]
    key = "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in rest).lstrip(".")
    return f"{header} {key}" if key else header


# The tables a router config file can have (see `_config`).
_TABLES = {"policy", "providers", "deployments", "variants", "store", "retry", "health",
           "simulate", "server"}


class InvalidRequestError(StarcoderRouterError, ValueError):
    """The request itself is wrong (no prompt, both prompt and messages, a forbidden token...)."""


class RouterClosedError(StarcoderRouterError, RuntimeError):
    """The router was used after `close()` (or after its `with` block): make a new one. A closed
    router never reopens connections behind the caller's back."""


class MissingDependencyError(StarcoderRouterError, ImportError):
    """A feature needs an optional extra that is not installed."""

    def __init__(self, feature: str, package: str, extra: str):
        self.package = package
        self.extra = extra
        super().__init__(
            f"{feature} needs the {package!r} package: pip install 'starcoder-router[{extra}]'"
        )


class NoRouteError(StarcoderRouterError):
    """No deployment can serve the request. `decision.explain()` shows why each was refused."""

    def __init__(self, decision: RoutingDecision, skipped: Mapping[str, str] | None = None):
        """`skipped` says why deployments the decision chose were not tried after all (e.g.
        cooling down past what the request may wait), by deployment name."""
        self.decision = decision
        self.skipped = dict(skipped or {})
        lines = ["no deployment can serve this request:"]
        for cand in decision.candidates:
            why = "; ".join(cand.reasons) or self.skipped.get(cand.deployment.name, "")
            lines.append(f"  - {cand.deployment.name}: {why}")
        if not decision.candidates:
            lines.append("  (the catalog has no deployments)")
        super().__init__("\n".join(lines))


class BudgetExceededError(StarcoderRouterError):
    """A budget cannot admit the request's worst-case cost.

    `status` holds the budget's name, limit, spent and reserved amounts and when it resets.
    """

    def __init__(self, status: BudgetStatus, *, requested_usd: float):
        self.status = status
        self.requested_usd = requested_usd
        resets = status.resets_at.isoformat() if status.resets_at else "never"
        super().__init__(
            f"budget {status.name!r} cannot admit ${requested_usd:.6f}: limit "
            f"${status.limit_usd:.6f}, spent ${status.spent_usd:.6f}, reserved "
            f"${status.reserved_usd:.6f}; resets {resets}"
        )


class StoreError(StarcoderRouterError):
    """The spend store failed. Before a call nothing was sent; after one, `unrecorded` is the
    ledger entry (with its cost) that could not be written, for you to keep."""

    def __init__(self, message: str, *, unrecorded: LedgerEntry | None = None):
        self.unrecorded = unrecorded
        super().__init__(message)


class ProviderError(StarcoderRouterError):
    """A call to a deployment failed.

    Attributes: `provider`, `model`, `deployment` (name), `status_code` (None when the server never
    answered), `request_id`, `provider_message` (the provider's own text, redacted), `retryable`,
    and `attempts` (every attempt the router made, when the router raised it).
    """

    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        model: str = "",
        deployment: str = "",
        status_code: int | None = None,
        request_id: str | None = None,
        provider_message: str | None = None,
    ):
        self.provider = provider
        self.model = model
        self.deployment = deployment
        self.status_code = status_code
        self.request_id = request_id
        self.provider_message = provider_message
        self.attempts: tuple[Attempt, ...] = ()
        self.message = message
        super().__init__(message)

    def summary(self) -> str:
        """A short label, such as "ProviderServerError (HTTP 500)", for health reasons."""
        status = f" (HTTP {self.status_code})" if self.status_code is not None else ""
        return f"{type(self).__name__}{status}"

    def __str__(self) -> str:
        parts = [self.message]
        ctx = [f"deployment={self.deployment}" if self.deployment else f"provider={self.provider}"]
        if self.status_code is not None:
            ctx.append(f"status={self.status_code}")
        if self.request_id:
            ctx.append(f"request_id={self.request_id}")
        parts.append(f"({', '.join(ctx)})")
        return " ".join(parts)

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep errors picklable across processes (keyword-only constructor).
        return (_rebuild_error, (type(self), self.__dict__.copy()))


def _rebuild_error(cls: type[ProviderError], state: dict[str, Any]) -> ProviderError:
    err = cls.__new__(cls)
    Exception.__init__(err, state.get("message", ""))
    err.__dict__.update(state)
    return err


class ProviderTransportError(ProviderError):
    """The deployment could not be reached, or did not answer in time."""

    retryable = True


class ProviderConnectionError(ProviderTransportError):
    """Connecting or talking to the deployment failed."""


class ProviderTimeoutError(ProviderTransportError):
    """The deployment did not answer within the timeout or the request's deadline."""


class FirstTokenTimeoutError(ProviderTimeoutError):
    """The deployment sent no output within the request's first-token deadline
    (`first_token_timeout_s`, in seconds): the attempt was cancelled and the next deployment
    tried. Raised when every deployment timed out so."""

    def __init__(self, message: str, *, timeout_s: float = 0.0, **context: Any):
        super().__init__(message, **context)
        self.timeout_s = timeout_s


class ProviderStatusError(ProviderError):
    """The deployment answered with an error status."""


class BadRequestError(ProviderStatusError):
    """400 or 422: the provider refused the request as malformed."""


class ContextLengthError(BadRequestError):
    """The prompt plus `max_tokens` does not fit the window the deployment actually serves.

    `context_window` and `prompt_tokens` are set when the provider's message says them.
    """

    def __init__(
        self,
        message: str,
        *,
        context_window: int | None = None,
        prompt_tokens: int | None = None,
        **kwargs: Any,
    ):
        self.context_window = context_window
        self.prompt_tokens = prompt_tokens
        super().__init__(message, **kwargs)


class AuthenticationError(ProviderStatusError):
    """401 or 403: the API key is missing, wrong or not allowed this model."""


class NotFoundError(ProviderStatusError):
    """404: the model is unknown to the provider, or was retired."""


class RateLimitError(ProviderStatusError):
    """429: slow down. `retry_after` (seconds) is set when the provider said how long."""

    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any):
        self.retry_after = retry_after
        super().__init__(message, **kwargs)


class ProviderServerError(ProviderStatusError):
    """5xx: the provider failed or shed load. `retry_after` is set when the provider said."""

    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any):
        self.retry_after = retry_after
        super().__init__(message, **kwargs)


class InvalidResponseError(ProviderError):
    """The provider's answer could not be understood: malformed JSON, a truncated stream."""

    retryable = True


class StructuredOutputError(InvalidResponseError):
    """The provider returned text that is not JSON, or JSON that breaks the requested schema.

    `text` is the raw output; `completion` the costed completion it came in.
    """

    retryable = False

    def __init__(self, message: str, *, text: str, completion: Completion | None = None, **kw: Any):
        self.text = text
        self.completion = completion
        super().__init__(message, **kw)


class StreamInterruptedError(ProviderError):
    """A stream failed after some output had reached the caller, so it could not fall back.

    `delivered_text` is what the caller already received; `completion` is the partial,
    costed completion (the spend is recorded).
    """

    retryable = False

    def __init__(
        self,
        message: str,
        *,
        delivered_text: str,
        delivered_chunks: int,
        completion: Completion | None = None,
        **kwargs: Any,
    ):
        self.delivered_text = delivered_text
        self.delivered_chunks = delivered_chunks
        self.completion = completion
        super().__init__(message, **kwargs)

