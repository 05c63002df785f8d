"""The `starcoder-router` command: inspect the catalog, explain routing decisions, run a
request, report spend, find local servers. `catalog` and `route` are offline and need no API keys.

    starcoder-router catalog
    starcoder-router route "def fib(n):" --max-tokens 128
    starcoder-router route --prefix-file before.py --suffix-file after.py --min-quality humaneval:35
    starcoder-router complete "def fib(n):" --max-tokens 64 --stream
    starcoder-router spend --store sqlite --path spend.db --by tenant
    starcoder-router discover --verbose
    starcoder-router doctor --config router.toml --write router.overrides.toml
    starcoder-router fake-server --port 8400    # a loopback stand-in provider
    starcoder-router simulate examples/workload.jsonl --report report.html
    starcoder-router serve --config router.toml --port 8080

A user's mistake (a missing file, a malformed flag) is one line on stderr and exit status 2; a
request that ran and failed is status 1; a closed pipe (`| head -1`) ends quietly with 141.
Never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ._argtypes import non_negative_float, port, positive_float, positive_int, temperature
from ._errors import (
    ConfigError,
    InvalidRequestError,
    InvalidResponseError,
    MissingDependencyError,
    NoRouteError,
    StarcoderRouterError,
)

if TYPE_CHECKING:
    from ._routing.catalog import Catalog
    from ._running.results import Completion
    from ._running.sync_router import Router

__all__ = ["main"]

# How the estimate notice tells a command-line user to name a tokenizer.
CLI_TOKENIZER_ADVICE = "pass --tokenizer PATH (a tokenizer.json)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if getattr(args, "own_logging", False):
        # `serve` logs as a server does (timestamps, the access log at INFO) in every worker.
        return _run(args)
    # The library's warnings (e.g. that token counts are estimated) go to stderr as one plain
    # line each; `discover -v` lowers the level to show every probe.
    # The handler, not only the logger, holds the level: a host process (or an earlier command
    # in it) may have left the library's logger at INFO, and a command prints warnings only.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.setLevel(logging.DEBUG if getattr(args, "verbose", False) else logging.WARNING)
    logger = logging.getLogger("starcoder_router")
    level = logger.level
    logger.addHandler(handler)
    if not level:
        logger.setLevel(logging.WARNING)
    try:
        return _run(args)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _run(args: argparse.Namespace) -> int:
    try:
        return int(args.func(args))
    except NoRouteError as exc:
        # The table already gives each deployment's reasons; the error line only adds what the
        # table cannot show (a deployment chosen but then skipped, e.g. cooling down).
        print(exc.decision.explain(), file=sys.stderr)
        print("\nerror: no deployment can serve this request", file=sys.stderr)
        for name, why in exc.skipped.items():
            print(f"  - {name}: {why}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        flag = _FLAGS.get(exc.field or "") if exc.source is None else None
        print(f"error: {flag}: {exc.detail}" if flag else f"error: {exc}", file=sys.stderr)
        return 2
    except (InvalidRequestError, MissingDependencyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except StarcoderRouterError as exc:  # the request ran and failed: provider, budget, store
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader went away (`| head -1`). Point stdout at /dev/null so the interpreter's
        # final flush does not fail again (Python docs, "Note on SIGPIPE" in the signal module).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        return 130
    except OSError as exc:  # a file named on the command line
        where = f" {exc.filename}" if exc.filename else ""
        print(f"error: cannot read{where}: {exc.strerror or exc}", file=sys.stderr)
        return 2


class _HelpFormatter(argparse.HelpFormatter):
    """Shows each option's default in `--help`, unless there is none to show (None, off, an
    empty list) or the help text already says it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        nothing = default is None or default is False or default in ([], argparse.SUPPRESS)
        if nothing or "default" in text or not action.option_strings:
            return action.help
        return f"{text} (default: %(default)s)".lstrip()


