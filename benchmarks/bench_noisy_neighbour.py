"""A noisy neighbour: one tenant sends the worst inputs we know while another tenant's latency
on simple requests is measured, against a loopback upstream stand-in.

    python benchmarks/bench_noisy_neighbour.py [--seconds 6] [--attackers 32] [--rounds 3]
                                               [--write] [--profile FILE]

The gateway, the upstream stand-in and the attacker each run in a process of their own; the
victim runs on this one, so that neither client waits for the other's interpreter and the
victim's latency is the gateway's. The attacker runs in a session of its own: with Linux's
`sched_autogroup` CPU time is shared between sessions, and a client on another machine would
not take the gateway's share either. The victim sends `/v1/completions` requests one after
another; the attacker keeps `--attackers` requests in flight, cycling through: a stream with
the most and longest stops allowed over an answer that keeps almost matching them (sent in one
write, so that the gateway finds every chunk buffered at once), a schema with a backtracking
`pattern` over a steered answer, a schema whose `$ref` points at a listening socket (counted:
it must get no connection), a body nested 10,000 deep, a prompt of the largest size allowed,
and bad token limits. Alone and attacked windows alternate `--rounds` times (`--seconds` of
each in all), so both see the same load from the rest of the machine. Prints the victim's
p50/p99 alone and under attack; `--write` puts them in BENCHMARKS.md; `--profile` runs the
gateway under cProfile. `tests/server/test_noisy_neighbour.py` runs the same scenario, shorter,
and holds the bound.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from starcoder_router import Catalog, Deployment  # noqa: E402
from starcoder_router._server.app import RUNNER_OPTIONS, create_app  # noqa: E402
from starcoder_router._server.gateway import Gateway  # noqa: E402
from starcoder_router._server.settings import ServerSettings, TenantSettings  # noqa: E402

HEADING = "## Noisy neighbour: a hostile tenant beside a simple one"
T = TypeVar("T")
VICTIM_KEY, ATTACKER_KEY = "victim-key", "attacker-key"
# The answer the upstream gives to structured-output requests: ^(a+)+$ backtracks on it for
# ~2^40 steps in Python's `re`.
STEERED = json.dumps({"a": "a" * 40 + "!"})


class LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 120) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


async def _upstream(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    chat = request.path.endswith("/chat/completions")
    words = [STEERED] if chat else ["ab" * 8] * min(int(body.get("max_tokens", 16)), 200)
    usage = {"prompt_tokens": 8, "completion_tokens": len(words), "total_tokens": 8 + len(words)}
    if not body.get("stream"):
        text = " ".join(words)
        choice: dict[str, Any] = {"index": 0, "finish_reason": "stop"}
        choice.update({"message": {"role": "assistant", "content": text}} if chat
                      else {"text": text})
        return web.json_response({"id": "u", "object": "x", "choices": [choice],
                                  "usage": usage})
    # The whole stream in one write: the stand-in spends one send on it (it is not what is
    # measured), and the gateway finds every chunk buffered at once, its hardest case.
    events = []
    for i, word in enumerate(words):
        choice = {"index": 0, "finish_reason": "stop" if i == len(words) - 1 else None}
        choice.update({"delta": {"content": word}} if chat else {"text": word})
        events.append(b"data: " + json.dumps({"id": "u", "choices": [choice]}).encode())
    events.append(b"data: " + json.dumps({"id": "u", "choices": [], "usage": usage}).encode())
    events.append(b"data: [DONE]")
    return web.Response(body=b"\n\n".join(events) + b"\n\n",
                        headers={"Content-Type": "text/event-stream"})


async def _site(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, **RUNNER_OPTIONS)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"


def _catalog(base_url: str) -> Catalog:
    deployments = []
    for variant, caps in (("starcoder2-7b", {"completion", "fim", "streaming"}),
                          ("starcoder2-15b-instruct",
                           {"chat", "streaming", "structured_output"})):
        deployments.append(Deployment(
            name=f"mock/{variant}", provider="openai-compatible", variant=variant,
            model=f"mock-{variant}", context_window=16384, base_url=base_url + "/v1",
            input_usd_per_mtok=0.1, output_usd_per_mtok=0.2, capabilities=frozenset(caps)))
    return Catalog(variants=Catalog.default().variants, deployments=tuple(deployments))


def _tenants() -> tuple[TenantSettings, ...]:
    import hashlib

    return tuple(TenantSettings(name=name, key_sha256=hashlib.sha256(key.encode()).hexdigest())
                 for name, key in (("victim", VICTIM_KEY), ("attacker", ATTACKER_KEY)))


def attacks(trap_url: str) -> list[tuple[str, str, bytes]]:
    """(label, path, body) of each hostile request the attacker cycles through."""
    chat = "/v1/chat/completions"
    instruct = "starcoder2-15b-instruct"

    def js(obj: Any) -> bytes:
        return json.dumps(obj).encode()

    def schema(s: Any) -> bytes:
        return js({"model": instruct, "messages": [{"role": "user", "content": "json"}],
                   "response_format": {"type": "json_schema",
                                       "json_schema": {"name": "r", "schema": s}}})

    stops = ["ab" * 127 + "a" + chr(0x100 + i) for i in range(16)]
    return [
        ("max stops, streamed", "/v1/completions",
         js({"prompt": "x", "stop": stops, "stream": True, "max_tokens": 200})),
        ("ReDoS pattern", chat, schema({"type": "object", "properties": {
            "a": {"type": "string", "pattern": "^(a+)+$"}}})),
        ("remote $ref", chat, schema({"$ref": trap_url + "/schema.json"})),
        ("$id + relative $ref", "/api/generate",
         js({"model": "starcoder2", "prompt": "x", "stream": False,
             "format": {"$id": trap_url + "/", "$ref": "x.json"}})),
        ("deep JSON", "/v1/completions",
         b'{"prompt": "x", "x": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"),
        ("deep schema", chat, schema(_deep_schema(29))),  # under the body's depth cap
        ("max-size prompt", "/v1/completions",
         js({"prompt": ("def f(x):\n    return x * 2\n\n" * 9000)[:262_000],
             "max_tokens": 8})),
        ("negative max_new_tokens", "/generate",
         js({"inputs": "x", "parameters": {"max_new_tokens": -5}})),
    ]


def _deep_schema(levels: int) -> Any:
    s: Any = {"type": "string"}
    for _ in range(levels):
        s = {"type": "object", "properties": {"a": s}}
    return s


async def _victim(url: str, until: float) -> list[float]:
    latencies: list[float] = []
    headers = {"Authorization": f"Bearer {VICTIM_KEY}"}
    body = {"prompt": "def add(a, b):", "max_tokens": 8}
    timeout = aiohttp.ClientTimeout(total=10)  # a frozen gateway fails the run, not hangs it
    async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:
        while time.perf_counter() < until:
            started = time.perf_counter()
            async with session.post(url + "/v1/completions", json=body) as r:
                await r.read()
                assert r.status == 200, r.status
            latencies.append(time.perf_counter() - started)
    return latencies


async def _attacker(url: str, until: float, workers: int, trap_url: str,
                    only: tuple[str, ...] = ()) -> Counter[str]:
    seen: Counter[str] = Counter()
    plan = [a for a in attacks(trap_url) if not only or a[0] in only]
    headers = {"Authorization": f"Bearer {ATTACKER_KEY}",
               "Content-Type": "application/json"}
    timeout = aiohttp.ClientTimeout(total=60)

    async def worker(i: int, session: aiohttp.ClientSession) -> None:
        n = i
        while time.perf_counter() < until:
            label, path, body = plan[n % len(plan)]
            n += 1
            async with session.post(url + path, data=body) as r:
                await r.read()
                seen[f"{label}: {r.status}"] += 1

    async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:
        await asyncio.gather(*(worker(i, session) for i in range(workers)))
    return seen


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _child(*args: str, session: bool = False) -> tuple[subprocess.Popen[str], str]:
    """This script in a child process (in a session of its own: `session`), and the first line
    it prints."""
    proc = subprocess.Popen([sys.executable, __file__, *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=session)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.stdin is not None:
        proc.stdin.close()  # a child stops when its stdin closes
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


class Scenario:
    """The upstream stand-in and the gateway (child processes) and a trap socket, up;
    `run(seconds, attackers)` measures. The victim runs on this process's loop, the attacker
    in a child process of its own: neither waits for the other's interpreter."""

    def __init__(self, profile: str | None = None, uncapped: bool = False) -> None:
        self.victim = LoopThread()
        self._upstream, up_url = _child("--upstream")
        self.trap = socket.socket()
        self.trap.bind(("127.0.0.1", 0))
        self.trap.listen(64)
        self.trap_url = f"http://127.0.0.1:{self.trap.getsockname()[1]}"
        self._gateway, self.url = _child(
            "--serve", up_url, *(["--profile", profile] if profile else []),
            *(["--uncapped"] if uncapped else []))
        if not (up_url.startswith("http") and self.url.startswith("http")):
            self.close()
            raise RuntimeError("the upstream stand-in or the gateway did not start")

    def run(self, seconds: float, attackers: int,
            only: tuple[str, ...] = ()) -> dict[str, Any]:
        attack = None
        if attackers:
            attack, ready = _child("--attack", self.url, self.trap_url, str(seconds + 0.2),
                                   str(attackers), *(f"--only={k}" for k in only),
                                   session=True)
            assert ready == "go", ready
            time.sleep(0.2)  # the attack is under way before the victim starts
        until = time.perf_counter() + seconds
        latencies = self.victim.run(_victim(self.url, until), timeout=seconds + 60)
        seen: Counter[str] = Counter()
        if attack is not None:
            assert attack.stdout is not None
            seen.update(json.loads(attack.stdout.readline() or "{}"))
            _stop(attack)
        return _summary(latencies, seen, self.trap_connections())

    def trap_connections(self) -> int:
        self.trap.setblocking(False)
        n = 0
        while True:
            try:
                conn, _ = self.trap.accept()
            except BlockingIOError:
                return n
            conn.close()
            n += 1

    def close(self) -> None:
        _stop(self._gateway)
        _stop(self._upstream)
        self.trap.close()
        self.victim.stop()


