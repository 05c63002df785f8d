"""Stop matching on hostile stops: the time to set up a stream's stop cutter and push a
steered stream through it, for long and many stops.

    python benchmarks/bench_stops.py            # the figures, in a few seconds

Run it against an older checkout (PYTHONPATH=that/checkout) to compare. Each case is bounded
by a per-case budget: a case slower than that prints "> budget" instead of finishing.
"""

from __future__ import annotations

import sys
import threading
import time

from starcoder_router._providers.stops import StreamCutter

BUDGET_S = 20.0
CASES = [  # (label, stops)
    ("1 stop x 256 chars", ["ab" * 127 + "aX"]),
    ("16 stops x 256 chars", ["ab" * 127 + "a" + chr(65 + i) for i in range(16)]),
    ("1 stop x 2,000 chars", ["ab" * 999 + "aX"]),
    ("1 stop x 4,000 chars", ["ab" * 1999 + "aX"]),
]


def run_case(stops: list[str]) -> tuple[float, float]:
    """(setup seconds, seconds per pushed chunk) over a stream that keeps almost completing
    the stops, never quite (the steered worst case: the whole tail stays held)."""
    t0 = time.perf_counter()
    cutter = StreamCutter(stops)
    setup = time.perf_counter() - t0
    chunk = "ab" * 8
    n = 400
    t0 = time.perf_counter()
    for _ in range(n):
        cutter.push(chunk)
    return setup, (time.perf_counter() - t0) / n


def main() -> None:
    print(f"{'case':<24}{'setup':>12}{'per chunk':>14}")
    for label, stops in CASES:
        result: list[tuple[float, float]] = []
        worker = threading.Thread(target=lambda s=stops, r=result: r.append(run_case(s)),
                                  daemon=True)
        worker.start()
        worker.join(BUDGET_S)
        if not result:
            print(f"{label:<24}{'> budget':>12}")
            sys.stdout.flush()
            continue
        setup, per = result[0]
        print(f"{label:<24}{setup * 1e3:>10.2f}ms{per * 1e6:>12.1f}µs")


if __name__ == "__main__":
    main()
