"""Finding the StarCoder 2 models that local servers serve, on request only.

Example::

    from starcoder_router import Catalog, Router, discover_local

    found = discover_local()          # Ollama, vLLM, llama.cpp, LM Studio, TGI at their usual ports
    router = Router(catalog=Catalog.default().with_deployments(*found))

Each provider adapter says what to ask (`probe`, then `probe_more` for questions that depend on
the answers) and reads the answers (`discovered`); this module only sends the requests, with a
short timeout, and skips a server as soon as it cannot be reached. Nothing here runs at import
or when a router starts.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

import httpx

from ._errors import ConfigError, StarcoderRouterError
from ._providers.base import Provider
from ._providers.call import Endpoint
from ._providers.local import server_root
from ._providers.registry import provider_class
from ._routing.catalog import LOCAL_PROVIDERS, Deployment
from ._secrets import redact
from ._transports.base import WireRequest, WireResponse

__all__ = ["discover_local"]

logger = logging.getLogger("starcoder_router")

# Enough for Ollama's listing followed by one `/api/show` per model; a bound, not a plan.
_MAX_ROUNDS = 4


def discover_local(*, addresses: Mapping[str, str] | None = None, timeout: float = 0.5,
                   env: Mapping[str, str] | None = None) -> list[Deployment]:
    """Probe local inference servers and return a `Deployment` for each StarCoder 2 model found,
    ready for `Catalog.with_deployments(*found)`.

    `addresses` maps provider names to the base URLs to probe, e.g.
    `{"ollama": "http://gpu-box:11434", "llamacpp": "http://localhost:9931"}`; only those are
    probed. By default every local provider is probed at `STARCODER_ROUTER_<PROVIDER>_BASE_URL`
    from `env` when set (as a router would reach it), else at its adapter's usual address. Each
    probe and its answer is logged at DEBUG on the `starcoder_router` logger. `timeout`
    (seconds) bounds each request; a refused connection is skipped at once. API keys come from
    each provider's usual variables in `env` (default: `os.environ`), e.g. `LLAMA_API_KEY`.
    A provider whose adapter is not installed is skipped with a log message.
    """
    env = os.environ if env is None else env
    targets = _targets(addresses, env)
    # An address the caller named is worth a warning when it yields nothing; the usual ports,
    # probed on the off chance, only at DEBUG.
    quiet = logging.WARNING if addresses is not None else logging.DEBUG
    if not targets:
        return []
    limits = httpx.Timeout(timeout)
    with httpx.Client(timeout=limits, trust_env=False) as client, \
            ThreadPoolExecutor(max_workers=len(targets)) as pool:
        batches = pool.map(lambda t: _discover(client, t, env, timeout, quiet), targets)
        return [dep for batch in batches for dep in batch]


def _targets(addresses: Mapping[str, str] | None,
             env: Mapping[str, str]) -> list[tuple[str, Provider, str]]:
    """(name, adapter, base URL) for each provider to probe."""
    wanted = dict(addresses) if addresses is not None else {
        p: env.get(f"STARCODER_ROUTER_{p.upper().replace('-', '_')}_BASE_URL", "")
        for p in sorted(LOCAL_PROVIDERS)}
    targets = []
    for name, url in wanted.items():
        try:
            cls = provider_class(name)
        except ImportError:
            logger.info("discovery: no %s adapter is installed; skipped", name)
            continue
        if cls.probe is Provider.probe:
            probed = ", ".join(sorted(LOCAL_PROVIDERS))
            raise ConfigError(f"{name} cannot be discovered: only local servers ({probed}) "
                              f"answer probes; list it under [[deployments]] instead")
        targets.append((name, cls(), _base_url(url or cls.default_base_url, cls)))
    return targets


def _base_url(url: str, cls: type[Provider]) -> str:
    """`url` in the form the adapter expects: with `/v1` where its usual address has it (vLLM,
    TGI, LM Studio), without where it does not (Ollama, llama.cpp), whichever way it was given,
    so that a `.../v1` base is never probed at `.../v1/v1/models`."""
    root = server_root(url)
    return root + "/v1" if cls.default_base_url.rstrip("/").endswith("/v1") else root


def _discover(client: httpx.Client, target: tuple[str, Provider, str],
              env: Mapping[str, str], timeout: float, quiet: int) -> list[Deployment]:
    name, adapter, url = target
    endpoint = Endpoint(name, url, type(adapter).key_from_env(env), timeout, timeout)
    responses: list[WireResponse | None] = []
    requests = adapter.probe(endpoint)
    for _ in range(_MAX_ROUNDS):
        if not requests:
            break
        for request in requests:
            answer = _send(client, request)
            if answer is None and all(r is None for r in responses):
                logger.log(quiet, "discovery: nothing answers at %s (%s)", url, name)
                return []
            responses.append(answer)
        requests = adapter.probe_more(endpoint, responses)
    try:
        found = adapter.discovered(endpoint, responses)
    except (StarcoderRouterError, ValueError, KeyError, TypeError) as exc:
        # What a server answered may echo the key it was sent (an error page quoting the
        # Authorization header): scrub it before the text reaches a log.
        logger.warning("discovery: could not read what %s at %s answered: %s", name, url,
                       redact(str(exc), endpoint.api_key))
        return []
    if found:
        logger.info("discovery: %s at %s serves %s", name, url, ", ".join(d.model for d in found))
    else:
        answers = ", ".join("no answer" if r is None else str(r.status) for r in responses)
        logger.log(max(quiet, logging.INFO), "discovery: %s at %s answered (%s) but serves no "
                   "StarCoder 2 model; skipped", name, url, answers)
    return found


def _send(client: httpx.Client, request: WireRequest) -> WireResponse | None:
    try:
        resp = client.request(request.method, request.url, headers=request.headers,
                              content=request.body)
    except httpx.HTTPError as exc:
        logger.debug("discovery: %s %s -> no answer (%s)", request.method, request.url,
                     type(exc).__name__)
        return None
    logger.debug("discovery: %s %s -> %d", request.method, request.url, resp.status_code)
    return WireResponse(resp.status_code, resp.headers, resp.content)
