"""Profiles of the SDK's hot paths against the loopback mock, with the raw client beside each.

    python benchmarks/profile_hotpath.py                 # all, writes benchmarks/profiles/*.txt
    python benchmarks/profile_hotpath.py sync async      # some of: sync async stream astream
                                                         #          route-fim gateway

Each case runs the same stack from `stacks.py` twice: once timed (CPU µs per request of this
process, the raw peer in the same run) and once under cProfile, whose top entries by own time
and by cumulative time go to `benchmarks/profiles/<case>.txt`. The figures that count are the
suite's (`run.py`, `bench_gateway.py`, `bench_editor.py`); these profiles say where the time goes.
"""

from __future__ import annotations

import asyncio
import cProfile
import io
import pstats
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

import stacks  # noqa: E402

OUT = HERE / "profiles"


def start_mock(*extra: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, str(HERE / "mock_server.py"), "--port", "0",
                             "--chunks", "200", *extra], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    if not line or line[0] != "READY":
        raise RuntimeError(f"mock server did not start: {line}")
    return proc, f"http://127.0.0.1:{line[1]}"


def cpu_us(fn: Callable[[], object], n: int) -> float:
    t0 = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - t0) / n * 1e6


def profile_text(title: str, prof: cProfile.Profile, lines: int = 35) -> str:
    out = io.StringIO()
    out.write(f"== {title}: by own time ==\n")
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(lines)
    out.write(f"== {title}: by cumulative time ==\n")
    pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(lines)
    # Keep paths short and free of the machine's layout.
    text = out.getvalue()
    for prefix in (str(ROOT) + "/", sys.prefix + "/lib/python3.11/site-packages/"):
        text = text.replace(prefix, "")
    return text