class _Parser(argparse.ArgumentParser):
    """Every command's parser: no prefix matching (`--max-token` is a mistake, not
    `--max-tokens`) and defaults shown in `--help`. Subcommands inherit it, since
    `add_subparsers` builds them with the parent's class."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)


# The command-line flag behind a value an error names (store and policy fields), so that an
# error says `--min-quality`, not the keyword argument the flag became.
_FLAGS = {"kind": "--store", "path": "--path", "url": "--url", "period": "--period",
          "policy.min_quality": "--min-quality", "policy.objective": "--objective"}


def _parser() -> argparse.ArgumentParser:
    # Only argparse here: `--help` and `--version` must not pay for pydantic, httpx or aiohttp.
    # Each command imports what it needs when it runs.
    from . import __version__

    p = _Parser(prog="starcoder-router",
                description="Route StarCoder 2 requests across providers.")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(required=True, metavar="command")

    cat = sub.add_parser("catalog", help="list variants and deployments")
    cat.add_argument("--config", help="a router config file (TOML) to apply")
    cat.add_argument("--variants", action="store_true", help="show variants and scores")
    cat.set_defaults(func=_cmd_catalog)

    route = sub.add_parser("route", help="explain where a request would go (no I/O)")
    _request_arguments(route)
    route.add_argument("--structured", action="store_true", help="ask for JSON output")
    route.add_argument("--stream", action="store_true", help="plan for a streamed request")
    route.add_argument("--require-keys", action="store_true",
                       help="refuse hosted providers whose API key is not set (default: "
                            "plan as if every provider were configured)")
    route.set_defaults(func=_cmd_route)

    run = sub.add_parser("complete", help="run a request; the text goes to stdout, the "
                                          "deployment, tokens, cost and attempts to stderr")
    _request_arguments(run)
    run.add_argument("--stream", action="store_true", help="print the text as it arrives")
    run.add_argument("--json", action="store_true",
                     help="print the completion as JSON (with --stream: one JSON line per "
                          "chunk, then the completion)")
    run.add_argument("--structured", action="store_true", help="ask for a JSON object")
    run.add_argument("--temperature", type=temperature,
                     help="sampling temperature (default: the provider's)")
    run.add_argument("--tenant", help="count the spend against this tenant")
    run.set_defaults(func=_cmd_complete)

    _spend_and_local_commands(sub)

    from ._simulate.cli import add_commands  # workload from-code, simulate

    add_commands(sub)

    from ._server.cli import add_parser as add_serve_parser  # argparse only; no server imports

    add_serve_parser(sub)
    return p


def _spend_and_local_commands(sub: Any) -> None:
    """`spend`, `discover`, `doctor` and `fake-server`: the commands about what was spent and
    what serves it."""
    spend = sub.add_parser("spend", help="report recorded spend")
    spend.add_argument("--store", choices=["sqlite", "redis"], default="sqlite",
                       help="where the spend was recorded")
    spend.add_argument("--path", help="SQLite database file")
    spend.add_argument("--url", help="Redis URL")
    spend.add_argument("--prefix", default="scr:", help="Redis key prefix")
    spend.add_argument("--by", choices=["period", "tenant", "deployment"], default="period",
                       help="one row per")
    spend.add_argument("--period", choices=["hour", "day", "week", "month"], default="day",
                       help="the length of a period")
    spend.add_argument("--export", metavar="FILE",
                       help="write the raw ledger rows to FILE instead (.jsonl or .csv)")
    spend.set_defaults(func=_cmd_spend)

    disc = sub.add_parser("discover", help="probe local servers for StarCoder 2 models")
    disc.add_argument("--timeout", type=positive_float, default=0.5,
                      help="seconds to wait for each answer")
    disc.add_argument("--address", action="append", default=[], metavar="PROVIDER=URL",
                      help="probe only these, e.g. llamacpp=http://localhost:9931 (repeatable); "
                           "by default each local provider at STARCODER_ROUTER_<PROVIDER>_"
                           "BASE_URL or its usual port")
    disc.add_argument("--verbose", "-v", action="store_true",
                      help="list every address probed and what answered (on stderr)")
    disc.set_defaults(func=_cmd_discover)

    doc = sub.add_parser("doctor", help="measure what each configured deployment really does")
    doc.add_argument("--config", help="a router config file (TOML)")
    doc.add_argument("--deployment", action="extend", nargs="+", metavar="NAME",
                     help="probe only these (default: every deployment configured)")
    doc.add_argument("--json", action="store_true", help="print the findings as JSON")
    doc.add_argument("--write", metavar="FILE", help="write the measured figures (overrides)")
    doc.add_argument("--yes", action="store_true", help="send the hosted probes (they cost)")
    doc.set_defaults(func=_cmd_doctor)

    fake = sub.add_parser("fake-server", help="serve canned StarCoder answers on loopback, a "
                                               "stand-in provider for trying the CLI or gateway")
    fake.add_argument("--port", type=port, default=8400, help="the port on 127.0.0.1")
    fake.add_argument("--latency", type=non_negative_float, default=0.0, metavar="SECONDS",
                      help="wait this long before each answer")
    fake.set_defaults(func=_cmd_fake_server)


def _request_arguments(p: argparse.ArgumentParser) -> None:
    """What `route` and `complete` share: the request and the policy flags."""
    p.add_argument("prompt", nargs="?",
                   help="a left-to-right prompt (default: read from stdin)")
    p.add_argument("--prompt-file", help="read the prompt from a file")
    p.add_argument("--prefix-file", help="fill-in-the-middle: the code before the cursor")
    p.add_argument("--suffix-file", help="fill-in-the-middle: the code after the cursor")
    p.add_argument("--max-tokens", type=positive_int, default=256,
                   help="the most tokens to generate")
    p.add_argument("--objective", choices=["cheapest", "quality", "latency", "balanced"],
                   help="what to rank deployments by (default: the config's, else cheapest)")
    p.add_argument("--min-quality", metavar="BENCHMARK:SCORE", type=_quality_floor,
                   help="e.g. humaneval:35")
    p.add_argument("--max-cost", type=positive_float, metavar="USD",
                   help="per-request worst-case cap")
    p.add_argument("--prefer-local", action="store_true",
                   help="rank local servers first while they can take the request")
    p.add_argument("--tokenizer", help="path to tokenizer.json for exact counts")
    p.add_argument("--config", help="a router config file (TOML)")


def _quality_floor(text: str) -> tuple[str, float]:
    bench, sep, score = text.partition(":")
    try:
        value = float(score)
    except ValueError:
        value = math.nan
    if not sep or not bench.strip() or not math.isfinite(value):
        raise argparse.ArgumentTypeError(
            f"want BENCHMARK:SCORE, e.g. humaneval:35, got {text!r}")
    return bench, value


def _catalog(args: argparse.Namespace) -> Catalog:
    from ._config import load_config
    from ._routing.catalog import Catalog

    if getattr(args, "config", None):
        return load_config(args.config).catalog
    return Catalog.default()


def _cmd_catalog(args: argparse.Namespace) -> int:
    from ._text import text_table

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
    from ._stores.memory import MemoryStore

    fields = _request_fields(args)
    env = dict(os.environ) if args.require_keys else _planning_env(args.config)
    # Routing needs no spend store: do not open (or create) the one a config file names.
    router = _router(args, env=env, store=MemoryStore())
    with router:
        decision = router.route(**fields)
    print(decision.explain())
    kinds = {c.count_kind for c in decision.candidates if c.count_kind}
    # The notice (logged when an estimate is made) already says how to count exactly.
    said = ("estimated (no tokenizer)" if "estimate" in kinds else
            "exact (tokenizer)" if "exact" in kinds else
            "proven bounds (the prompt's byte length; no count was needed)")
    print(f"\ntoken counts: {said}")
    return 0


def _planning_env(config: str | None) -> dict[str, str]:
    """The environment with a placeholder for every key variable a provider would read (its
    usual ones, or the `api_key_env` the config names). Routing does no I/O, so the placeholder
    only marks the provider as configured; nothing is ever sent with it."""
    from ._config import load_config
    from ._providers.registry import PROVIDERS, provider_class

    names: set[str] = set()
    for provider in PROVIDERS:
        cls = provider_class(provider)
        if cls.key_required:
            names.update(cls.key_envs)
    if config:
        names.update(s.api_key_env for s in load_config(config).providers.values()
                     if s.api_key_env)
    env = dict(os.environ)
    for name in sorted(names):
        env.setdefault(name, "planning-only")
    return env


def _cmd_complete(args: argparse.Namespace) -> int:
    fields = _request_fields(args)
    if args.temperature is not None:
        fields["temperature"] = args.temperature
    if args.tenant is not None:
        fields["tenant"] = args.tenant
    with _router(args, env=dict(os.environ)) as router:
        try:
            if args.stream:
                completion = _stream_out(router, fields, args.json)
            else:
                completion = router.complete(**fields)
                text = json.dumps(_as_json(completion)) if args.json else completion.text
                sys.stdout.write(_line(text))
            sys.stdout.flush()
        finally:
            router.store.close()
    print(_summary(completion), file=sys.stderr)
    return 0


def _stream_out(router: Router, fields: dict[str, Any], as_json: bool) -> Completion:
    with router.stream(**fields) as stream:
        for chunk in stream:
            if not chunk.text:  # the closing chunk only says why the stream ended; the
                continue        # completion printed last says it too
            if as_json:
                print(json.dumps({"text": chunk.text}), flush=True)
            else:
                print(chunk.text, end="", flush=True)
    completion = stream.completion
    if completion is None:
        raise InvalidResponseError("the stream ended without a completion")
    sys.stdout.write(_line(json.dumps(_as_json(completion))) if as_json else
                     "" if completion.text.endswith("\n") else "\n")
    return completion


def _line(text: str) -> str:
    return text if text.endswith("\n") else text + "\n"


def _as_json(c: Completion) -> dict[str, Any]:
    return {
        "text": c.text, "deployment": c.deployment.name, "model": c.model or c.deployment.model,
        "finish_reason": c.finish_reason,
        "usage": {"prompt_tokens": c.usage.prompt_tokens,
                  "completion_tokens": c.usage.completion_tokens, "source": c.usage.source},
        "cost_usd": c.cost_usd, "total_cost_usd": c.total_cost_usd,
        "latency_s": c.latency_s, "request_id": c.request_id,
        "attempts": [{"deployment": a.deployment, "outcome": a.outcome,
                      "latency_s": a.latency_s, "cost_usd": a.cost_usd,
                      "error": str(a.error) if a.error else None} for a in c.attempts],
        "warnings": list(c.warnings),
    }


def _summary(c: Completion) -> str:
    failed = sum(a.outcome != "ok" for a in c.attempts)
    tries = f"{len(c.attempts)} attempt(s)" + (f", {failed} failed" if failed else "")
    return (f"{c.deployment.name}: {c.usage.prompt_tokens} prompt + "
            f"{c.usage.completion_tokens} completion tokens, ${c.cost_usd:.8f}, {tries}, "
            f"finish {c.finish_reason}")


def _request_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The request from the prompt argument, a prompt file, FIM files, or stdin: exactly one."""
    fim = bool(args.prefix_file or args.suffix_file)
    given = [name for name, present in (("a prompt argument", args.prompt is not None),
                                         ("--prompt-file", bool(args.prompt_file)),
                                         ("--prefix-file/--suffix-file", fim)) if present]
    if len(given) > 1:
        raise InvalidRequestError(f"give one of a prompt argument, --prompt-file or "
                                  f"--prefix-file/--suffix-file, not {' and '.join(given)}")
    fields: dict[str, Any] = {"max_tokens": args.max_tokens}
    if fim:
        fields["prefix"] = _read(args.prefix_file) if args.prefix_file else ""
        fields["suffix"] = _read(args.suffix_file) if args.suffix_file else ""
    elif args.prompt_file:
        fields["prompt"] = _read(args.prompt_file)
    elif args.prompt is not None:
        fields["prompt"] = args.prompt
    else:
        if sys.stdin.isatty():
            print("reading the prompt from stdin (end it with Ctrl-D)...", file=sys.stderr)
        fields["prompt"] = sys.stdin.read()
    if args.structured:
        fields["response_format"] = {"type": "json_object"}
    if args.stream:
        fields["stream"] = True
    return fields


