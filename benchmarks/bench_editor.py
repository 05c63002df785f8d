"""Editor-size requests: routing 10-60 KB fill-in-the-middle prompts, and what they cost end to end.

Editors send the code around the cursor plus repository files, and each request is usually the
previous one plus a few typed characters. This measures, with the real StarCoder 2 tokenizer:

* `route` — `Router.route()` on the default catalog (hosted keys set) for FIM requests of
  4+1, 12+3, 24+6 and 48+12 KB (prefix + suffix) and a 32 KB request with two repository files
  (both of the last two need trimming for the 8k deployments),
  each request being the previous one plus one typed character ("warm"), and on text never seen
  before ("cold"), beside one `tokenizers` count of the same rendered prompt.
* `async` — 64 tasks sharing one `AsyncRouter` against the loopback mock, each task an editor
  sending 36 KB FIM requests (the previous one plus a typed character); a 2 ms ticker on the same
  loop records the longest gap (event-loop stall). The same run with 2 KB prompts for throughput.
* `overhead` — per-request latency of `Router`/`AsyncRouter` over raw httpx/aiohttp posting the
  same JSON body, for 2, 15 and 40 KB FIM requests.

Prompts are cut from the Python standard library's sources. Prints one JSON object; `--markdown`
prints the "Realistic prompts" section, `--write` puts it into BENCHMARKS.md. About two minutes
(`--quick`: under one).

Run: `python benchmarks/bench_editor.py [--quick] [--only route,async,overhead] [--write]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
TOKENIZER = ROOT.parent / "shared" / "data" / "starcoder2-tokenizer" / "tokenizer.json"
KEYS = {"FIREWORKS_API_KEY": "bench", "DEEPINFRA_API_KEY": "bench"}
CORPUS_DIRS = ("asyncio", "email", "json", "concurrent", "importlib", "unittest", "xml",
               "multiprocessing", "logging", "http")
TRIMMED = "32 KB as above, max_tokens 1024: trimmed for the 8k windows"
# (label, prefix KB, suffix KB, repository files[, max_tokens]; 128 when not given)
ROWS: tuple[tuple, ...] = (
    ("4 KB + 1 KB", 4, 1, 0), ("12 KB + 3 KB", 12, 3, 0), ("24 KB + 6 KB", 24, 6, 0),
    ("48 KB + 12 KB", 48, 12, 0), ("32 KB: 14 + 4 KB, two 7 KB repository files", 14, 4, 2),
    (TRIMMED, 14, 4, 2, 1024))
TYPED = "abcdefghijklmnopqrstuvwxyz_(). "


def corpus() -> str:
    lib = Path(sysconfig.get_paths()["stdlib"])
    parts = []
    for d in CORPUS_DIRS:
        for f in sorted((lib / d).rglob("*.py")):
            parts.append(f.read_text(encoding="utf-8", errors="replace"))
    return "\n".join(parts)


class Editor:
    """One editor session: a document cut from the corpus at `offset`; `next()` types one more
    character at the cursor and returns the FIM request fields."""

    def __init__(self, text: str, offset: int, prefix_kb: float, suffix_kb: float,
                 files: int, max_tokens: int = 128) -> None:
        pos = offset
        self.max_tokens = max_tokens
        self.files = []
        for i in range(files):
            size = 7 * 1024
            self.files.append({"path": f"pkg/mod{i}.py", "text": text[pos:pos + size]})
            pos += size
        p, s = int(prefix_kb * 1024), int(suffix_kb * 1024)
        self.prefix = text[pos:pos + p]
        self.suffix = text[pos + p:pos + p + s]
        self.typed = 0

    def next(self) -> dict:
        self.prefix += TYPED[self.typed % len(TYPED)]
        self.typed += 1
        fields: dict = {"prefix": self.prefix, "suffix": self.suffix,
                        "max_tokens": self.max_tokens}
        if self.files:
            fields.update(files=self.files, path="pkg/current.py", repo_name="acme/app")
        return fields


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2


def bench_route(text: str, counter, quick: bool) -> dict:  # type: ignore[no-untyped-def]
    from starcoder_router import CompletionRequest, NoRouteError, Router
    from starcoder_router._routing.render import render

    raw = counter._tokenizer  # the `tokenizers` encoder itself, for the "one count" yardstick
    out = {}
    offset = 0
    for label, pre, suf, files, *more in ROWS:
        router = Router(env=KEYS, tokenizer=counter)
        ed = Editor(text, offset, pre, suf, files, *more)
        offset += 200_000
        warm, cold, once = [], [], []
        n_warm = 10 if quick else 40
        for i in range(n_warm + 1):
            req = CompletionRequest(**ed.next())
            t = time.perf_counter()
            try:
                d = router.route(req)
            except NoRouteError as exc:
                d = exc.decision
            if i:
                warm.append(time.perf_counter() - t)
        kinds = sorted({f"{c.deployment.context_window}:{c.count_kind}"
                        f"{'+trim' if c.trimmed else ''}" for c in d.candidates})
        for j in range(2 if quick else 5):
            fresh = Editor(text, offset + 1 + j * 97_003, pre, suf, files, *more)
            req = CompletionRequest(**fresh.next())
            prompt = render(req).prompt
            counter.clear_cache()  # cold: nothing counted before, not even shared boilerplate
            t = time.perf_counter()
            raw.encode(prompt, add_special_tokens=False)
            once.append(time.perf_counter() - t)
            t = time.perf_counter()
            with contextlib.suppress(NoRouteError):
                router.route(req)
            cold.append(time.perf_counter() - t)
        out[label] = {
            "bytes": len(prompt.encode()),
            "warm_ms": _median(warm) * 1e3,
            "cold_ms": _median(cold) * 1e3,
            "one_count_ms": _median(once) * 1e3,
            "cold_over_one_count": _median(cold) / _median(once),
            "candidates": kinds,
        }
        stats = getattr(router.token_counter, "cache_stats", None)
        if stats is not None:
            out[label]["cache"] = stats()
    return out


class Mock:
    def __init__(self, latency_ms: float = 0.0) -> None:
        cmd = [sys.executable, str(HERE / "mock_server.py"), "--port", "0", "--chunks", "16",
               "--latency-ms", str(latency_ms)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().split()
        if not line or line[0] != "READY":
            raise RuntimeError(f"mock server failed: {line}")
        self.base = f"http://127.0.0.1:{line[1]}"

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)


def _router_kwargs(base: str, window: int = 16384) -> dict:
    from starcoder_router import Catalog, CostPolicy, Deployment

    dep = Deployment(provider="vllm", variant="starcoder2-3b", model="bench-model",
                     context_window=window, base_url=base + "/v1",
                     capabilities={"completion", "fim", "streaming"})
    return {"catalog": Catalog.default().with_deployments(dep),
            "policy": CostPolicy(allow_providers={"vllm"})}


async def _async_run(base: str, counter, text: str, kb: float, seconds: float,  # type: ignore[no-untyped-def]
                     raw: bool, on_loop: bool = False) -> dict:
    """64 editors for `seconds`, through one AsyncRouter (or, `raw`, one aiohttp session posting
    the bodies the router would send), with a 2 ms ticker on the same loop."""
    import aiohttp

    from starcoder_router import AsyncRouter
    from starcoder_router._running import async_router

    async def no_offload(*args) -> None:  # type: ignore[no-untyped-def]
        return None

    if on_loop:  # the previous behaviour, for comparison: every count on the event loop
        async_router.count_off_loop = no_offload  # type: ignore[assignment]
    done_late = 0
    gaps: list[float] = []
    late: list[float] = []  # the second half: every editor's first (cold) request is done
    steps: list[float] = []  # the router's routing step on the loop, per request (thread CPU)
    done = 0
    started = stop = time.perf_counter() + seconds

    async def ticker() -> None:
        last = time.perf_counter()
        while time.perf_counter() < stop:
            await asyncio.sleep(0.002)
            now = time.perf_counter()
            gaps.append(now - last)
            if now - started > seconds / 2:
                late.append(now - last)
            last = now

    async with AsyncRouter(tokenizer=counter, **_router_kwargs(base)) as router, \
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        # The routing step `complete()` runs on the loop (after counting off it, if at all).
        start_step = router._core.start

        def timed_start(req):  # type: ignore[no-untyped-def]
            # CPU time of this thread: what the step itself holds the loop for, without the
            # time other processes on the shared machine or the GIL take from it.
            t = time.thread_time()
            try:
                return start_step(req)
            finally:
                steps.append(time.thread_time() - t)

        router._core.start = timed_start  # type: ignore[method-assign]

        async def editor(i: int) -> None:
            nonlocal done, done_late
            ed = Editor(text, i * 50_000, kb * 0.8, kb * 0.2, 0)
            while time.perf_counter() < stop:
                fields = {**ed.next(), "max_tokens": 16}
                if raw:
                    async with session.post(base + "/v1/completions",
                                            json=_payload(fields)) as resp:
                        await resp.json()
                else:
                    await router.complete(**fields)
                done += 1
                if time.perf_counter() - started > seconds / 2:
                    done_late += 1

        await router.complete(prefix="def f(", suffix=")", max_tokens=16)
        steps.clear()
        started = time.perf_counter()
        stop = started + seconds
        try:
            await asyncio.gather(ticker(), *(editor(i) for i in range(64)))
        finally:
            from starcoder_router._running.offload import count_off_loop

            async_router.count_off_loop = count_off_loop
        elapsed = time.perf_counter() - started
    gaps.sort()
    return {"requests": done, "req_per_s": done / elapsed,
            "req_per_s_late": done_late / max(1e-9, elapsed - seconds / 2),
            "max_stall_ms": (gaps[-1] - 0.002) * 1e3,
            "max_stall_late_ms": (max(late) - 0.002) * 1e3 if late else None,
            "median_gap_ms": gaps[len(gaps) // 2] * 1e3,
            "max_route_step_ms": max(steps) * 1e3 if steps else None}


def bench_async(text: str, counter, quick: bool) -> dict:  # type: ignore[no-untyped-def]
    """Rounds interleave the 36 KB and 2 KB runs (and raw aiohttp with the same bodies), so a
    busy spell on the shared machine hits both; rates are medians over rounds."""
    mock, slow = Mock(), Mock(latency_ms=SERVER_MS)
    rounds = 1 if quick else 2
    secs = 2.0 if quick else 3.0
    plan = (("36KB", 36, False, False, mock), ("36KB counted on the loop", 36, False, True, mock),
            ("2KB", 2, False, False, mock), ("36KB raw aiohttp", 36, True, False, mock),
            ("2KB raw aiohttp", 2, True, False, mock),
            (f"36KB, server {SERVER_MS} ms", 36, False, False, slow),
            (f"36KB counted on the loop, server {SERVER_MS} ms", 36, False, True, slow),
            (f"36KB raw aiohttp, server {SERVER_MS} ms", 36, True, False, slow))
    runs: dict[str, list[dict]] = {key: [] for key, *_ in plan}
    try:
        for _ in range(rounds):
            for key, kb, raw, on_loop, server in plan:
                counter.clear_cache()
                runs[key].append(asyncio.run(
                    _async_run(server.base, counter, text, kb, secs, raw, on_loop)))
    finally:
        mock.close()
        slow.close()
    out: dict = {}
    for key, rs in runs.items():
        out[key] = {
            "requests": sum(r["requests"] for r in rs),
            "req_per_s": _median([r["req_per_s"] for r in rs]),
            "req_per_s_late": _median([r["req_per_s_late"] for r in rs]),
            "max_stall_ms": max(r["max_stall_ms"] for r in rs),
            "max_stall_late_ms": max((r["max_stall_late_ms"] or 0) for r in rs),
            "median_gap_ms": _median([r["median_gap_ms"] for r in rs]),
            "max_route_step_ms": max((r["max_route_step_ms"] or 0) for r in rs),
        }
    # Ratios of the medians over rounds (with two rounds a median of ratios is just the larger).
    out["throughput_ratio"] = out["2KB"]["req_per_s"] / out["36KB"]["req_per_s"]
    out["throughput_ratio_late"] = out["2KB"]["req_per_s_late"] / out["36KB"]["req_per_s_late"]
    return out


def _payload(fields: dict) -> dict:
    from starcoder_router import CompletionRequest
    from starcoder_router._routing.render import render

    r = render(CompletionRequest(**fields))
    return {"model": "bench-model", "prompt": r.prompt, "max_tokens": 16, "stop": list(r.stop)}


def _sync_overhead(base: str, counter, text: str, kb: float, n: int) -> dict:  # type: ignore[no-untyped-def]
    import httpx

    from starcoder_router import Router

    raw_t, sc_t = [], []
    with httpx.Client() as client, Router(tokenizer=counter, **_router_kwargs(base)) as router:
        a, b = Editor(text, 0, kb * 0.8, kb * 0.2, 0), Editor(text, 0, kb * 0.8, kb * 0.2, 0)
        for i in range(n + 5):
            fields = {**a.next(), "max_tokens": 16}
            body = _payload(fields)  # built outside the timing: the raw floor only sends
            t = time.perf_counter()
            client.post(base + "/v1/completions", json=body).json()
            t1 = time.perf_counter()
            router.complete(**{**b.next(), "max_tokens": 16})
            t2 = time.perf_counter()
            if i >= 5:
                raw_t.append(t1 - t)
                sc_t.append(t2 - t1)
    return {"raw_us": _median(raw_t) * 1e6, "router_us": _median(sc_t) * 1e6,
            "overhead_us": (_median(sc_t) - _median(raw_t)) * 1e6}


async def _async_overhead(base: str, counter, text: str, kb: float, n: int) -> dict:  # type: ignore[no-untyped-def]
    import aiohttp

    from starcoder_router import AsyncRouter

    raw_t, sc_t = [], []
    async with aiohttp.ClientSession() as session, \
            AsyncRouter(tokenizer=counter, **_router_kwargs(base)) as router:
        a, b = Editor(text, 0, kb * 0.8, kb * 0.2, 0), Editor(text, 0, kb * 0.8, kb * 0.2, 0)
        for i in range(n + 5):
            body = _payload({**a.next(), "max_tokens": 16})
            t = time.perf_counter()
            async with session.post(base + "/v1/completions", json=body) as resp:
                await resp.json()
            t1 = time.perf_counter()
            await router.complete(**{**b.next(), "max_tokens": 16})
            t2 = time.perf_counter()
            if i >= 5:
                raw_t.append(t1 - t)
                sc_t.append(t2 - t1)
    return {"raw_us": _median(raw_t) * 1e6, "router_us": _median(sc_t) * 1e6,
            "overhead_us": (_median(sc_t) - _median(raw_t)) * 1e6}


def bench_overhead(text: str, counter, quick: bool) -> dict:  # type: ignore[no-untyped-def]
    mock = Mock()
    n = 40 if quick else 120
    out = {}
    try:
        for kb in (2, 15, 40):
            out[f"{kb}KB"] = {
                "sync": _sync_overhead(mock.base, counter, text, kb, n),
                "async": asyncio.run(_async_overhead(mock.base, counter, text, kb, n)),
            }
    finally:
        mock.close()
    return out


# Measured with this script at commit a8a563d (before counting reused work), on the same machine
# the same morning: every count on the event loop, whole prompts tokenized by `tokenizers`.
BEFORE = {
    "route": {  # label: (warm ms, cold ms)
        "4 KB + 1 KB": (0.021, 0.15), "12 KB + 3 KB": (23.25, 23.48),
        "24 KB + 6 KB": (40.57, 45.17), "48 KB + 12 KB": (251.5, 263.4),
        "32 KB: 14 + 4 KB, two 7 KB repository files": (51.46, 51.62),
    },
    "issue": {  # the figures in the issue, measured elsewhere the day before
        "4 KB + 1 KB": "0.08", "12 KB + 3 KB": "14.5", "24 KB + 6 KB": "27.6",
        "48 KB + 12 KB": "109", "32 KB: 14 + 4 KB, two 7 KB repository files": "78 (30 KB)",
        TRIMMED: "0.9-1.1 (from outside)",
    },
    "async_36": (18, 3527.0), "async_2": (926, 193.0),  # req/s, longest ticker gap ms
    "overhead": {"2KB": (93, 172), "15KB": (1547, 172), "40KB": (50787, 58000)},  # µs sync, async
}
SECTION = "## Realistic prompts"
SERVER_MS = 250  # a server that takes as long as a real one to answer, so the loop is not busy


def markdown(res: dict) -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [SECTION, "",
             "Generated by `python benchmarks/bench_editor.py --write` (this section only; "
             "`run.py` keeps it). Fill-in-the-middle requests cut from the Python standard "
             f"library, the real StarCoder 2 tokenizer (engine: {res.get('engine', '?')}); an "
             "editor's request is the previous one plus one typed character (*warm*), or text "
             "never counted before (*cold*, cache cleared). \"Before\" is the same script at "
             "commit a8a563d, measured the same morning. The machine is two cores shared by "
             f"several busy processes (load average {load:.1f} at the end of this run), so "
             "absolute times are inflated and noisy; ratios within one run hold up better.", ""]
    if "route" in res:
        lines += ["### `Router.route()`, default catalog (16k and 8k windows), medians", "",
                  "| FIM request | bytes | issue's figure ms | before: warm / cold ms | after: "
                  "warm ms | after: cold ms | one `tokenizers` count ms | cold / one count |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for label, r in res["route"].items():
            bw, bc = BEFORE["route"].get(label, (float("nan"), float("nan")))
            lines.append(f"| {label} | {r['bytes']:,} | {BEFORE['issue'].get(label, '-')} | "
                         f"{bw:g} / {bc:g} | {r['warm_ms']:.3f} | {r['cold_ms']:.2f} | "
                         f"{r['one_count_ms']:.2f} | {r['cold_over_one_count']:.2f}x |")
        lines += ["", "The two largest requests are trimmed for the 8k deployments (the 60 KB one "
                  "for the 16k ones too). Targets: cold at most 1.5x one count, warm at most "
                  "0.5 ms for the 30 KB request with repository files.", ""]
    if "overhead" in res:
        lines += ["### Per-request overhead over raw clients (same JSON body, loopback mock, "
                  "one request at a time)", "",
                  "| FIM request | raw httpx µs | `Router` µs | overhead µs (before) | raw aiohttp "
                  "µs | `AsyncRouter` µs | overhead µs (before) |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for label, r in res["overhead"].items():
            s_, a_ = r["sync"], r["async"]
            bs, ba = BEFORE["overhead"].get(label, (0, 0))
            lines.append(f"| {label} | {s_['raw_us']:,.0f} | {s_['router_us']:,.0f} | "
                         f"{s_['overhead_us']:+,.0f} ({bs:+,}) | {a_['raw_us']:,.0f} | "
                         f"{a_['router_us']:,.0f} | {a_['overhead_us']:+,.0f} ({ba:+,}) |")
        lines += ["", "The tiny-prompt figures (16 tokens) are in the sync and async tables "
                  "above.", ""]
    if "async" in res:
        lines += ["### `AsyncRouter`, 64 concurrent editors against the loopback mock", "",
                  "A 2 ms ticker on the same loop records the longest gap between its ticks. "
                  "With 64 requests in flight the loop runs every ready task between two ticks, "
                  "so the gap is about 64 times a request's CPU cost even for raw aiohttp: the "
                  "last column, the CPU time of the longest single routing step on the loop, is "
                  "what counting adds to a gap. The last three rows use a mock that answers "
                  f"after {SERVER_MS} ms, as a real server would, so the loop is mostly idle and "
                  "the longest gap shows the longest stall. Every editor's first request is cold "
                  "(the cache is cleared before each run) and comes in the first half of the "
                  "run; the second half shows the steady state of editors typing.", "",
                  "| client | prompt | requests | req/s | req/s, second half | longest ticker gap "
                  "ms | longest gap, second half ms | median gap ms | longest routing step on the "
                  "loop, CPU ms |",
                  "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for key in ("36KB", "36KB counted on the loop", "2KB", "36KB raw aiohttp",
                    "2KB raw aiohttp", f"36KB, server {SERVER_MS} ms",
                    f"36KB counted on the loop, server {SERVER_MS} ms",
                    f"36KB raw aiohttp, server {SERVER_MS} ms"):
            r = res["async"][key]
            who = "raw aiohttp" if "raw" in key else "`AsyncRouter`"
            if "on the loop" in key:
                who += " (every count on the loop)"
            if "server" in key:
                who += f", server answers after {SERVER_MS} ms"
            step = "-" if "raw" in key else f"{r['max_route_step_ms']:.2f}"
            lines.append(f"| {who} | {key.split()[0].rstrip(',')} FIM | {r['requests']} | "
                         f"{r['req_per_s']:,.0f} | {r['req_per_s_late']:,.0f} | "
                         f"{r['max_stall_ms']:.1f} | "
                         f"{r['max_stall_late_ms']:.1f} | "
                         f"{r['median_gap_ms']:.1f} | {step} |")
        a = res["async"]
        raw_ratio = a["2KB raw aiohttp"]["req_per_s"] / a["36KB raw aiohttp"]["req_per_s"]
        b36, b2 = BEFORE["async_36"], BEFORE["async_2"]
        raw_late = (a["2KB raw aiohttp"]["req_per_s_late"]
                    / a["36KB raw aiohttp"]["req_per_s_late"])
        lines += ["", f"2 KB throughput / 36 KB throughput: `AsyncRouter` "
                  f"{a['throughput_ratio']:.2f}x, second half {a['throughput_ratio_late']:.2f}x "
                  f"(before: {b2[0] / b36[0]:.0f}x, {b36[0]} req/s at 36 KB with a "
                  f"{b36[1]:,.0f} ms longest gap); raw aiohttp {raw_ratio:.2f}x, second half "
                  f"{raw_late:.2f}x. New prompts are counted one at a time off the loop, so at the "
                  "start, when 64 editors send their first request at once, the last of them "
                  "waits for 63 counts; *every count on the loop* serves them sooner but stalls "
                  "the loop for each."]
    return "\n".join(lines) + "\n"


def splice_section(doc: str, section: str) -> str:
    """`doc` with its "Realistic prompts" section replaced by `section` (or put before Notes)."""
    start = doc.find(SECTION)
    if start >= 0:
        end = doc.find("\n## ", start + len(SECTION))
        return doc[:start] + section + ("\n" + doc[end + 1:] if end >= 0 else "")
    notes = doc.find("## Notes")
    if notes >= 0:
        return doc[:notes] + section + "\n" + doc[notes:]
    return doc.rstrip("\n") + "\n\n" + section


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", default="route,async,overhead")
    p.add_argument("--markdown", action="store_true", help="print the section")
    p.add_argument("--write", action="store_true",
                   help="replace the section in BENCHMARKS.md (needs all three parts)")
    args = p.parse_args()
    from starcoder_router import TokenizerCounter

    counter = TokenizerCounter.from_file(TOKENIZER)
    text = corpus()
    res: dict = {"engine": getattr(counter, "engine", "tokenizers")}
    only = set(args.only.split(","))
    if "route" in only:
        res["route"] = bench_route(text, counter, args.quick)
    if "async" in only:
        res["async"] = bench_async(text, counter, args.quick)
    if "overhead" in only:
        res["overhead"] = bench_overhead(text, counter, args.quick)
    print(json.dumps(res))
    if args.markdown:
        print(markdown(res))
    if args.write:
        path = ROOT / "BENCHMARKS.md"
        path.write_text(splice_section(path.read_text(), markdown(res)))


if __name__ == "__main__":
    main()
