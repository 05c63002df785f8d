"""How fast `starcoder-router simulate` replays a workload given as token counts.

    python benchmarks/bench_simulate.py            # 100,000 requests, one policy; prints a table
    python benchmarks/bench_simulate.py --write    # and updates its section of BENCHMARKS.md

The workload is `examples/workload.jsonl` (10,000 requests built from the standard library)
repeated back to back until it has `--requests` lines. Parsing (JSON Lines to validated requests)
and simulating are timed apart, as CPU time of this one process (one core) and as wall time.
The target: 100,000 requests in under 30 s on one core.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from starcoder_router._simulate.runner import simulate  # noqa: E402
from starcoder_router._simulate.workload import parse_lines  # noqa: E402

BENCHMARKS = ROOT / "BENCHMARKS.md"
# BENCHMARKS.md is written by benchmarks/run.py, which keeps everything after this mark.
KEPT_MARK = "<!-- sections below are maintained by their own scripts -->"
BEGIN, END = "<!-- bench_simulate: begin -->", "<!-- bench_simulate: end -->"
TARGET_S = 30.0


def repeated_lines(path: Path, n: int) -> list[str]:
    base = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    span = max(r["timestamp"] for r in base) + 1.0
    out = []
    copy = 0
    while len(out) < n:
        for r in base:
            if len(out) == n:
                break
            out.append(json.dumps({**r, "timestamp": round(r["timestamp"] + copy * span, 3)}))
        copy += 1
    return out


def run_once(lines: list[str]) -> object:
    """Parse `lines` and simulate them under the configured policy (what the profile covers)."""
    workload = parse_lines(lines)
    return simulate(workload.requests, policies=["configured"])


def timed(fn):  # type: ignore[no-untyped-def]
    cpu, wall = time.process_time(), time.perf_counter()
    value = fn()
    return value, time.process_time() - cpu, time.perf_counter() - wall


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=100_000)
    p.add_argument("--compare", type=int, default=20_000,
                   help="requests for the all-policies run (0 to skip)")
    p.add_argument("--workload", default=str(ROOT / "examples" / "workload.jsonl"))
    p.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = p.parse_args()

    lines = repeated_lines(Path(args.workload), args.requests)
    workload, parse_cpu, parse_wall = timed(lambda: parse_lines(lines))
    assert not workload.errors
    assert len(workload.requests) == args.requests
    _, one_cpu, one_wall = timed(lambda: simulate(workload.requests, policies=["configured"]))
    rows = [(f"parse {args.requests:,} lines", parse_cpu, parse_wall, args.requests),
            (f"simulate {args.requests:,} requests, one policy", one_cpu, one_wall,
             args.requests)]
    if args.compare:
        some = workload.requests[:args.compare]
        _, all_cpu, all_wall = timed(lambda: simulate(some))
        rows.append((f"simulate {args.compare:,} requests, all five policies", all_cpu,
                     all_wall, args.compare * 5))
    total_cpu = parse_cpu + one_cpu
    verdict = "met" if total_cpu < TARGET_S else "missed"
    load = os.getloadavg()[0]
    text = "\n".join([
        BEGIN,
        "## Simulation speed (`benchmarks/bench_simulate.py`)",
        "",
        f"Written by `python benchmarks/bench_simulate.py --write` on "
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; Python {platform.python_version()}, "
        f"{os.cpu_count()} cores, load average {load:.1f} at the end (other processes shared "
        "the machine: CPU time is the figure to read). The workload is "
        "`examples/workload.jsonl` repeated to size: token counts only.",
        "",
        f"Target: {args.requests:,} requests (parse + simulate one policy) in under "
        f"{TARGET_S:.0f} s on one core: **{verdict}**, {total_cpu:.1f} s of CPU.",
        "",
        "| step | CPU s | wall s | requests per CPU second |",
        "| --- | ---: | ---: | ---: |",
        *(f"| {what} | {cpu:.2f} | {wall:.2f} | {n / cpu:,.0f} |"
          for what, cpu, wall, n in rows),
        END,
    ])
    print(text)
    if args.write:
        write_section(text)
    return 0


def write_section(text: str) -> None:
    old = BENCHMARKS.read_text(encoding="utf-8") if BENCHMARKS.exists() else ""
    if BEGIN in old:
        head, _, rest = old.partition(BEGIN)
        _, _, tail = rest.partition(END)
        new = head + text + tail
    else:
        if KEPT_MARK not in old:
            old = old.rstrip("\n") + "\n\n" + KEPT_MARK + "\n"
        new = old.rstrip("\n") + "\n\n" + text + "\n"
    BENCHMARKS.write_text(new, encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
