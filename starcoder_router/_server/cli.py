"""`starcoder-router serve`: run the gateway.

    starcoder-router serve --config router.toml --port 8080 --workers 2
    starcoder-router serve --hash-key "$KEY"      # the digest to put in [[server.tenants]]

Several workers share the port (SO_REUSEPORT); give them a SQLite or Redis store so that they
share budgets and rate limits too. On SIGINT/SIGTERM each worker stops accepting, lets in-flight
requests finish for `shutdown_timeout_s`, then cancels the rest (a cancelled stream books what it
cost).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import multiprocessing
import sys
from typing import Any

__all__ = ["add_parser", "run_serve"]


def add_parser(sub: Any) -> None:
    """Add the `serve` command to the CLI's subparsers."""
    p = sub.add_parser("serve", help="run the HTTP gateway (OpenAI, Ollama and TGI protocols)")
    p.add_argument("--config", help="a router config file (TOML), with an optional [server]")
    p.add_argument("--host", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default 8080)")
    p.add_argument("--workers", type=int, default=1, help="processes sharing the port")
    p.add_argument("--hash-key", metavar="KEY",
                   help="print the SHA-256 digest of an API key for [[server.tenants]] and exit")
    p.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    if args.hash_key:
        from .tenants import hash_key

        print(hash_key(args.hash_key))
        return 0
    from .settings import load_server_settings

    settings = load_server_settings(args.config)
    updates = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    if updates:
        settings = settings.model_copy(update=updates)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    workers = max(1, int(args.workers))
    if workers == 1:
        _serve(args.config, settings.model_dump(), reuse_port=False)
        return 0
    ctx = multiprocessing.get_context("spawn")
    children = [ctx.Process(target=_serve, args=(args.config, settings.model_dump(), True),
                            daemon=False) for _ in range(workers - 1)]
    for child in children:
        child.start()

    # SIGINT/SIGTERM stop this worker gracefully; then the others stop.
    try:
        _serve(args.config, settings.model_dump(), reuse_port=True)
    finally:
        for child in children:
            if child.is_alive():
                child.terminate()
            child.join()
    return 0


def _serve(config: str | None, raw_settings: dict[str, Any], reuse_port: bool) -> None:
    """One worker: build the gateway inside the event loop and serve until signalled."""
    loop = _new_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(_serve_until_signalled(config, raw_settings, reuse_port, loop))
    finally:
        asyncio.set_event_loop(None)
        loop.close()


async def _serve_until_signalled(config: str | None, raw_settings: dict[str, Any],
                                 reuse_port: bool, loop: asyncio.AbstractEventLoop) -> None:
    import signal

    from .app import create_app, listen
    from .gateway import Gateway
    from .settings import ServerSettings

    settings = ServerSettings(**raw_settings)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        # Windows' loops have no signal handlers: Ctrl-C ends run_until_complete instead.
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    app = create_app(Gateway.from_config(config, settings=settings))
    runner = await listen(app, settings, host=settings.host, port=settings.port,
                          reuse_port=reuse_port)
    print(f"starcoder-router gateway on http://{settings.host}:{settings.port} "
          f"({type(loop).__module__.split('.')[0]} loop)", file=sys.stderr, flush=True)
    try:
        await stop.wait()
    finally:
        # Stops accepting, lets in-flight requests run for shutdown_timeout_s, then cancels.
        await runner.cleanup()


def _new_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop when installed (the `server` extra brings it on Linux and macOS):
    it cuts the gateway's own time per request; else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop
