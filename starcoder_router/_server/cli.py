"""`starcoder-router serve`: run the gateway.

    starcoder-router serve --config router.toml --port 8080 --workers 2
    starcoder-router serve --hash-key "$KEY"      # the digest to put in [[server.tenants]]

Without a `[store]` the spend is kept in a SQLite file, `spend.db` in the state directory
(`state_dir.py`), so a restart remembers it and several workers (they share the port with
SO_REUSEPORT) share one set of budgets; a Redis store also shares rate limits and health across
machines. A memory store with several workers is refused: each worker would keep its own
budgets, and together they could spend each one N times.

On SIGINT/SIGTERM each worker stops accepting, lets in-flight requests finish for
`shutdown_timeout_s`, then cancels the rest (a cancelled stream books what it cost).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

# The event loop, sockets and processes are imported where they are used: `--help` builds this
# command's parser and should not pay for them.
if TYPE_CHECKING:
    import argparse
    import asyncio

__all__ = ["add_parser", "run_serve"]


def add_parser(sub: Any) -> None:
    """Add the `serve` command to the CLI's subparsers."""
    from .._argtypes import port, positive_int

    p = sub.add_parser("serve", help="run the HTTP gateway (OpenAI, Ollama and TGI protocols)")
    p.add_argument("--config", help="a router config file (TOML), with an optional [server]")
    p.add_argument("--host", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=port, help="port (default 8080)")
    p.add_argument("--workers", type=positive_int, default=1, help="processes sharing the port")
    p.add_argument("--state-dir", metavar="DIR",
                   help="where the spend database is kept when the config has no [store] "
                        "(default: $STARCODER_ROUTER_STATE_DIR, $XDG_STATE_HOME/starcoder-router "
                        "or ~/.local/state/starcoder-router)")
    p.add_argument("--no-access-log", action="store_true",
                   help="do not log a line per request (on by default)")
    p.add_argument("--hash-key", metavar="KEY",
                   help="print the SHA-256 digest of an API key for [[server.tenants]] and exit")
    p.set_defaults(func=run_serve, own_logging=True)


def run_serve(args: argparse.Namespace) -> int:
    if args.hash_key:
        from .tenants import hash_key

        print(hash_key(args.hash_key))
        return 0
    from .settings import load_server_settings

    settings = load_server_settings(args.config)
    updates: dict[str, Any] = {k: v for k, v in (("host", args.host), ("port", args.port),
                                                 ("state_dir", args.state_dir)) if v is not None}
    if args.no_access_log:
        updates["access_log"] = False
    if updates:
        settings = settings.model_copy(update=updates)
    workers = max(1, int(args.workers))
    store_kind: str | None = None
    if args.config is not None:
        from .._config import load_config

        # A broken config says so here (ConfigError), not per worker.
        cfg = load_config(args.config)
        store_kind = cfg.store.kind if cfg.store is not None else None
    problem = _cannot_serve(settings.host, settings.port) or _cannot_share(store_kind, workers)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    spend_db: str | None = None
    if store_kind is None:
        from .state_dir import open_default_store

        spend_db = str(open_default_store(settings.state_dir))  # ConfigError before the banner
    _configure_logging()
    # One banner, from the process the user started (the workers print nothing of their own).
    many = f"{workers} workers, " if workers > 1 else ""
    print(f"starcoder-router gateway on http://{settings.host}:{settings.port} "
          f"({many}{_loop_name()} loop)", file=sys.stderr, flush=True)
    if spend_db is not None:
        print(f"spend kept in {spend_db}", file=sys.stderr, flush=True)
    raw = settings.model_dump()
    if workers == 1:
        _serve(args.config, raw, False, spend_db)
        return 0
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    children = [ctx.Process(target=_serve, args=(args.config, raw, True, spend_db),
                            daemon=False) for _ in range(workers - 1)]
    for child in children:
        child.start()

    # SIGINT/SIGTERM stop this worker gracefully; then the others stop.
    try:
        _serve(args.config, raw, True, spend_db)
    finally:
        for child in children:
            if child.is_alive():
                child.terminate()
            child.join()
    return 0


