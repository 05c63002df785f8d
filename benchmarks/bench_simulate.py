"""How fast, and in how much memory, `starcoder-router simulate` replays a workload given as
token counts.

    python benchmarks/bench_simulate.py            # 100,000 requests, one policy; prints a table
    python benchmarks/bench_simulate.py --write    # and updates its section of BENCHMARKS.md
    python benchmarks/bench_simulate.py --code /path/to/other/checkout   # another version

The workload is `examples/workload.jsonl` (10,000 requests built from the standard library)
repeated back to back, each copy later than the one before, to `--requests` lines, written to a
temporary file. Each step runs the command itself, `starcoder-router simulate FILE`, in a fresh
process, and reads that process's own CPU time (user + system) and peak resident memory from
the operating system (`os.wait4`), so it measures what a user runs: reading and checking the
file, simulating, printing (and, for the report row, writing the HTML report).
The target: 100,000 requests, one policy, in at most 15 s of CPU and 300 MB.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BENCHMARKS = ROOT / "BENCHMARKS.md"
# BENCHMARKS.md is written by benchmarks/run.py, which keeps everything after this mark.
KEPT_MARK = "<!-- sections below are maintained by their own scripts -->"
BEGIN, END = "<!-- bench_simulate: begin -->", "<!-- bench_simulate: end -->"
TARGET_S = 15.0
TARGET_MB = 300.0
_CLI = "import sys; from starcoder_router._cli import main; sys.exit(main(sys.argv[1:]))"


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


def write_workload(source: Path, n: int, folder: str) -> Path:
    path = Path(folder) / f"workload-{n}.jsonl"
    with path.open("w", encoding="utf-8") as f:
        for line in repeated_lines(source, n):
            f.write(line + "\n")
    return path


def run_once(lines: list[str]) -> object:
    """Simulate `lines` under the configured policy as the command does (what the profile in
    `profile_simulate.py` covers)."""
    from starcoder_router._simulate.runner import simulate
    from starcoder_router._simulate.workload import stream_workload

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "w.jsonl"
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        return simulate(stream_workload(path), policies=["configured"], keep_outcomes=False)


def measure(args: list[str], code: Path, cwd: str) -> tuple[float, float, float]:
    """CPU seconds, wall seconds and peak RSS (MB) of one `starcoder-router` command."""
    env = {**os.environ, "PYTHONPATH": str(code)}
    wall = time.perf_counter()
    # Run from an empty folder: `python -c` puts the working folder first on the path.
    proc = subprocess.Popen([sys.executable, "-c", _CLI, *args], env=env, cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - wall
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({proc.returncode}):\n{err}")
    # ru_maxrss is in kilobytes on Linux.
    return usage.ru_utime + usage.ru_stime, wall, usage.ru_maxrss / 1024


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=100_000)
    p.add_argument("--compare", type=int, default=20_000,
                   help="requests for the all-policies run (0 to skip)")
    p.add_argument("--report", action=argparse.BooleanOptionalAction, default=True,
                   help="also time the run that writes the HTML report")
    p.add_argument("--workload", default=str(ROOT / "examples" / "workload.jsonl"))
    p.add_argument("--code", default=str(ROOT), help="the checkout whose code to run")
    p.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = p.parse_args()
    code = Path(args.code).resolve()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        big = write_workload(Path(args.workload), args.requests, tmp)
        one = ["simulate", str(big), "--policy", "configured"]
        rows.append((f"{args.requests:,} requests, one policy", *measure(one, code, tmp),
                     args.requests))
        if args.report:
            report = ["simulate", str(big), "--policy", "configured", "--report",
                      str(Path(tmp) / "report.html")]
            rows.append((f"{args.requests:,} requests, one policy, HTML report",
                         *measure(report, code, tmp), args.requests))
        if args.compare:
            small = write_workload(Path(args.workload), args.compare, tmp)
            rows.append((f"{args.compare:,} requests, all five policies",
                         *measure(["simulate", str(small)], code, tmp), args.compare * 5))
    cpu, _, rss, _ = rows[0][1:]
    verdict = "met" if cpu <= TARGET_S and rss <= TARGET_MB else "missed"
    load = os.getloadavg()[0]
    text = "\n".join([
        BEGIN,
        "## Simulation speed (`benchmarks/bench_simulate.py`)",
        "",
        f"Written by `python benchmarks/bench_simulate.py --write` on "
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; Python {platform.python_version()}, "
        f"{os.cpu_count()} cores, load average {load:.1f} at the end (other processes shared "
        "the machine: CPU time is the figure to read). Each row is one run of "
        "`starcoder-router simulate` in its own process, start to exit; the workload is "
        "`examples/workload.jsonl` repeated to size: token counts only.",
        "",
        f"Target: {args.requests:,} requests, one policy, in at most {TARGET_S:.0f} s of CPU "
        f"and {TARGET_MB:.0f} MB: **{verdict}**, {cpu:.1f} s and {rss:.0f} MB.",
        "",
        "| command | CPU s | wall s | peak RSS MB | requests per CPU second |",
        "| --- | ---: | ---: | ---: | ---: |",
        *(f"| {what} | {cpu:.2f} | {wall:.2f} | {rss:.0f} | {n / cpu:,.0f} |"
          for what, cpu, wall, rss, n in rows),
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
