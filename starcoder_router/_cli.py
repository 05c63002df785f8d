"""The `starcoder-router` command: inspect the catalog, explain routing decisions, report spend,
find local servers. `catalog` and `route` are offline and need no API keys.

    starcoder-router catalog
    starcoder-router route "def fib(n):" --max-tokens 128
    starcoder-router route --prefix-file before.py --suffix-file after.py --min-quality humaneval:35
    starcoder-router spend --store sqlite --path spend.db --by tenant
    starcoder-router discover
    starcoder-router serve --config router.toml --port 8080
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from ._config import load_config
from ._errors import ConfigError, NoRouteError, StarcoderRouterError
from ._routing.catalog import Catalog
from ._routing.policy import CostPolicy, QualityFloor
from ._text import text_table

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except NoRouteError as exc:
        print(exc.decision.explain(), file=sys.stderr)
        print(f"\nerror: {exc}", file=sys.stderr)
        return 2
    except StarcoderRouterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="starcoder-router",
                                description="Route StarCoder 2 requests across providers.")
    sub = p.add_subparsers(required=True, metavar="command")

    cat = sub.add_parser("catalog", help="list variants and deployments")
    cat.add_argument("--config", help="a router config file (TOML) to apply")
    cat.add_argument("--variants", action="store_true", help="show variants and scores")
    cat.set_defaults(func=_cmd_catalog)

    route = sub.add_parser("route", help="explain where a request would go (no I/O)")
    route.add_argument("prompt", nargs="?", help="a left-to-right prompt")
    route.add_argument("--prompt-file", help="read the prompt from a file")
    route.add_argument("--prefix-file", help="fill-in-the-middle: the code before the cursor")
    route.add_argument("--suffix-file", help="fill-in-the-middle: the code after the cursor")
    route.add_argument("--max-tokens", type=int, default=256)
    route.add_argument("--objective", choices=["cheapest", "quality", "latency", "balanced"])
    route.add_argument("--min-quality", metavar="BENCHMARK:SCORE",
                       help="e.g. humaneval:35")
    route.add_argument("--max-cost", type=float, metavar="USD",
                       help="per-request worst-case cap")
    route.add_argument("--prefer-local", action="store_true")
    route.add_argument("--structured", action="store_true", help="ask for JSON output")
    route.add_argument("--stream", action="store_true")
    route.add_argument("--tokenizer", help="path to tokenizer.json for exact counts")
    route.add_argument("--config", help="a router config file (TOML)")
    route.add_argument("--require-keys", action="store_true",
                       help="refuse hosted providers whose API key is not set (default: "
                            "plan as if every provider were configured)")
    route.set_defaults(func=_cmd_route)

    spend = sub.add_parser("spend", help="report recorded spend")
    spend.add_argument("--store", choices=["sqlite", "redis"], default="sqlite")
    spend.add_argument("--path", help="SQLite database file")
    spend.add_argument("--url", help="Redis URL")
    spend.add_argument("--prefix", default="scr:", help="Redis key prefix (default: scr:)")
    spend.add_argument("--by", choices=["period", "tenant", "deployment"], default="period")
    spend.add_argument("--period", choices=["hour", "day", "week", "month"], default="day")
    spend.set_defaults(func=_cmd_spend)

    disc = sub.add_parser("discover", help="probe local servers for StarCoder 2 models")
    disc.add_argument("--timeout", type=float, default=0.5)
    disc.add_argument("--address", action="append", default=[], metavar="PROVIDER=URL",
                      help="probe only these, e.g. llamacpp=http://localhost:9931 (repeatable)")
    disc.set_defaults(func=_cmd_discover)

    from ._server.cli import add_parser as add_serve_parser  # argparse only; no server imports

    add_serve_parser(sub)
    return p


def _catalog(args: argparse.Namespace) -> Catalog:
    if getattr(args, "config", None):
        return load_config(args.config).catalog
    return Catalog.default()


def _cmd_catalog(args: argparse.Namespace) -> int:
    catalog = _catalog(args)
    if args.variants:
        rows: list[tuple[str, ...]] = [("variant", "kind", "params", "window", "scores")]
        for v in catalog.variants.values():
            scores = ", ".join(f"{k} {s.value:g}" for k, s in v.scores.items())
            rows.append((v.id, v.kind, f"{v.parameters / 1e9:.2f}B", str(v.context_window),
                         scores))
        print(text_table(rows))
        return 0
    table: list[tuple[str, ...]] = [("deployment", "model", "window", "in $/1M", "out $/1M",
                                     "pricing", "capabilities", "as of")]
    for d in catalog.deployments:
        table.append((
            d.name, d.model, str(d.context_window), f"{d.input_usd_per_mtok:.2f}",
            f"{d.output_usd_per_mtok:.2f}", d.pricing, ",".join(sorted(d.capabilities)),
            str(d.as_of or "-"),
        ))
    print(text_table(table))
    return 0


def _cmd_route(args: argparse.Namespace) -> int:
    from ._running.sync_router import Router
    from ._stores.memory import MemoryStore

    fields: dict[str, Any] = {"max_tokens": args.max_tokens}
    if args.prefix_file or args.suffix_file:
        fields["prefix"] = _read(args.prefix_file) if args.prefix_file else ""
        fields["suffix"] = _read(args.suffix_file) if args.suffix_file else ""
    elif args.prompt_file:
        fields["prompt"] = _read(args.prompt_file)
    elif args.prompt is not None:
        fields["prompt"] = args.prompt
    else:
        fields["prompt"] = sys.stdin.read()
    if args.structured:
        fields["response_format"] = {"type": "json_object"}
    if args.stream:
        fields["stream"] = True

    env = dict(os.environ)
    if not args.require_keys:
        # Planning view: routing does no I/O, so a placeholder key only marks the provider as
        # configured; nothing is ever sent with it.
        env.setdefault("FIREWORKS_API_KEY", "planning-only")
        env.setdefault("DEEPINFRA_API_KEY", "planning-only")

    kwargs: dict[str, Any] = {"env": env}
    if args.tokenizer:
        kwargs["tokenizer"] = args.tokenizer
    policy = load_config(args.config).policy if args.config else CostPolicy()
    updates: dict[str, Any] = {}
    if args.objective:
        updates["objective"] = args.objective
    if args.min_quality:
        bench, _, score = args.min_quality.partition(":")
        updates["min_quality"] = QualityFloor(benchmark=bench, score=float(score or 0))
    if args.max_cost is not None:
        updates["max_cost_per_request_usd"] = args.max_cost
    if args.prefer_local:
        updates["prefer_local"] = True
    if updates:
        policy = CostPolicy(**{**policy.model_dump(), **updates})
    if args.config:
        # Routing needs no spend store: do not open (or create) the one the file names.
        router = Router.from_config(args.config, policy=policy, store=MemoryStore(), **kwargs)
    else:
        router = Router(policy=policy, **kwargs)
    decision = router.route(**fields)
    print(decision.explain())
    counter = router.token_counter
    print(f"\ntoken counts: {'exact (tokenizer)' if counter.exact else 'bounded/estimated'}")
    return 0


def _cmd_spend(args: argparse.Namespace) -> int:
    from ._stores import open_store
    from ._stores.report import spend_report

    store = open_store(args.store, path=args.path, url=args.url, prefix=args.prefix,
                       must_exist=True)
    try:
        print(spend_report(store.ledger(), period=args.period, by=args.by))
    finally:
        store.close()
    return 0


def _cmd_discover(args: argparse.Namespace) -> int:
    from ._discovery import discover_local

    addresses = None
    if args.address:
        addresses = {}
        for item in args.address:
            provider, sep, url = item.partition("=")
            if not sep or not provider or not url:
                raise ConfigError(f"--address wants PROVIDER=URL, got {item!r}")
            addresses[provider] = url
    found = discover_local(addresses=addresses, timeout=args.timeout)
    if not found:
        print("no local StarCoder 2 servers found")
        return 1
    rows: list[tuple[str, ...]] = [("deployment", "model", "window", "base url")]
    rows += [(d.name, d.model, str(d.context_window), d.base_url or "-") for d in found]
    print(text_table(rows))
    return 0


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as fh:
        return fh.read()


if __name__ == "__main__":
    raise SystemExit(main())