def sync_case(base: str, n: int, streaming: bool) -> str:
    ctx = stacks.Ctx(base)
    raw, sc = stacks.HttpxSync(ctx), stacks.StarcoderSync(ctx)
    if streaming:
        def call(s: object) -> Callable[[], object]:
            return lambda: sum(1 for _ in s.stream(200))  # type: ignore[attr-defined]
    else:
        def call(s: object) -> Callable[[], object]:
            return s.complete  # type: ignore[attr-defined,no-any-return]
    report = []
    for _ in range(3):  # interleaved: a slow spell moves both
        for name, s in (("raw httpx", raw), ("Router", sc)):
            cpu_us(call(s), n // 10)
            per = "stream" if streaming else "req"
            report.append(f"{name}: {cpu_us(call(s), n):.1f} µs CPU/{per}")
    prof = cProfile.Profile()
    prof.enable()
    cpu_us(call(sc), n)
    prof.disable()
    raw.close()
    sc.close()
    return "\n".join(report) + "\n\n" + profile_text("Router", prof)


def async_case(base: str, n: int, streaming: bool) -> str:
    ctx = stacks.Ctx(base)

    async def main() -> str:
        raw, sc = stacks.AiohttpAsync(ctx), stacks.StarcoderAsync(ctx)
        await raw.start()
        await sc.start()

        async def drive(s: object, total: int) -> float:
            left = [total]

            async def task() -> None:
                while left[0] > 0:
                    left[0] -= 1
                    if streaming:
                        async for _ in s.astream(200):  # type: ignore[attr-defined]
                            pass
                    else:
                        await s.acomplete()  # type: ignore[attr-defined]
            t0 = time.process_time()
            await asyncio.gather(*(task() for _ in range(1 if streaming else 64)))
            return (time.process_time() - t0) / total * 1e6

        report = []
        for _ in range(3):
            for name, s in (("raw aiohttp", raw), ("AsyncRouter", sc)):
                await drive(s, n // 10)
                report.append(f"{name}: {await drive(s, n):.1f} µs CPU/"
                              f"{'stream' if streaming else 'req'}")
        prof = cProfile.Profile()
        prof.enable()
        await drive(sc, n)
        prof.disable()
        await raw.aclose()
        await sc.aclose()
        return "\n".join(report) + "\n\n" + profile_text("AsyncRouter", prof)

    return asyncio.run(main())


def route_fim_case() -> str:
    """`route(**fields)` on a 32 KB FIM request (14 + 4 KB and two 7 KB repository files, trimmed
    for the 8k deployments), one typed character later: `bench_editor.py`'s warm case, timed
    from outside (building the request included)."""
    import bench_editor

    from starcoder_router import CompletionRequest, NoRouteError, Router, TokenizerCounter

    counter = TokenizerCounter.from_file(bench_editor.TOKENIZER)
    router = Router(env=bench_editor.KEYS, tokenizer=counter)
    ed = bench_editor.Editor(bench_editor.corpus(), 400_000, 14, 4, 2)
    times, cpu = [], []
    prof = cProfile.Profile()
    d = None
    # 200 timed keystrokes, then 100 under the profiler (which slows them: not timed).
    for i in range(301):
        fields = ed.next()
        fields["max_tokens"] = 1024  # 7.3k prompt tokens + 1024 > 8192: trimmed for the 8k ones
        profiled = i > 200
        t0, c0 = time.perf_counter(), time.process_time()
        if profiled:
            prof.enable()
        try:
            d = router.route(CompletionRequest(**fields))
        except NoRouteError as exc:
            d = exc.decision
        if profiled:
            prof.disable()
        elif i:
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    times.sort()
    cpu.sort()
    assert d is not None
    trimmed = sum(1 for c in d.candidates if c.trimmed)
    # CPU time beside wall time: on a shared machine it leaves out the time others took.
    head = (f"route() 32 KB FIM, one character typed: median {times[len(times) // 2] * 1e3:.3f}"
            f" ms, CPU {cpu[len(cpu) // 2] * 1e3:.3f} ms (trimmed for {trimmed} of "
            f"{len(d.candidates)} candidates)")
    return head + "\n\n" + profile_text("route", prof)


# `serve` under a profiler that runs only while the load does: SIGUSR1 starts it, SIGUSR2 stops
# it and writes the stats. It times CPU (`time.thread_time`, the event loop's thread), not wall
# time, which on a shared machine is mostly waiting for a core.
_PROFILED_SERVE = """
import cProfile, signal, sys, time
prof = cProfile.Profile(time.thread_time)
signal.signal(signal.SIGUSR1, lambda *_: prof.enable())
def _stop(*_):
    prof.disable()
    prof.dump_stats(sys.argv[1])
signal.signal(signal.SIGUSR2, _stop)
from starcoder_router._cli import main
sys.exit(main(["serve", *sys.argv[2:]]))
"""


def _cpu_s(pid: int) -> float:
    """User + system CPU of a process (every thread), from /proc."""
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def gateway_case(base: str) -> str:
    """`starcoder-router serve` against the mock measured directly: the gateway's CPU per
    request (all its threads) at 64 clients and at one, then a CPU profile of its event loop
    under 64 clients, as `bench_gateway.py` loads it."""
    import os
    import signal
    import tempfile

    import bench_gateway

    tmp = Path(tempfile.mkdtemp(prefix="profile-gateway-"))
    cfg, prof = tmp / "router.toml", tmp / "gateway.prof"
    bench_gateway.gateway_config(base, cfg)
    port = bench_gateway.free_port()
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    gw = subprocess.Popen([sys.executable, "-c", _PROFILED_SERVE, str(prof), "--config",
                           str(cfg), "--port", str(port), "--state-dir", str(tmp / "state")],
                          env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"

    def load(target: str, model: str, c: int, seconds: float = 3.0) -> dict[str, float]:
        return asyncio.run(bench_gateway.load(target, model, seconds=seconds, concurrency=c,
                                              stream=False, headers={}))

    report = []
    try:
        bench_gateway.wait_http(url + "/health")
        load(url + "/v1/completions", "starcoder2", 64, 1.0)  # warm-up
        for c in (64, 1):
            direct = load(base + "/v1/completions", "bench-model", c)
            before = _cpu_s(gw.pid)
            r = load(url + "/v1/completions", "starcoder2", c)
            cpu_us = 1e6 * (_cpu_s(gw.pid) - before) / max(1.0, r["rps"] * 3.0)
            report.append(f"{c} client(s): direct {direct['rps']:,.0f} req/s, p50 "
                          f"{direct['p50_ms']:.2f} ms; gateway {r['rps']:,.0f} req/s, p50 "
                          f"{r['p50_ms']:.2f} ms, {cpu_us:.0f} us of gateway CPU a request")
        gw.send_signal(signal.SIGUSR1)
        r = load(url + "/v1/completions", "starcoder2", 64, 5.0)
        gw.send_signal(signal.SIGUSR2)
        report.append(f"profiled: 64 clients, {r['rps'] * 5.0:,.0f} requests in 5 s (cProfile "
                      "inflates every Python call: read the shares, not the times)")
        deadline = time.monotonic() + 10
        while not prof.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        gw.send_signal(signal.SIGINT)
        gw.wait(timeout=30)
    out = io.StringIO()
    for order in ("tottime", "cumulative"):
        out.write(f"== gateway event loop, CPU: by {order} ==\n")
        pstats.Stats(str(prof), stream=out).sort_stats(order).print_stats(45)
    text = out.getvalue()
    for prefix in (str(ROOT) + "/", sys.prefix + "/lib/python3.11/site-packages/"):
        text = text.replace(prefix, "")
    return "\n".join(report) + "\n\n" + text


CASES = {
    "sync": lambda base: sync_case(base, 2000, False),
    "stream": lambda base: sync_case(base, 100, True),
    "async": lambda base: async_case(base, 3000, False),
    "astream": lambda base: async_case(base, 100, True),
    "route-fim": lambda base: route_fim_case(),
    "gateway": gateway_case,
}


def main() -> None:
    wanted = sys.argv[1:] or list(CASES)
    OUT.mkdir(exist_ok=True)
    proc, base = start_mock()
    try:
        for name in wanted:
            text = CASES[name](base)
            (OUT / f"{name}.txt").write_text(text)
            print(f"--- {name}\n" + text.split("\n\n", 1)[0], flush=True)
    finally:
        proc.terminate()


if __name__ == "__main__":
    main()
