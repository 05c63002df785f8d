"""What the request flow asks its driver to do.

The flow (`flow.py`) decides; `Router` and `AsyncRouter` only perform these, each with its own
kind of I/O, and send back the result (or throw back the exception), as tenacity's
`Retrying.iter()` returns `DoAttempt`/`DoSleep` for a loop to carry out. Every action names
exactly what to do, so a driver is a short dispatch with no decisions of its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from .._stores.base import BudgetKey, LedgerEntry, Reservation
    from .._transports.base import WireRequest
    from .results import StreamChunk
    from .stream_attempt import StreamAttempt

__all__ = [
    "READ_BODY",
    "Action",
    "Book",
    "Drain",
    "Emit",
    "Open",
    "PumpAction",
    "ReadOn",
    "Release",
    "Reserve",
    "Send",
    "Sleep",
    "StartHedge",
    "StartStream",
]


class Sleep(NamedTuple):
    """Wait this long (a retry back-off, or a deployment cooling down). Sends back None."""

    seconds: float


class Reserve(NamedTuple):
    """Hold `amount_nano` against every budget in `keys`. Sends back a `Reservation`, or throws
    `BudgetExceededError` (or the store's own failure) back in."""

    keys: tuple[BudgetKey, ...]
    amount_nano: int
    ttl_s: float


class Book(NamedTuple):
    """Record what an attempt cost: settle `reservation` at `cost_nano`, or, with no reservation
    (no budget applies), add the ledger entry alone. Sends back None."""

    reservation: Reservation | None
    keys: tuple[BudgetKey, ...]
    cost_nano: int
    entry: LedgerEntry


class Release(NamedTuple):
    """Free a reservation whose attempt cost nothing. Sends back None."""

    reservation: Reservation


class Send(NamedTuple):
    """Send one request on the transport for `provider`. Sends back the `WireResponse`, or
    throws the transport's `ProviderTransportError` back in."""

    provider: str
    wire: WireRequest
    timeout: float
    connect_timeout: float
    # For the fleet's slot gate (`_fleet.gate`): whose slot the driver holds while it sends,
    # and whether the request goes first when the server is full (fill-in-the-middle).
    deployment: str = ""
    urgent: bool = False


class StartStream(NamedTuple):
    """Run a streaming attempt up to its first chunk. Sends back that chunk; the attempt keeps
    the rest. Throws the attempt's `ProviderError` back in when it fails before any output, and
    `FirstTokenTimeoutError` when `first_token_s` passes first (`first_token.py`)."""

    attempt: StreamAttempt
    first_token_s: float | None = None


class Drain(NamedTuple):
    """Read a started attempt to its end without passing chunks on (a hedged `complete()`).
    Sends back its completion, or None when it broke off (it booked itself)."""

    attempt: StreamAttempt


class StartHedge(NamedTuple):
    """Run two streaming attempts at once, the second only if the first has no output after
    `after_s`: the first to produce output wins, the other is cancelled and books itself.
    Sends back a `HedgeOutcome` (`flow.py`)."""

    first: StreamAttempt
    second: StreamAttempt
    after_s: float


Action = Sleep | Reserve | Book | Release | Send | StartStream | Drain | StartHedge


# -- inside one streaming attempt (`StreamAttempt.pump`) ----------------------------------------

class Open(NamedTuple):
    """Open a stream on the transport for `provider`. Sends back the status code and headers;
    the driver keeps the open handle for `READ_BODY` and reading on, and closes it at the end."""

    provider: str
    wire: WireRequest
    timeout: float
    connect_timeout: float
    total_timeout: float | None = None  # the whole stream's limit: the request's deadline
    deployment: str = ""  # as in `Send`
    urgent: bool = False


class _ReadBody:
    """Read the whole body (an error status). Sends back bytes."""


READ_BODY = _ReadBody()

# A plain list of chunks is the hot path's one action: pass them on to the caller, then read on
# and send back the complete lines of the next network read (a list, maybe empty), or None at
# the end of the body. So a read costs one round trip into the attempt however many events it
# brought, and the first such action is an empty list. Should the caller stop reading before the
# last of them, the driver gives the rest back (`StreamAttempt.withdraw`) and throws
# `GeneratorExit` (or `CancelledError`) in.
ReadOn = list["StreamChunk"]


class Emit(NamedTuple):
    """Pass `chunk` on to the caller without reading on (the last chunk, or those a stream's
    end left over). Sends back None; when the caller stops reading, the driver throws
    `GeneratorExit` (or `CancelledError`) back in instead."""

    chunk: StreamChunk


PumpAction = Open | _ReadBody | ReadOn | Emit | Book | Release
