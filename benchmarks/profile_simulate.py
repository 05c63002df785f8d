"""Where `simulate` spends its time: a cProfile of one policy over a repeated workload.

    python benchmarks/profile_simulate.py                    # 100,000 requests, as the target
    python benchmarks/profile_simulate.py --requests 20000 --out benchmarks/profiles/x.txt

The workload is built as `bench_simulate.py` builds it (`examples/workload.jsonl` repeated to
size; its 10,000 lines come again from the 10,001st on, and from their third coming the
simulator finds them prepared); the profile covers reading the lines and simulating them,
sorted by internal time and by cumulative time.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_simulate import repeated_lines, run_once  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=100_000)
    p.add_argument("--workload", default=str(ROOT / "examples" / "workload.jsonl"))
    p.add_argument("--out", help="write the profile here as text (default: standard output)")
    p.add_argument("--top", type=int, default=45)
    args = p.parse_args()
    lines = repeated_lines(Path(args.workload), args.requests)
    prof = cProfile.Profile()
    prof.enable()
    run_once(lines)
    prof.disable()
    buf = io.StringIO()
    buf.write(f"# {args.requests:,} requests, one policy (configured)\n\n")
    for order in ("tottime", "cumulative"):
        pstats.Stats(prof, stream=buf).strip_dirs().sort_stats(order).print_stats(args.top)
    if args.out:
        Path(args.out).write_text(buf.getvalue(), encoding="utf-8")
    else:
        print(buf.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