def _router(args: argparse.Namespace, *, env: dict[str, str], **kwargs: Any) -> Router:
    """One router from the config file (if any) and the policy flags on top of it."""
    from ._config import load_config
    from ._routing.policy import CostPolicy, QualityFloor
    from ._routing.tokens import LazyCounter
    from ._running.sync_router import Router

    kwargs["tokenizer"] = args.tokenizer or LazyCounter(advice=CLI_TOKENIZER_ADVICE)
    policy = load_config(args.config).policy if args.config else CostPolicy()
    updates: dict[str, Any] = {}
    if args.objective:
        updates["objective"] = args.objective
    if args.min_quality:
        updates["min_quality"] = QualityFloor(benchmark=args.min_quality[0],
                                              score=args.min_quality[1])
    if args.max_cost is not None:
        updates["max_cost_per_request_usd"] = args.max_cost
    if args.prefer_local:
        updates["prefer_local"] = True
    if updates:
        policy = CostPolicy(**{**policy.model_dump(), **updates})
    if args.config:
        return Router.from_config(args.config, policy=policy, env=env, **kwargs)
    return Router(policy=policy, env=env, **kwargs)


def _cmd_spend(args: argparse.Namespace) -> int:
    from ._stores import open_store
    from ._stores.report import export_ledger, spend_report

    store = open_store(args.store, path=args.path, url=args.url, prefix=args.prefix,
                       must_exist=True)
    try:
        if args.export:
            count = export_ledger(store.ledger(), args.export)
            print(f"wrote {count} ledger rows to {args.export}")
        else:  # roll-ups: they outlive pruned raw rows and sum to the same tables
            grain = "hour" if args.period == "hour" else "day"
            rollups = store.rollups(grain=grain)  # type: ignore[attr-defined]
            print(spend_report(rollups, period=args.period, by=args.by))
    finally:
        store.close()
    return 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    from ._doctor.cli import run

    return run(args)


