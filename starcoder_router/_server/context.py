"""The request a router hook's attempt belongs to, when the gateway made it.

The gateway sets `current_call` around each call into the router; hooks run in the same task,
so metrics and spans of an attempt can name the tenant and the requested model. Outside the
gateway it is None.
"""

from __future__ import annotations

import contextvars
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from .tenants import TokenHold

__all__ = ["CallContext", "current_call"]


class CallContext(NamedTuple):
    request_id: str
    model: str
    tenant: str | None
    protocol: str
    hold: TokenHold | None = None  # the tokens this request holds; its attempts add usage


current_call: contextvars.ContextVar[CallContext | None] = contextvars.ContextVar(
    "starcoder_router_gateway_call", default=None)
