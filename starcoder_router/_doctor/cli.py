"""`starcoder-router doctor`: the plan, the consent for paid requests, the run, the output.

    starcoder-router doctor --config router.toml
    starcoder-router doctor --config router.toml --deployment fireworks/starcoder2-7b --yes \\
        --write router.overrides.toml
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence

from .._clock import SystemClock
from .._config import ProviderSettings, load_config
from .._errors import ConfigError
from .._routing.catalog import Catalog, Deployment
from .._routing.tokens import TokenCounter, load_token_counter
from .._running.core import RouterCore
from .._transports.httpx_transport import HttpxTransport
from .overrides import DeploymentOverride, dump_overrides, read_overrides
from .probes import Finding
from .report import learned_overrides, plan_text, report_json, report_table
from .runner import probe_deployment
from .session import DeploymentReport

__all__ = ["run"]


def run(args: argparse.Namespace, *, ask: Callable[[str], str] | None = None) -> int:
    """The command. Exit status 0, 1 when a deployment could not be reached, or 130 when it
    was interrupted (the findings and the spend so far are still shown). `ask` reads the
    answer to the confirmation (default: `input`, on a terminal only)."""
    catalog, providers, tokenizer = _configured(args.config)
    deployments = _selected(catalog, args.deployment)
    # The tokenizer the config names, else one found locally (never downloaded): with it,
    # usage is checked against exact counts.
    counter = load_token_counter(tokenizer)
    core = RouterCore(catalog=catalog, policy=None, providers=providers, counter=counter,
                      retry=None, health=None, hooks=None, clock=SystemClock(),
                      env=dict(os.environ))
    # A broken overrides file is reported before anything is spent, not after.
    existing = read_overrides(args.write) if args.write and os.path.isfile(args.write) else {}
    info = sys.stderr if args.json else sys.stdout
    print(plan_text(deployments), file=info, flush=True)
    hosted = [d for d in deployments if not d.is_local]
    allowed = not hosted or args.yes or _confirmed(ask or input, len(hosted))
    if not allowed:
        print(f"\nhosted probes cost money and need --yes (or a yes at a terminal); not "
              f"probing {', '.join(d.name for d in hosted)}", file=sys.stderr)
    reports: list[DeploymentReport] = []
    transport = HttpxTransport()
    try:
        for i, dep in enumerate(deployments):
            reports.append(_probe(core, dep, transport, allowed or dep.is_local, counter))
            if reports[-1].interrupted:
                reports += [_skipped(d, "interrupted") for d in deployments[i + 1:]]
                break
    finally:
        transport.close()
    interrupted = any(r.interrupted for r in reports)
    if interrupted:
        print("\ninterrupted: what was found and spent until then follows", file=sys.stderr)
    if args.json:
        print(json.dumps(report_json(reports), indent=2))
    else:
        print("\n" + report_table(reports))
    if args.write:
        _write(args.write, existing, reports)
        print(f"wrote the measured figures to {args.write}", file=info)
    if interrupted:
        return 130
    reached = all(r.findings and r.findings[0].status != "failed" for r in reports)
    return 0 if reached else 1


def _configured(path: str | None
                ) -> tuple[Catalog, dict[str, ProviderSettings], str | None]:
    if not path:
        return Catalog.default(), {}, None
    # The config's claims, without what an earlier run measured: each run measures afresh.
    cfg = load_config(path, overrides=False)
    return cfg.catalog, dict(cfg.providers), cfg.tokenizer


def _selected(catalog: Catalog, names: Sequence[str] | None) -> list[Deployment]:
    if not names:
        return list(catalog.deployments)
    return [catalog.deployment(n) for n in dict.fromkeys(names)]  # ConfigError names a stray


def _confirmed(ask: Callable[[str], str], hosted: int) -> bool:
    if not sys.stdin.isatty():
        return False
    try:
        answer = ask(f"\nSend the hosted probes to {hosted} deployment(s)? [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def _probe(core: RouterCore, dep: Deployment, transport: HttpxTransport, allowed: bool,
           counter: TokenCounter) -> DeploymentReport:
    if not allowed:
        return _skipped(dep, "hosted probes not confirmed (--yes)")
    adapter = core.adapter(dep.provider)
    endpoint = core.endpoint(dep.provider, dep.base_url)
    not_ready = adapter.not_ready_reason(endpoint)
    if not_ready:
        return _skipped(dep, not_ready)
    return probe_deployment(dep, adapter, endpoint, transport, counter=counter)


def _skipped(dep: Deployment, why: str) -> DeploymentReport:
    return DeploymentReport(dep, [Finding("reach", "skipped", why)])


def _write(path: str, existing: Mapping[str, DeploymentOverride],
           reports: Sequence[DeploymentReport]) -> None:
    """Merge what was learned into `path`, keeping entries for deployments not probed now."""
    learned = learned_overrides(reports, dt.datetime.now(dt.UTC).replace(microsecond=0))
    text = dump_overrides({**existing, **learned})
    try:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        raise ConfigError(f"cannot write it: {exc.strerror or exc}", source=path) from None