async def _until_stdin_closes() -> None:
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


def serve_upstream() -> None:
    """The upstream stand-in, in this (child) process: prints its URL, serves until stdin
    closes."""

    async def run() -> None:
        upstream = web.Application()
        upstream.router.add_post("/v1/completions", _upstream)
        upstream.router.add_post("/v1/chat/completions", _upstream)
        runner, url = await _site(upstream)
        print(url, flush=True)
        await _until_stdin_closes()
        await runner.cleanup()

    asyncio.run(run())


def attack(url: str, trap_url: str, seconds: float, workers: int,
           only: tuple[str, ...]) -> None:
    """The attacker, in this (child) process: prints "go", attacks for `seconds`, prints what
    it was answered (JSON)."""

    async def run() -> Counter[str]:
        print("go", flush=True)
        return await _attacker(url, time.perf_counter() + seconds, workers, trap_url, only)

    print(json.dumps(asyncio.run(run())), flush=True)


def serve(upstream_url: str, profile: str | None = None, uncapped: bool = False) -> None:
    """The gateway under test, in this (child) process: prints its URL, serves until stdin
    closes (with `profile`, under cProfile, its statistics written there)."""

    async def run() -> None:
        gateway = Gateway(settings=_settings(uncapped), catalog=_catalog(upstream_url), env={})
        runner, url = await _site(create_app(gateway))
        print(url, flush=True)
        await _until_stdin_closes()
        await runner.cleanup()
        await gateway.aclose()

    if profile is None:
        asyncio.run(run())
        return
    import cProfile

    with cProfile.Profile() as prof:
        asyncio.run(run())
    prof.dump_stats(profile)


