"""What the gateway writes to its logs: one access line per request, and a line for every
error answer, in words that never carry an API key, a prompt or a completion.

* `starcoder_router.access` (INFO): method, path (no query string), status, duration, tenant
  name, request id. On by default; `[server] access_log = false` or `serve --no-access-log`
  turns it off.
* `starcoder_router.server`: a WARNING for every 5xx (for a failed upstream: which deployments
  were tried and how each failed, by status and error class), an INFO for every 4xx the
  gateway decided (its code and message, which is what the client was told), and the traceback
  of anything unexpected.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .._errors import ProviderError

if TYPE_CHECKING:
    from aiohttp import web

    from .problems import Problem

__all__ = ["access_logger", "log_access", "log_problem"]

access_logger = logging.getLogger("starcoder_router.access")
logger = logging.getLogger("starcoder_router.server")

_MAX_MESSAGE = 300  # a problem's message can quote a client-chosen name: keep lines short


def log_access(request: web.Request, status: int, seconds: float, tenant: str | None,
               rid: str) -> None:
    if access_logger.isEnabledFor(logging.INFO):
        access_logger.info("%s %s %d %.1fms tenant=%s request_id=%s", request.method,
                           request.path[:200], status, seconds * 1000, tenant or "-", rid)


def log_problem(problem: Problem, exc: BaseException, rid: str) -> None:
    """One line for an error answer (a traceback for a 500)."""
    if problem.status == 500:
        logger.error("request %s failed", rid, exc_info=exc)
    elif problem.status >= 500:
        logger.warning("request %s: %d %s%s", rid, problem.status, problem.code or problem.type,
                       _upstream(exc))
    else:
        logger.info("request %s: %d %s: %s", rid, problem.status, problem.code or problem.type,
                    problem.message[:_MAX_MESSAGE])


def _upstream(exc: BaseException) -> str:
    """Which deployments failed and how: names, statuses and error classes only (a provider's
    message can echo the prompt)."""
    if not isinstance(exc, ProviderError):
        return ""
    tried = [a for a in exc.attempts if a.error is not None] or []
    parts = [f"{a.deployment} {_how(a.error)}" for a in tried if a.error is not None]
    if not parts:
        parts = [f"{exc.deployment or '?'} {_how(exc)}"]
    return "; tried " + ", ".join(parts)


def _how(err: ProviderError) -> str:
    status = f"HTTP {err.status_code}" if err.status_code is not None else "no answer"
    return f"{type(err).__name__} ({status})"