def _cmd_discover(args: argparse.Namespace) -> int:
    from ._discovery import discover_local, logger
    from ._text import text_table

    addresses = None
    if args.address:
        addresses = {}
        for item in args.address:
            provider, sep, url = item.partition("=")
            if not sep or not provider or not url:
                raise ConfigError(f"--address wants PROVIDER=URL, got {item!r}")
            addresses[provider] = url
    # Warnings always reach the user (an --address that yields nothing, see `main`); -v adds
    # every probe, its answer, and why a server that answered was skipped.
    if args.verbose:
        logger.setLevel(logging.DEBUG)
    found = discover_local(addresses=addresses, timeout=args.timeout)
    if not found:
        print("no local StarCoder 2 servers found")
        return 1
    rows: list[tuple[str, ...]] = [("deployment", "model", "window", "base url")]
    rows += [(d.name, d.model, str(d.context_window), d.base_url or "-") for d in found]
    print(text_table(rows))
    return 0


def _cmd_fake_server(args: argparse.Namespace) -> int:
    import time

    from .testing import FakeServer

    with FakeServer(port=args.port, latency_s=args.latency) as server:
        print(f"fake StarCoder 2 server (OpenAI completions) at {server.base_url}; point a "
              f"config at it:\n\n{_fake_config(server.base_url)}\nCtrl-C stops it.", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            return 0


def _fake_config(base_url: str) -> str:
    return ("[policy]\nallow_providers = ['openai-compatible']\n\n[[deployments]]\n"
            "name = 'fake/local'\nprovider = 'openai-compatible'\nvariant = 'starcoder2-3b'\n"
            f"model = 'fake-starcoder2'\ncontext_window = 16384\nbase_url = '{base_url}'\n"
            "input_usd_per_mtok = 0.0\noutput_usd_per_mtok = 0.0\n")


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except (UnicodeEncodeError, ValueError) as exc:  # a bad name, or content that is not UTF-8
        what = "is not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else (
            "is not a valid file name")
        raise InvalidRequestError(f"{path!r} {what}") from None


if __name__ == "__main__":
    raise SystemExit(main())