def _settings(uncapped: bool) -> ServerSettings:
    """The gateway's settings: the defaults, or (`uncapped`) no cap on requests in flight."""
    caps = ({"max_requests_in_flight_per_tenant": 10**6, "max_requests_in_flight": 10**6}
            if uncapped else {})
    return ServerSettings(max_tokens=512, tenants=_tenants(), **caps)


def _summary(latencies: list[float], seen: Counter[str], trap: int) -> dict[str, Any]:
    return {"p50_ms": _pct(latencies, 0.50) * 1e3, "p99_ms": _pct(latencies, 0.99) * 1e3,
            "max_ms": max(latencies) * 1e3, "victim_requests": len(latencies),
            "attack_requests": sum(seen.values()), "attack": dict(seen),
            "trap_connections": trap, "latencies": latencies}


def measure(seconds: float, attackers: int, profile: str | None = None,
            rounds: int = 3) -> dict[str, Any]:
    """The victim alone and under attack, `seconds` of each, taken in `rounds` alternating
    windows so that both see the same load from the rest of the machine."""
    scenario = Scenario(profile)
    runs: dict[str, list[dict[str, Any]]] = {"alone": [], "attacked": []}
    try:
        scenario.run(0.5, 0)  # warm up: imports, connections, the first routes
        for _ in range(rounds):
            runs["alone"].append(scenario.run(seconds / rounds, 0))
            runs["attacked"].append(scenario.run(seconds / rounds, attackers))
    finally:
        scenario.close()
    result: dict[str, Any] = {"attackers": attackers, "seconds": seconds, "rounds": rounds}
    for label, parts in runs.items():
        seen: Counter[str] = Counter()
        for part in parts:
            seen.update(part["attack"])
        result[label] = _summary([t for part in parts for t in part["latencies"]], seen,
                                 sum(part["trap_connections"] for part in parts))
    return result


