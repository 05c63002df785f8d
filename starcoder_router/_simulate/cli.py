"""The `workload from-code` and `simulate` commands (registered by `_cli`).

    starcoder-router workload from-code /usr/lib/python3.11 --requests 5000 -o workload.jsonl
    starcoder-router simulate workload.jsonl --config router.toml --report report.html
    starcoder-router simulate workload.jsonl --policy configured --policy largest --json
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
from typing import Any, Literal, TextIO

__all__ = ["add_commands"]


def add_commands(sub: Any) -> None:
    """Add the commands to the `starcoder-router` subparsers `sub`."""
    from .._argtypes import positive_float, positive_int
    from .names import SCENARIO_NAMES

    wl = sub.add_parser("workload", help="build workloads for `simulate`")
    wl_sub = wl.add_subparsers(required=True, metavar="source")
    code = wl_sub.add_parser("from-code", help="random cursor positions in a folder of code")
    code.add_argument("folder", help="the code to draw requests from")
    code.add_argument("--requests", type=positive_int, default=1000,
                      help="how many requests to draw")
    code.add_argument("--seed", type=int, default=0, help="the same seed draws the same workload")
    code.add_argument("--rate", type=positive_float, default=1.0, help="requests per second")
    code.add_argument("--tenants", default="ide=0.6,review-bot=0.3,batch=0.1",
                      metavar="NAME=WEIGHT,...", help="tenants and their share of requests")
    code.add_argument("--tokenizer", help="tokenizer.json for exact counts (default: the "
                                          "router's own search, else the estimate)")
    code.add_argument("--keep-text", action="store_true",
                      help="store the code itself, not only its token counts")
    code.add_argument("-o", "--output", help="write here instead of standard output")
    code.set_defaults(func=_cmd_from_code)

    sim = sub.add_parser("simulate", help="replay a workload offline and compare policies")
    sim.add_argument("workload", help="a JSON Lines workload")
    sim.add_argument("--config", help="a router config file (TOML), with its [simulate] section")
    sim.add_argument("--policy", action="append", choices=SCENARIO_NAMES,
                     help="simulate only these (repeatable; default: all)")
    sim.add_argument("--report", metavar="HTML", help="write a self-contained HTML report")
    sim.add_argument("--json", action="store_true", help="print a JSON summary instead")
    sim.add_argument("--autocomplete", choices=("off", "on", "both"),
                     help="editor sessions, typed-ahead reuse and the exact-repeat cache "
                          "(the config's [autocomplete]): simulate them off, on, or both "
                          "side by side (default: both when a request has a session)")
    sim.set_defaults(func=_cmd_simulate)


def _tenants(spec: str) -> dict[str, float]:
    from .._errors import ConfigError

    out = {}
    for part in spec.split(","):
        name, _, weight = part.partition("=")
        try:
            out[name.strip()] = float(weight or 1)
        except ValueError:
            raise ConfigError(f"bad tenant weight in {part!r} (expected NAME=WEIGHT)") from None
    if not out or any(not n for n in out) or not all(0 < w < math.inf for w in out.values()):
        raise ConfigError(f"bad --tenants {spec!r} (expected NAME=WEIGHT,...)")
    return out


def _cmd_from_code(args: argparse.Namespace) -> int:
    from .._cli import CLI_TOKENIZER_ADVICE
    from .._routing.tokens import LazyCounter, load_token_counter
    from .builder import build_from_code

    counter = load_token_counter(args.tokenizer or LazyCounter(advice=CLI_TOKENIZER_ADVICE))
    lines = build_from_code(args.folder, requests=args.requests, counter=counter,
                            seed=args.seed, rate=args.rate, tenants=_tenants(args.tenants),
                            keep_text=args.keep_text)
    # The build finds a missing folder or one without code at its first line: take that line
    # before opening the output, so a failed build leaves an earlier workload as it was.
    first = next(iter(lines), None)
    lines = itertools.chain([] if first is None else [first], lines)
    if args.output:
        with _open_for_writing(args.output) as f:
            _write(lines, f)
    else:
        _write(lines, sys.stdout)
    return 0


def _open_for_writing(path: str, mode: Literal["w", "a"] = "w") -> TextIO:
    from .._errors import ConfigError

    try:
        return open(path, mode, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None


def _check_writable(path: str) -> None:
    """Fail now if `path` cannot be written, leaving no file behind that was not there."""
    existed = os.path.exists(path)
    with _open_for_writing(path, "a"):  # "a": an existing report stays as it is for now
        pass
    if not existed:
        os.remove(path)


def _write(lines: Any, out: TextIO) -> None:
    for line in lines:
        out.write(line + "\n")


def _cmd_simulate(args: argparse.Namespace) -> int:
    from .names import SCENARIO_NAMES
    from .runner import simulate
    from .summary import summary_table
    from .wording import budget_label, refusal_in_words
    from .workload import stream_workload

    if args.report:  # before the simulation, not after minutes of it
        from .report import check_report_dependencies

        check_report_dependencies()
        _check_writable(args.report)
    # Checked line by line now, read again as it is simulated: never held in memory.
    workload = stream_workload(args.workload)
    for err in workload.errors[:20]:
        print(f"{args.workload}:{err.line}: skipped: {err.message}", file=sys.stderr)
    if len(workload.errors) > 20:
        print(f"... and {len(workload.errors) - 20} more invalid lines", file=sys.stderr)
    if not len(workload):
        from .._errors import ConfigError

        why = (f"none of its {len(workload.errors)} lines is a valid request" if workload.errors
               else "it is empty")
        raise ConfigError(f"nothing to simulate in {args.workload}: {why}")
    bar = _Progress(sys.stderr, len(workload))
    result = simulate(workload, config=args.config, policies=args.policy or SCENARIO_NAMES,
                      progress=bar.update, keep_outcomes=False, autocomplete=args.autocomplete)
    bar.close()
    if args.report:
        from .report import write_report

        write_report(args.report, result, workload_name=args.workload)
    if args.json:
        out = {"workload": args.workload, "requests": len(workload),
               "invalid_lines": [e._asdict() for e in workload.errors],
               "seed": result.seed, "policies": [s.as_json() for s in result.summaries]}
        if result.autocomplete:
            out["autocomplete"] = [f.as_json() for f in result.autocomplete]
        if args.report:
            out["report"] = args.report
        print(json.dumps(out, indent=2))
        return 0
    print(f"{len(workload):,} requests from {args.workload}"
          + (f" ({len(workload.errors):,} invalid lines skipped)" if workload.errors else ""))
    print(summary_table(result.summaries))
    for s in result.summaries:
        if s.refused_by_reason:
            reasons = "; ".join(f"{n:,} {refusal_in_words(r)}"
                                for r, n in s.refused_by_reason.items())
            print(f"{s.name} refused: {reasons}")
        for budget, at in s.budget_exhausted_at_s.items():
            print(f"{s.name}: {budget_label(budget)} ran out after {at / 3600:.1f} h")
    if result.autocomplete:
        from .sessions import autocomplete_table

        print("editor sessions, typed-ahead reuse and the exact-repeat cache, off and on:")
        print(autocomplete_table(result.autocomplete))
    if args.report:
        print(f"report written to {os.path.abspath(args.report)} (open it in a browser)")
    return 0


class _Progress:
    """A one-line progress bar on a terminal; silent when the output is piped."""

    def __init__(self, out: TextIO, total: int):
        self._out = out
        self._total = max(1, total)
        self._on = out.isatty()
        self._shown = False

    def update(self, policy: str, done: int) -> None:
        if not self._on:
            return
        width = 30
        filled = width * done // self._total
        self._out.write(f"\r{policy:<16} [{'#' * filled}{'.' * (width - filled)}] "
                        f"{done}/{self._total}")
        self._out.flush()
        self._shown = True

    def close(self) -> None:
        if self._shown:
            self._out.write("\r" + " " * 70 + "\r")
            self._out.flush()
