"""Turns the runner's results into BENCHMARKS.md: targets first, then every table."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path

from stacks import BY_NAME

SYNC_FLOOR, ASYNC_FLOOR = "httpx", "aiohttp"
# Typographic characters for the Markdown, spelled as escapes to keep the source ASCII-clear.
X, DASH, MINUS = "\u00d7", "\u2013", "\u2212"
ROUTER, AROUTER = "starcoder", "starcoder-async"


def git_describe(root: Path) -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=root,
                              check=False).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "starcoder_router")
    return commit + (" (starcoder_router/ has uncommitted changes)" if dirty else "")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _med(xs: Iterable[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return statistics.median(vals) if vals else None


def _f(x: float | None, fmt: str = "{:,.0f}") -> str:
    return f"{DASH}" if x is None else fmt.format(x)


class Rounds:
    """Per-stack values across rounds, and ratios to a floor taken within each round."""

    def __init__(self, rounds: list[dict], mode: str) -> None:
        self.rounds = [r[mode] for r in rounds]
        self.load = [r.get("loadavg", {}).get("1min_at_end") for r in rounds]

    def ok(self, stack: str) -> list[dict]:
        return [r[stack] for r in self.rounds if stack in r and r[stack].get("ok")]

    def error(self, stack: str) -> str | None:
        for r in self.rounds:
            if stack in r and not r[stack].get("ok"):
                return str(r[stack].get("error"))
        return None

    def present(self, stack: str) -> bool:
        return any(stack in r for r in self.rounds)

    def median(self, stack: str, key: str) -> float | None:
        return _med(r.get(key) for r in self.ok(stack))

    def first(self, stack: str, key: str) -> float | None:
        got = self.ok(stack)
        return got[0].get(key) if got else None

    def per_round(self, stack: str, floor: str, key: str,
                  fn: Callable[[float, float], float]) -> list[float]:
        vals = []
        for r in self.rounds:
            a, b = r.get(stack), r.get(floor)
            if a and b and a.get("ok") and b.get("ok") and a.get(key) is not None \
                    and b.get(key) is not None:
                vals.append(fn(a[key], b[key]))
        return vals

    def paired(self, stack: str, floor: str, key: str,
               fn: Callable[[float, float], float]) -> float | None:
        return _med(self.per_round(stack, floor, key, fn))

    def spread(self, stack: str, floor: str, key: str, fn: Callable[[float, float], float],
               fmt: str) -> str:
        """` (rounds LO to HI)` when there is more than one round."""
        vals = self.per_round(stack, floor, key, fn)
        if len(vals) < 2:
            return ""
        return f" (rounds {fmt.format(min(vals))} to {fmt.format(max(vals))})"


def _ratio(a: float, b: float) -> float:
    return a / b


def _minus(a: float, b: float) -> float:
    return a - b


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    align = ["---"] + ["---:"] * (len(header) - 1)
    out = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def _label(name: str) -> str:
    st = BY_NAME[name]
    return f"`{name}` ({st.label})"


def _unavailable(rounds: Rounds, names: list[str]) -> list[str]:
    out = []
    for n in names:
        if rounds.present(n) and not rounds.ok(n):
            out.append(f"- `{n}` did not run: {rounds.error(n)}")
    return out


# --- sections ------------------------------------------------------------------------------


def targets(res: dict) -> list[str]:
    sync = Rounds(res["rounds_data"], "complete")
    stream = Rounds(res["rounds_data"], "stream")
    core = res.get("core", {})
    imports = res.get("imports", {})
    rows: list[list[str]] = []

    def verdict(ok: bool | None, miss: str) -> str:
        if ok is None:
            return "not measured"
        return "**met**" if ok else f"**missed** — {miss}"

    r = sync.paired(ROUTER, SYNC_FLOOR, "p50_us", _ratio)
    extra = sync.paired(ROUTER, SYNC_FLOOR, "p50_us", _minus)
    cpu_r = sync.paired(ROUTER, SYNC_FLOOR, "cpu_us_per_req", _ratio)
    floor = sync.median(SYNC_FLOOR, "p50_us")
    rows.append([f"sync `Router.complete()` ≤ 1.15{X} raw httpx per request (median latency)",
                 _f(r, "{:.2f}" + X) + sync.spread(ROUTER, SYNC_FLOOR, "p50_us", _ratio, "{:.2f}")
                 + _f(extra, "; {:+,.0f} µs/req") + _f(cpu_r, "; CPU {:.2f}" + X),
                 verdict(None if r is None else r <= 1.15,
                         f"{_f(r, '{:.2f}')}{X} vs ≤ 1.15{X}: {_pct(r, 1.15)} over; "
                         f"{_f(extra)} µs/req over httpx where "
                         f"{_f(floor and 0.15 * floor)} µs was allowed")])
    r = sync.paired(AROUTER, ASYNC_FLOOR, "rps", _ratio)
    rows.append([f"`AsyncRouter` at c=64 ≥ 0.35{X} raw aiohttp throughput",
                 _f(r, f"{{:.2f}}{X}") + sync.spread(AROUTER, ASYNC_FLOOR, "rps", _ratio,
                                                      "{:.2f}"),
                 verdict(None if r is None else r >= 0.35,
                         f"{_f(r, '{:.2f}')}{X} vs ≥ 0.35{X} ({_f(r and 0.35 / r, '{:.2f}')}{X} "
                         "too slow)")])
    d = stream.paired(ROUTER, SYNC_FLOOR, "us_per_chunk", _minus)
    rows.append(["streaming ≤ 5 µs per chunk over the transport (sync, vs raw httpx SSE)",
                 _f(d, "{:+.1f} µs/chunk")
                 + stream.spread(ROUTER, SYNC_FLOOR, "us_per_chunk", _minus, "{:+.1f}"),
                 verdict(None if d is None else d <= 5.0,
                         f"{_f(d, '{:.1f}')} µs vs ≤ 5 µs ({_f(d and d - 5, '{:.1f}')} µs over)")])
    da = stream.paired(AROUTER, ASYNC_FLOOR, "us_per_chunk", _minus)
    rows.append(["(same, async: `AsyncRouter` vs raw aiohttp SSE)",
                 _f(da, "{:+.1f} µs/chunk")
                 + stream.spread(AROUTER, ASYNC_FLOOR, "us_per_chunk", _minus, "{:+.1f}"),
                 verdict(None if da is None else da <= 5.0,
                         f"{_f(da, '{:.1f}')} µs vs ≤ 5 µs ({_f(da and da - 5, '{:.1f}')} µs "
                         "over)")])
    sc = imports.get("starcoder_router") or []
    ms = _med(x.get("import_ms") for x in sc)
    rss = _med(x.get("rss_import_mib") for x in sc)
    rows.append(["`import starcoder_router` ≤ 150 ms", _f(ms, "{:.0f} ms"),
                 verdict(None if ms is None else ms <= 150,
                         f"{_f(ms)} ms vs ≤ 150 ms ({_f(ms and ms - 150)} ms over)")])
    rows.append(["RSS after `import starcoder_router` ≤ 40 MiB", _f(rss, "{:.1f} MiB"),
                 verdict(None if rss is None else rss <= 40,
                         f"{_f(rss, '{:.1f}')} MiB vs ≤ 40 MiB ({_f(rss and rss - 40, '{:.1f}')}"
                         " MiB over)")])
    rt = (core.get("route") or {}).get("default_catalog", {}).get("median_us")
    rows.append(["`route()` ≤ 30 µs median, short prompt, default catalog",
                 _f(rt, "{:.1f} µs"),
                 verdict(None if rt is None else rt <= 30,
                         f"{_f(rt, '{:.1f}')} µs vs ≤ 30 µs ({_f(rt and rt - 30, '{:.1f}')} µs "
                         "over)")])
    conns = []
    for name, rounds, what in ((ROUTER, sync, "sync requests"), (AROUTER, sync, "async requests"),
                               (ROUTER, stream, "sync streams"),
                               (AROUTER, stream, "async streams")):
        v = rounds.median(name, "new_conns_per_req")
        if v is not None:
            conns.append((what, v))
    worst = max((v for _, v in conns), default=None)
    bad = ", ".join(f"{w}: {v:.2f}" for w, v in conns if v > 0)
    rows.append(["zero new connections per request after warm-up",
                 "; ".join(f"{w} {v:.2f}" for w, v in conns) or f"{DASH}",
                 verdict(None if worst is None else worst == 0,
                         f"new connections per request — {bad}")])
    return ["## Targets", "",
            "Ratios are medians over rounds of the ratio to the floor measured in the same "
            "round.", "", *_table(["target", "measured", "result"], rows)]


def _pct(r: float | None, limit: float) -> str:
    return f"{DASH}" if r is None else f"{(r / limit - 1) * 100:.0f}%"


def machine(res: dict) -> list[str]:
    v = res["versions"]
    pinning = ("mock server on core 0, every client process on core 1" if res["pinned"]
               else "none")
    lines = ["## Machine and run", "",
             f"- Date: {res['date']}; mode: {'quick' if res['quick'] else 'full'}, "
             f"{res['rounds']} round(s), {res['elapsed_s']:.0f} s in all; "
             f"starcoder_router at commit {res['git']}",
             f"- CPU: {cpu_model()}, {os.cpu_count()} cores; Linux {platform.release()}",
             f"- Pinning: {pinning}; mock server loop: {res['server_loop']}"]
    la = res.get("loadavg") or {}
    if la:
        per_round = ", ".join(_f(r.get("loadavg", {}).get("1min_at_end"), "{:.1f}")
                              for r in res["rounds_data"])
        lines.append(f"- Load average (1 min) before the run {la['before'][0]:.1f}, after each "
                     f"round {per_round}. This suite itself keeps about 1.0-1.3 busy; more means "
                     "other processes shared the machine, which spreads the means and p99s "
                     "(medians and per-round ratios hold up better).")
    for env, pk in v.items():
        pkgs = ", ".join(f"{k} {val}" for k, val in pk.items() if k != "python")
        lines.append(f"- `{env}` virtualenv: Python {pk.get('python', '?')}; {pkgs}")
    return lines


def server_cost(res: dict) -> list[str]:
    c, s = res["server_cost"]["complete"], res["server_cost"]["stream"]
    if not c.get("ok"):
        return ["## The mock server's own cost", "", f"Not measured: {c.get('error')}"]
    return [
        "## The mock server's own cost", "",
        "A blocking raw socket with a pre-built request (the cheapest possible client) against "
        "the mock server; server CPU is the server process's CPU time over the run divided by "
        "requests served (from its `/stats`). Every table below also shows the server's CPU per "
        "request during that stack's own run.", "",
        *_table(["request", "raw-socket client µs/req (wall)", "server CPU µs/req"], [
            ["`POST /v1/completions`, JSON, 16 tokens", _f(c.get("us_per_req"), "{:.1f}"),
             _f(c.get("server_cpu_us"), "{:.1f}")],
            ["same, SSE stream of 200 chunks", _f(s.get("ttft_us"), "{:.0f} (to first byte)"),
             _f(s.get("server_cpu_us"), "{:.1f}")
             + f" ({_f(s.get('server_cpu_us') and s['server_cpu_us'] / 200, '{:.2f}')}/chunk)"],
        ]),
    ]


def _names(res: dict, kind: str, mode: str) -> list[str]:
    return [s["name"] for s in res["stacks"] if s["kind"] == kind and mode in s["modes"]]


def sync_section(res: dict) -> list[str]:
    r = Rounds(res["rounds_data"], "complete")
    names = _names(res, "sync", "complete")
    rows = []
    for n in names:
        if not r.ok(n):
            continue
        first = r.ok(n)[0]
        is_floor = n == SYNC_FLOOR
        rows.append([
            _label(n), _f(r.median(n, "p50_us")),
            "floor" if is_floor else _f(r.paired(n, SYNC_FLOOR, "p50_us", _ratio), "{:.2f}" + X),
            _f(r.median(n, "us_per_req")), _f(r.median(n, "p99_us")),
            _f(r.median(n, "cpu_us_per_req")),
            "floor" if is_floor else _f(r.paired(n, SYNC_FLOOR, "cpu_us_per_req", _ratio),
                                        "{:.2f}" + X),
            _f(r.median(n, "server_cpu_us"), "{:.0f}"),
            _f(r.median(n, "new_conns_per_req"), "{:.2f}"),
            _f(first.get("rss_after_mib"), "{:.1f}") + f" ({first.get('requests_total')})",
        ])
    return ["## Sync: one request at a time", "",
            "`max_tokens` 16, one client, keep-alive. Latency is per request after warm-up: "
            "the median (which other load on the machine barely moves), the mean and p99. CPU "
            "is the client process's user+system time per request. RSS is after the first "
            "round's run (request count in brackets, warm-up included).",
            "", *_table(["stack", "median µs/req", f"{X} httpx", "mean µs/req",
                         "p99 µs", "CPU µs/req", f"CPU {X} httpx",
                         "server CPU µs/req", "new conns/req", "RSS MiB after (requests)"],
                        rows),
            *_unavailable(r, names)]


def async_section(res: dict) -> list[str]:
    r = Rounds(res["rounds_data"], "complete")
    names = _names(res, "async", "complete")
    rows = []
    for n in names:
        if not r.ok(n):
            continue
        first = r.ok(n)[0]
        rows.append([
            _label(n), _f(r.median(n, "rps")),
            "floor" if n == ASYNC_FLOOR else _f(r.paired(n, ASYNC_FLOOR, "rps", _ratio),
                                                f"{{:.2f}}{X}"),
            _f(r.median(n, "cpu_us_per_req")), _f(r.median(n, "server_cpu_us"), "{:.0f}"),
            _f(r.median(n, "new_conns_per_req"), "{:.2f}"),
            _f(first.get("rss_after_mib"), "{:.1f}") + f" ({first.get('requests_total')})",
        ])
    return ["## Async: 64 concurrent tasks", "",
            "One client object shared by 64 tasks, each sending requests back to back. The "
            "client runs alone on one core, so its CPU per request bounds its throughput.", "",
            *_table(["stack", "req/s", f"{X} aiohttp", "CPU µs/req", "server CPU µs/req",
                     "new conns/req", "RSS MiB after (requests)"], rows),
            *_unavailable(r, names)]


def stream_section(res: dict) -> list[str]:
    r = Rounds(res["rounds_data"], "stream")
    out = ["## Streaming: 200-chunk streams, one at a time", "",
           "The mock writes the whole stream at once, so after the first chunk the time per "
           "chunk is the client's own parsing cost. *µs/chunk* is the median over streams of "
           f"(last chunk {MINUS} first chunk) / 199; *over floor* subtracts the floor's "
           "µs/chunk from the same round; *CPU/chunk* is the client's CPU over the whole run "
           "divided by all chunks (so it includes each stream's setup)."]
    header = ["stack", "time to first chunk µs", "µs/chunk", "over floor", "CPU µs/chunk",
              "server CPU µs/stream", "new conns/stream"]
    for kind, title in (("sync", "Sync"), ("async", "Async")):
        names = _names(res, kind, "stream")
        rows = []
        for n in names:
            if not r.ok(n):
                continue
            floor = BY_NAME[n].floor or n
            rows.append([
                _label(n), _f(r.median(n, "ttft_us")), _f(r.median(n, "us_per_chunk"), "{:.1f}"),
                "floor" if floor == n else
                _f(r.paired(n, floor, "us_per_chunk", _minus), "{:+.1f}") + f" vs `{floor}`",
                _f(r.median(n, "cpu_us_per_chunk"), "{:.1f}"),
                _f(r.median(n, "server_cpu_us"), "{:.0f}"),
                _f(r.median(n, "new_conns_per_req"), "{:.2f}"),
            ])
        out += ["", f"### {title}", "", *_table(header, rows), *_unavailable(r, names)]
    return out


def imports_section(res: dict) -> list[str]:
    rows = []
    for label, runs in res["imports"].items():
        ok = [x for x in runs if "import_ms" in x]
        if not ok:
            if runs:
                rows.append([f"`{label}`", "error", f"{DASH}", str(runs[0].get("error", ""))[:80]])
            continue
        ms = [x["import_ms"] for x in ok]
        rows.append([f"`{label}`", _f(statistics.median(ms), "{:.0f}")
                     + f" ({min(ms):.0f}{DASH}{max(ms):.0f})",
                     _f(_med(x["rss_import_mib"] for x in ok), "{:.1f}"), str(len(ok))])
    out = ["## Import time and memory", "",
           "Each run is a fresh interpreter that imports only the named modules (timed with "
           "`perf_counter` around the imports; the RSS includes the interpreter itself, shown "
           "as the bare-interpreter row). Runs are interleaved across modules. Every package's "
           "bytecode is compiled beforehand, as a wheel install does, so the times are loading, "
           "not compiling.", "",
           *_table(["import", f"ms, median (min{DASH}max)", "RSS MiB after", "runs"], rows)]
    attr = res.get("import_attribution") or []
    top = next((a for a in attr if a["module"] == "starcoder_router"), None)
    if top:
        out += ["", f"`python -X importtime -c 'import starcoder_router'` (one run; importtime "
                f"adds overhead): {top['cum_us'] / 1000:.0f} ms in all. Self time summed by "
                "top-level package:", "",
                *_table(["package", "modules", "self ms"],
                        [[f"`{pkg}`", str(n), f"{us / 1000:.1f}"]
                         for pkg, n, us in by_package(attr)[:12]])]
    return out


def by_package(attr: list[dict]) -> list[tuple[str, int, int]]:
    """(top-level package, modules imported, summed self µs), largest first."""
    sums: dict[str, list[int]] = {}
    for a in attr:
        pkg = a["module"].split(".")[0]
        entry = sums.setdefault(pkg, [0, 0])
        entry[0] += 1
        entry[1] += a["self_us"]
    return sorted(((k, v[0], v[1]) for k, v in sums.items()), key=lambda t: -t[2])


def core_section(res: dict) -> list[str]:
    core = res.get("core") or {}
    if "error" in core:
        return ["## Routing and token counting", "", f"Did not run: {core['error']}"]
    route = core.get("route", {})
    out = ["## Routing and token counting (pure core, no I/O)", "",
           "Single calls timed one by one (`perf_counter_ns`); medians and p99.", ""]
    d = route.get("default_catalog", {})
    rows = [[f"default catalog ({d.get('deployments')} deployments), "
             "`route(CompletionRequest(...))`", _f(d.get("median_us"), "{:.1f}"),
             _f(d.get("p99_us"), "{:.1f}"), str(d.get("n"))]]
    k = route.get("default_catalog_kwargs", {})
    rows.append(["default catalog, `route(prompt=..., max_tokens=16)`",
                 _f(k.get("median_us"), "{:.1f}"), _f(k.get("p99_us"), "{:.1f}"),
                 str(k.get("n"))])
    for n, v in (route.get("by_deployments") or {}).items():
        rows.append([f"{int(n):,} deployments, all eligible", _f(v.get("median_us"), "{:,.1f}"),
                     _f(v.get("p99_us"), "{:,.1f}"), str(v.get("n"))])
    for label, v in (route.get("long_prompts_exact") or {}).items():
        rows.append([f"default catalog, {label}-token prompt, real tokenizer "
                     f"(count: {', '.join(v.get('count_kinds', []))})",
                     _f(v.get("median_us"), "{:,.1f}"), _f(v.get("p99_us"), "{:,.1f}"),
                     str(v.get("n"))])
    out += ["### `Router.route()`", "",
            "A short prompt (`def fib(n):`, `max_tokens` 16) unless stated; hosted providers "
            "have keys, so every deployment is considered.", "",
            *_table(["case", "median µs", "p99 µs", "calls"], rows)]
    tok = core.get("tokens") or {}
    trows = []
    for label, v in tok.items():
        for what, key in (("exact, `TokenizerCounter.count`", "exact"),
                          ("estimate, `EstimatingCounter.count`", "estimating"),
                          ("byte bound, `utf8_length`", "utf8_length")):
            t = v.get(key)
            if t:
                trows.append([f"{label} ({v.get('tokens') or '?'} tokens, {v['bytes']:,} B)",
                              what, _f(t["median_us"], "{:,.2f}"), _f(t["p99_us"], "{:,.1f}")])
    if trows:
        out += ["", "### Token counts", "",
                f"Prompts are real code (Python stdlib sources) cut to the token count. "
                f"Loading the tokenizer took {_f(core.get('tokenizer_load_ms'), '{:.0f}')} ms.",
                "", *_table(["prompt", "method", "median µs", "p99 µs"], trows)]
    if core.get("tokenizer_error"):
        out += ["", f"Tokenizer unavailable: {core['tokenizer_error']}"]
    bb = core.get("byte_bound")
    if bb:
        rows = [[k, str(v["prompts"]), f"{v['avoided_share'] * 100:.0f}%"]
                for k, v in bb["by_size"].items()]
        rows.append(["all", str(bb["prompts"]), f"{bb['avoided_share'] * 100:.0f}%"])
        out += ["", "### How often the byte bound avoids tokenizing", "",
                f"{bb['prompts']} prompts cut from real code at random, with lengths "
                f"log-uniform from 64 B to 64 KiB, routed to one {bb['window']:,}-token "
                f"deployment with `max_tokens` {bb['max_tokens']} and the real tokenizer; a "
                "route avoided tokenizing when the router never called the counter. The share "
                "depends on the length mix: every prompt whose UTF-8 length plus `max_tokens` "
                "fits the window skips the tokenizer.", "",
                *_table(["prompt size", "prompts", "routed without tokenizing"], rows)]
    return out


def estimator_section(res: dict) -> list[str]:
    est = res.get("estimator") or {}
    head = ["## Token estimates without a tokenizer", ""]
    if not est or "error" in est:
        return [*head, f"Did not run: {est.get('error', 'no result')}"]

    def pct(x: float) -> str:
        return f"{x * 100:.2f}%"

    rows = [
        ["cost of the choices, over the exact choices' cost", f"{est['cost_ratio']:.3f}{X}",
         f"≤ 1.10{X}", "met" if est["cost_ratio"] <= 1.10 else "NOT met"],
        ["feasible requests refused", pct(est["refused"]), "≤ 1%",
         "met" if est["refused"] <= 0.01 else "NOT met"],
        ["requests that meet a provider's context-length error", pct(est["overflow"]),
         "≤ 0.5%", "met" if est["overflow"] <= 0.005 else "NOT met"],
    ]
    return [*head,
            "`python benchmarks/bench_estimator.py`: "
            f"{est['requests']:,} requests cut from held-out real code (Python standard "
            "library, C headers, npm's JavaScript; files the estimate was never fitted to), "
            "300 to 60,000 characters, `max_tokens` 16 to 1,024, each routed over the default "
            "catalog by the cheapest policy with the exact tokenizer and with the default "
            "install's estimate (`benchmarks/calibrate_estimator.py` fits its weights on the "
            f"other half of the files). {est['feasible']:,} of them fit some deployment; "
            f"{pct(est['choices_differ'])} of the routed ones went elsewhere than the exact "
            "choice.", "",
            *_table(["figure", "measured", "target", "result"], rows)]


def notes_section(res: dict) -> list[str]:
    out = ["## Notes", "",
           "- Floors: sync = `httpx.Client` with keep-alive (`client.post(url, json=payload)` "
           "then `.json()`); async = one `aiohttp.ClientSession` shared by 64 tasks. The raw "
           "httpx `AsyncClient` gets `max_keepalive_connections=64` (its default of 20 would "
           "reopen connections at c=64). Its cost grows with concurrency (about 0.7 ms of "
           "CPU per request at c=1, several ms at c=64 here): httpcore's async pool re-checks "
           "every connection under an AnyIO lock on each request, a known, open problem "
           "(encode/httpx#3215; openai/openai-python#1596 for the same seen through the "
           "OpenAI SDK).",
           "- The mock server (uvloop, one process) spends about 16 µs of user CPU per request "
           "and about as much again in the kernel; a sync client that writes its headers and "
           "body in two sends wakes it twice, so its server CPU per request is higher.",
           "- LiteLLM runs from its own virtualenv (`benchmarks/.venv-litellm`, "
           "`requirements-litellm.txt`) with `LITELLM_LOCAL_MODEL_COST_MAP=True`, against the "
           "mock through the `text-completion-openai/` provider with `api_base`. With default "
           "settings its text-completion path builds a new OpenAI client (and HTTP client) for "
           "every call, hence one new connection per request; the `litellm-shared` rows set "
           "`litellm.client_session` / `aclient_session` once to show the best case.",
           "- litellm 1.110.2's sync `Router.text_completion` sends the group name as the "
           "provider model, so the router's group is named after the model "
           "(`text-completion-openai/bench-model`).",
           ]
    providers = {r.get("provider") for rd in res["rounds_data"] for mode in ("complete", "stream")
                 for r in rd[mode].values() if r.get("provider")}
    if "openai-compatible" in providers:
        out.append("- The package has no vLLM adapter yet, so the starcoder-router stacks use "
                   "its generic `openai-compatible` provider (the same wire format) for the "
                   "same deployment.")
    out += [f"- {n}" for n in res.get("notes", [])]
    return out


def render(res: dict) -> str:
    parts = [
        ["# Benchmarks", "",
         "Generated by `python benchmarks/run.py"
         + (" --quick" if res["quick"] else "") + "`; do not edit by hand. Every stack runs in "
         "a fresh process against the same loopback mock server "
         "(`benchmarks/mock_server.py`) in the same run."],
        targets(res), machine(res), server_cost(res), sync_section(res), async_section(res),
        stream_section(res), imports_section(res), core_section(res), estimator_section(res),
        notes_section(res),
    ]
    return "\n\n".join("\n".join(p) for p in parts) + "\n"