# The same script against the gateway as it was before per-tenant fairness (commit 755fa0a),
# run twice alternating with the current code on the same machine and load (average 5-6).
BEFORE = ("Before per-tenant fairness (commit 755fa0a, this script, two runs alternating with "
          "the current code): 12-13 victim requests under attack, p50 516-528 ms, p99 "
          "898-1,119 ms; alone p50 1.6-3.9 ms, p99 15-20 ms.")


def section(result: dict[str, Any]) -> str:
    alone, attacked = result["alone"], result["attacked"]
    rows = [f"| {label} | {r['victim_requests']} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
            f"{r['max_ms']:.1f} |" for label, r in (("alone", alone), ("under attack", attacked))]
    ratio = (f"Under attack / alone: p50 {attacked['p50_ms'] / alone['p50_ms']:.0f}x, "
             f"p99 {attacked['p99_ms'] / alone['p99_ms']:.0f}x.")
    kinds = sorted(attacked["attack"].items())
    return "\n".join([
        HEADING, "",
        f"`benchmarks/bench_noisy_neighbour.py`: one tenant sends simple `/v1/completions` "
        f"requests one after another, alone and while another tenant keeps "
        f"{result['attackers']} hostile requests in flight (max-length stops on a stream, a "
        "backtracking schema `pattern` over a steered answer, remote `$ref`s, a body nested "
        "10,000 deep, a deep schema, a max-size prompt, negative token limits), "
        f"{result['seconds']:.0f} s of each in {result['rounds']} alternating windows, all "
        "through one gateway process (one event loop, default settings: 8 requests in flight "
        "per tenant) against a loopback upstream stand-in. The stand-in, the attacker and the "
        "victim each run in a process of their own (the attacker in its own session, so that "
        "Linux's per-session CPU sharing does not count its client work against the "
        "gateway's) on the same shared 2-core machine. Latency in ms.", "",
        "| victim | requests | p50 | p99 | max |", "|---|---|---|---|---|", *rows, "",
        f"{ratio} {BEFORE}", "",
        f"The attacker's requests: {attacked['attack_requests']} "
        f"({', '.join(f'{k} x{v}' for k, v in kinds)}). Connections to the `$ref` URL: "
        f"{attacked['trap_connections']}.", ""])


def write(text: str, path: Path) -> None:
    """Replace this benchmark's section of `path` where it stands (at the end when new)."""
    old = path.read_text() if path.exists() else ""
    parts = re.split(r"(?m)^(?=## )", old)
    mine = [i for i, p in enumerate(parts) if p.startswith(HEADING)]
    if not mine:
        path.write_text(old.rstrip("\n") + "\n\n" + text)
        return
    parts[mine[0]] = text + ("\n" if mine[0] < len(parts) - 1 else "")
    path.write_text("".join(p for i, p in enumerate(parts) if i not in mine[1:]))


def main(argv: list[str] | None = None, out: Callable[[str], None] = print) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--attackers", type=int, default=32)
    p.add_argument("--rounds", type=int, default=3, help="alternating alone/attacked windows")
    p.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    p.add_argument("--serve", metavar="UPSTREAM_URL", help=argparse.SUPPRESS)
    p.add_argument("--profile", metavar="FILE", help="cProfile the gateway into FILE")
    p.add_argument("--upstream", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--uncapped", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--attack", nargs=4, metavar=("URL", "TRAP", "SECONDS", "WORKERS"),
                   help=argparse.SUPPRESS)
    p.add_argument("--only", action="append", default=[], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        serve(args.serve, args.profile, args.uncapped)
        return
    if args.upstream:
        serve_upstream()
        return
    if args.attack:
        url, trap, seconds, workers = args.attack
        attack(url, trap, float(seconds), int(workers), tuple(args.only))
        return
    result = measure(args.seconds, args.attackers, args.profile, args.rounds)
    text = section(result)
    out(text)
    if args.write:
        write(text, ROOT / "BENCHMARKS.md")


if __name__ == "__main__":
    main()
