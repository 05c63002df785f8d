"""Times `import` of the named modules in a fresh interpreter and reads the RSS after it.

Imports nothing else first (only `sys` and `time`, which the interpreter has loaded anyway), so
the figures are the modules' own. Usage: `python benchmarks/import_probe.py httpx,aiohttp`;
an empty list measures the bare interpreter. Prints one JSON line.
"""

import sys
import time


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return -1.0


def main() -> None:
    mods = [m for m in sys.argv[1].split(",") if m] if len(sys.argv) > 1 else []
    if len(sys.argv) > 2:
        sys.path.insert(0, sys.argv[2])  # the work tree, for the package under test
    t0 = time.perf_counter()
    for m in mods:
        __import__(m)
    dt = time.perf_counter() - t0
    sys.stdout.write(f'{{"import_ms": {dt * 1e3:.3f}, "rss_import_mib": {_rss_mib():.3f}}}\n')


main()