def _serve(config: str | None, raw_settings: dict[str, Any], reuse_port: bool,
           spend_db: str | None) -> None:
    """One worker: build the gateway inside the event loop and serve until signalled.
    `spend_db`: the default SQLite store's file (None when the config names a store)."""
    import asyncio

    loop = _new_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(_serve_until_signalled(config, raw_settings, reuse_port,
                                                       spend_db, loop))
    finally:
        asyncio.set_event_loop(None)
        loop.close()


async def _serve_until_signalled(config: str | None, raw_settings: dict[str, Any],
                                 reuse_port: bool, spend_db: str | None,
                                 loop: asyncio.AbstractEventLoop) -> None:
    import asyncio
    import contextlib
    import signal

    from .app import create_app, listen
    from .gateway import Gateway
    from .settings import ServerSettings

    settings = ServerSettings(**raw_settings)
    _configure_logging()  # a spawned worker starts with logging unconfigured
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        # Windows' loops have no signal handlers: Ctrl-C ends run_until_complete instead.
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    overrides: dict[str, Any] = {"settings": settings}
    if not _config_names_tokenizer(config):
        from .._routing.tokens import LazyCounter

        # A gateway operator names a tokenizer in the config file, not as a Python argument.
        overrides["tokenizer"] = LazyCounter(advice=SERVE_TOKENIZER_ADVICE)
    if spend_db is not None:
        from .._stores.sqlite import SQLiteStore

        overrides["store"] = SQLiteStore(spend_db)
    app = create_app(Gateway.from_config(config, **overrides))
    runner = await listen(app, settings, host=settings.host, port=settings.port,
                          reuse_port=reuse_port)
    _settle_the_heap()
    try:
        await stop.wait()
    finally:
        # Stops accepting, lets in-flight requests run for shutdown_timeout_s, then cancels.
        await runner.cleanup()


SERVE_TOKENIZER_ADVICE = 'set tokenizer = "/path/to/tokenizer.json" in the config file'


def _config_names_tokenizer(config: str | None) -> bool:
    if config is None:
        return False
    from .._config import load_config

    return load_config(config).tokenizer is not None


# Collections of the youngest generation: after this many more container objects were made
# than freed (Python's default is 700; see `gc.set_threshold`).
GC_YOUNG_THRESHOLD = 10_000


def _settle_the_heap() -> None:
    """Once the worker is up: move everything made so far (modules, schemas, the app) out of the
    cyclic collector's sight with `gc.freeze()` (https://docs.python.org/3/library/gc.html), and
    collect the young generation less often. A request frees nearly all it makes by reference
    counting, but with dozens in flight the default threshold of 700 ran a young collection
    every few requests and each of them walked every request's live objects; the full
    collections walked the whole heap. Measured at 64 clients, the collector took 10 to 15% of
    the worker's time (about 60 us a request with the heap frozen, 150 us without); with both
    changes under 1%. Cycles are still collected, a little later."""
    import gc

    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


def _cannot_serve(host: str, port: int) -> str | None:
    """Why the gateway could not start, checked before anything is printed or spawned: the
    `server` extra missing, or the address taken."""
    import errno
    import socket

    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        return ("the gateway needs prometheus-client (its /metrics): "
                "pip install 'starcoder-router[server]'")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        return f"cannot resolve {host!r}: {exc.strerror or exc}"
    for family, kind, proto, _, address in infos[:1]:
        with socket.socket(family, kind, proto) as probe:
            if hasattr(socket, "SO_REUSEADDR") and sys.platform != "win32":
                # As the listener will: a port whose old connections linger is still free.
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return f"cannot listen on {host}:{port}: the address is already in use"
                return f"cannot listen on {host}:{port}: {exc.strerror or exc}"
    return None


def _cannot_share(store_kind: str | None, workers: int) -> str | None:
    """Why these workers could not share their budgets: a memory store is per process."""
    if store_kind != "memory" or workers == 1:
        return None
    return (f"a memory store keeps each worker's spend apart, so {workers} workers could spend "
            f"every budget {workers} times over; use [store] kind = \"sqlite\" (with a path) or "
            f"\"redis\" (with a url), or leave out [store] for the default SQLite file in the "
            f"state directory, or run one worker")


def _configure_logging() -> None:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")


def _loop_name() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def _new_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop when installed (the `server` extra brings it on Linux and macOS):
    it cuts the gateway's own time per request; else asyncio's."""
    import asyncio

    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop
