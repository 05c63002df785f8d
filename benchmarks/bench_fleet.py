"""Replica affinity on real llama-servers: what a warm prompt cache saves.

Starts 3 `llama-server` replicas of a tiny StarCoder 2-architecture model (real vocabulary,
every generated token " x") with 2 slots each and no host-memory prompt cache
(`--cache-ram 0`, when the build has it), so a request reuses a prompt only from the KV cache
of a slot on the server that served it. Then replays an editor's keystrokes: SESSIONS sessions
at once, each typing through a different file of the Python standard library (the request after
every keystroke is the file up to the cursor as the prefix, the next lines as the suffix, and
the file's path), through one `AsyncRouter` whose deployments form one replica group, once per
`[fleet] strategy`:

* `affinity` (consistent hashing with bounded loads on the file; a full replica gives way to
  one with a free slot),
* `round_robin` (in turn, blind to load),
* `least_loaded` (fewest requests in flight per slot).

The servers are restarted between strategies so each starts cold. Measured per strategy:

* prompt tokens the servers evaluated: the sum of llama-server's own `timings.prompt_n` over
  all replies (the rest of each prompt came from a slot's cache), beside the prompt tokens sent;
* p50 / p95 latency of a request as the editor sees it;
* the busiest replica's share of requests, as a multiple of a fair share (1/replicas);
* requests sent to a full replica (all its slots busy) while another replica had a free slot.

Prints one JSON object; `--markdown` prints the BENCHMARKS.md section, `--write` puts it there
(`--write a.json b.json` from saved outputs, one table each). Needs the llama-server binary
(`.ci/build-llama-server.sh`, or `$LLAMA_SERVER_BIN`). About three minutes on 2 idle cores.

Run: `python benchmarks/bench_fleet.py [--sessions 12] [--slots 4] [--keys 20] [--write]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from starcoder_router import (  # noqa: E402
    AsyncRouter,
    Catalog,
    Deployment,
    FleetPolicy,
    RetryPolicy,
    TokenizerCounter,
)
from starcoder_router._transports.aiohttp_transport import AiohttpTransport  # noqa: E402
from support.llama_server import find_llama_server, running_llama_server  # noqa: E402
from support.make_tiny_starcoder2 import default_tokenizer_json, write_tiny_model  # noqa: E402

STRATEGIES = ("affinity", "round_robin", "least_loaded")
# Files the sessions type through: one each, so sessions do not share prompts.
FILES = ("json/decoder.py", "json/encoder.py", "csv.py", "argparse.py", "textwrap.py",
         "shlex.py", "difflib.py", "fractions.py", "heapq.py", "bisect.py", "calendar.py",
         "string.py", "tokenize.py", "dataclasses.py", "functools.py", "enum.py")
PREFIX_START = 3000  # characters before the cursor at the first keystroke (about 900 tokens)
SUFFIX_CHARS = 400
SLOT_CTX = 4096


class CountingTransport(AiohttpTransport):
    """Reads llama-server's `timings.prompt_n` off every reply, per server."""

    def __init__(self) -> None:
        super().__init__()
        self.evaluated: Counter[str] = Counter()
        self.replies: Counter[str] = Counter()

    async def asend(self, request: Any, *, timeout: float, connect_timeout: float) -> Any:
        resp = await super().asend(request, timeout=timeout, connect_timeout=connect_timeout)
        server = request.url.split("/")[2]
        try:
            timings = json.loads(resp.body).get("timings") or {}
            self.evaluated[server] += int(timings.get("prompt_n", 0))
        except (ValueError, AttributeError):
            pass
        self.replies[server] += 1
        return resp


class Session:
    """One editor typing through one file from PREFIX_START on."""

    def __init__(self, path: str, text: str, rng: random.Random):
        self.path, self.text, self.cursor, self.rng = path, text, PREFIX_START, rng

    def next(self) -> dict[str, Any]:
        typed = self.rng.choice("abcdefghijklmnopqrstuvwxyz_(). ")
        self.text = self.text[:self.cursor] + typed + self.text[self.cursor:]
        self.cursor += 1
        return {"prefix": self.text[:self.cursor],
                "suffix": self.text[self.cursor:self.cursor + SUFFIX_CHARS],
                "path": self.path, "max_tokens": 8, "temperature": 0}


def has_cache_ram(binary: Path) -> bool:
    out = subprocess.run([str(binary), "--help"], check=False, capture_output=True, text=True,
                         timeout=30)
    return "--cache-ram" in out.stdout + out.stderr


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def replay(strategy: str, servers: list[Any], counter: TokenizerCounter, sessions: int,
                 keys: int, slots: int, seed: int) -> dict[str, Any]:
    deps = [Deployment(name=f"replica-{i}", provider="llamacpp", variant="starcoder2-3b",
                       model=s.model_id, context_window=SLOT_CTX, base_url=s.base_url,
                       parallel=slots, capabilities=frozenset({"completion", "fim"}))
            for i, s in enumerate(servers)]
    by_host = {s.base_url.split("/")[2]: d.name for s, d in zip(servers, deps, strict=True)}
    transport = CountingTransport()
    router = AsyncRouter(catalog=Catalog(variants=Catalog.default().variants,
                                         deployments=tuple(deps)),
                         tokenizer=counter, env={}, transport=transport,
                         retry=RetryPolicy(max_retries=0),
                         fleet=FleetPolicy(strategy=strategy))  # type: ignore[arg-type]
    fleet = router.fleet
    names = [d.name for d in deps]
    queued_behind_full = 0
    acquire = fleet.aacquire

    async def watched(name: str, *, urgent: bool, limit: float) -> Any:
        # Before the slot is taken: is this replica full while another has a free slot?
        nonlocal queued_behind_full
        if fleet.in_flight(name) >= fleet.slots(name) and any(
                fleet.in_flight(o) < fleet.slots(o) for o in names if o != name):
            queued_behind_full += 1
        return await acquire(name, urgent=urgent, limit=limit)

    fleet.aacquire = watched  # type: ignore[method-assign]
    lib = Path(sysconfig.get_paths()["stdlib"])
    rng = random.Random(seed)
    editors = [Session(p, (lib / p).read_text(encoding="utf-8"), random.Random(rng.random()))
               for p in FILES[:sessions]]
    latencies: list[float] = []
    sent_tokens = 0
    chosen: Counter[str] = Counter()

    async def type_through(editor: Session) -> None:
        nonlocal sent_tokens
        await asyncio.sleep(editor.rng.uniform(0, 0.2))  # sessions start apart
        for _ in range(keys):
            started = time.perf_counter()
            c = await router.complete(**editor.next())
            latencies.append(time.perf_counter() - started)
            sent_tokens += c.usage.prompt_tokens
            chosen[c.deployment.name] += 1
            await asyncio.sleep(editor.rng.uniform(0.02, 0.08))  # the next keystroke

    started = time.perf_counter()
    try:
        await asyncio.gather(*(type_through(e) for e in editors))
    finally:
        await router.aclose()
    wall = time.perf_counter() - started
    total = sum(chosen.values())
    evaluated = sum(transport.evaluated.values())
    return {
        "strategy": strategy,
        "requests": total,
        "prompt_tokens_sent": sent_tokens,
        "prompt_tokens_evaluated": evaluated,
        "evaluated_share": evaluated / sent_tokens if sent_tokens else 0.0,
        "p50_ms": statistics.median(latencies) * 1000,
        "p95_ms": percentile(latencies, 0.95) * 1000,
        "busiest_share_x_fair": max(chosen.values()) / total * len(servers),
        "per_replica": {by_host[h]: n for h, n in sorted(transport.replies.items())},
        "queued_behind_full_with_free_elsewhere": queued_behind_full,
        "wall_s": wall,
    }


HEADING = ("## Local fleets: replica affinity on real llama-servers "
           "(`benchmarks/bench_fleet.py`)")


def markdown(results: list[dict[str, Any]]) -> str:
    """The BENCHMARKS.md section: one table per run of this script."""
    first = results[0]
    lines = [
        HEADING,
        "",
        f"{first['replicas']} llama-server replicas ({first['build']}) of a tiny StarCoder "
        f"2-architecture model with the real vocabulary"
        f"{', `--cache-ram 0` (no host-memory prompt cache)' if first['cache_ram_0'] else ''}"
        f", `-t 1` each, on {first['machine']}. Editor sessions run at once, each typing "
        f"through its own file of the Python standard library: a FIM request per keystroke "
        f"(the file up to the cursor, about {PREFIX_START:,} characters and growing, the next "
        f"{SUFFIX_CHARS} characters as the suffix, and the file's path), 20-80 ms apart, "
        "through one `AsyncRouter` whose three deployments form one replica group (by default: "
        "same provider, variant, model and window on three base URLs). The servers restart "
        "cold for each strategy. *Evaluated* is the sum of llama-server's own "
        "`timings.prompt_n` over its replies: the prompt tokens it did not find in a slot's "
        "KV cache. The last column counts requests sent to a replica whose slots were all busy "
        "while another replica had a free one.",
        "",
        "Targets: at least 70% fewer prompt tokens evaluated than round robin; the busiest "
        "replica at most 1.3x its fair share; no request sent to a full replica while another "
        "had a free slot.",
    ]
    for result in results:
        rows = {r["strategy"]: r for r in result["runs"]}
        rr = rows.get("round_robin")
        lines += [
            "",
            f"### {result['sessions']} sessions, {result['keys']} keystrokes each, "
            f"{result['slots']} slots per replica ({result['date']}, "
            f"{result.get('load_note') or _load_note(result['load_before'])})",
            "",
            "| strategy | requests | prompt tokens sent | evaluated by the servers | "
            "evaluated vs round robin | p50 | p95 | busiest replica (x fair share) | "
            "sent to a full replica, another free |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name in STRATEGIES:
            r = rows.get(name)
            if r is None:
                continue
            vs = "-"
            if rr and rr["prompt_tokens_evaluated"]:
                vs = f"{(r['prompt_tokens_evaluated'] / rr['prompt_tokens_evaluated'] - 1):+.0%}"
            lines.append(
                f"| `{name}` | {r['requests']} | {r['prompt_tokens_sent']:,} | "
                f"{r['prompt_tokens_evaluated']:,} ({r['evaluated_share']:.0%}) | {vs} | "
                f"{r['p50_ms']:,.0f} ms | {r['p95_ms']:,.0f} ms | "
                f"{r['busiest_share_x_fair']:.2f} | "
                f"{r['queued_behind_full_with_free_elsewhere']} |")
        if result.get("note"):
            lines += ["", result["note"]]
    lines += [
        "",
        "Latencies are on 2 cores shared by the three servers, the client and, in these runs, "
        "other jobs (see the load averages): they compare the strategies within one table, not "
        "the servers' speed. What a strategy saves shows in the evaluated tokens, which do not "
        "depend on load.",
    ]
    return "\n".join(lines) + "\n"


def _load_note(load: float) -> str:
    return f"load average {load:.0f} when it started"


def write(section: str, path: Path) -> None:
    """Replace this script's section of BENCHMARKS.md (or add it); `run.py` keeps it."""
    import re

    text = path.read_text(encoding="utf-8")
    parts = [p for p in re.split(r"(?m)^(?=## )", text) if not p.startswith(HEADING)]
    path.write_text("".join(parts).rstrip("\n") + "\n\n" + section, encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--replicas", type=int, default=3)
    ap.add_argument("--slots", type=int, default=2)
    ap.add_argument("--sessions", type=int, default=6)
    ap.add_argument("--keys", type=int, default=20)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--write", nargs="*", metavar="RESULT_JSON",
                    help="put the section into BENCHMARKS.md: from saved results (this "
                         "script's JSON output), or from this run when none are given")
    args = ap.parse_args()
    if args.write:
        saved = [json.loads(Path(f).read_text()) for f in args.write]
        write(markdown(saved), ROOT / "BENCHMARKS.md")
        return
    if args.sessions > len(FILES):
        ap.error(f"at most {len(FILES)} sessions (one file each)")
    load_before = _load()
    binary = find_llama_server()
    cache_ram_0 = has_cache_ram(binary)
    extra = ["-np", str(args.slots), "-c", str(SLOT_CTX * args.slots)]
    if cache_ram_0:
        extra += ["--cache-ram", "0"]
    tokenizer = default_tokenizer_json()
    counter = TokenizerCounter.from_file(tokenizer)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        model = write_tiny_model(Path(tmp) / "tiny.gguf", tokenizer_json=tokenizer,
                                 mode="constant", context=SLOT_CTX * args.slots)
        for strategy in args.strategies.split(","):
            with ExitStack() as stack:
                servers = [stack.enter_context(running_llama_server(
                    binary, model, log_path=Path(tmp) / f"{strategy}-{i}.log",
                    ctx=SLOT_CTX * args.slots, extra_args=extra))
                    for i in range(args.replicas)]
                runs.append(asyncio.run(replay(strategy, servers, counter, args.sessions,
                                               args.keys, args.slots, args.seed)))
    result = {
        "replicas": args.replicas, "slots": args.slots, "sessions": args.sessions,
        "keys": args.keys, "cache_ram_0": cache_ram_0,
        "build": binary.parent.name, "machine": f"{_cores()} cores", "runs": runs,
        "date": time.strftime("%Y-%m-%d", time.gmtime()), "load_before": load_before,
    }
    if args.write is not None:
        write(markdown([result]), ROOT / "BENCHMARKS.md")
    print(markdown([result]) if args.markdown else json.dumps(result, indent=2))


def _load() -> float:
    import os

    return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


if __name__ == "__main__":
    main()
