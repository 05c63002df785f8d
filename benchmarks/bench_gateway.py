"""The gateway (`starcoder-router serve`) against LiteLLM's proxy, on the same loopback mock.

    .venv/bin/python benchmarks/bench_gateway.py [--seconds 5] [--concurrency 64] [--no-litellm]
    .venv/bin/python benchmarks/bench_gateway.py --stacks     # aiohttp.web vs Starlette/uvicorn

Each target gets `--concurrency` clients sending OpenAI `/v1/completions` requests back to back
for `--seconds`, first plain, then streamed: requests per second, p50/p99 latency, time to
first token for streams; then one client alone (`single`), whose p50 minus the direct one is
the latency the hop adds without queueing; and the server's RSS after the load (LiteLLM: its
whole process tree). One process per server, no pinning: the machine is
shared, so compare figures from the same run only.

LiteLLM's proxy runs in its own virtualenv, `benchmarks/.venv-litellm-proxy`, built from
`requirements-litellm-proxy.txt` (its `proxy` extra wants a `litellm-proxy` wheel that is not on
every index; the proxy's modules ship in `litellm` itself, so we install its server
dependencies by name). `--stacks` runs the two candidate server stacks as minimal apps in
`benchmarks/.venv-server-stacks` (`requirements-server-stacks.txt`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PROMPT = "def fib(n):"
MAX_TOKENS = 16


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mib(pid: int) -> float:
    """RSS of a process and its children, from /proc."""
    total = 0
    pids = [pid]
    with contextlib.suppress(OSError):
        pids += [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and its children (every thread), from /proc."""
    total = 0.0
    pids = [pid]
    with contextlib.suppress(OSError):
        pids += [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    for p in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def wait_http(url: str, timeout: float = 60.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def start(cmd: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env=env)


# --- load ------------------------------------------------------------------------------------


async def load(url: str, model: str, *, seconds: float, concurrency: int, stream: bool,
               headers: dict[str, str]) -> dict[str, float]:
    import aiohttp

    body = {"model": model, "prompt": PROMPT, "max_tokens": MAX_TOKENS, "stream": stream}
    latencies: list[float] = []
    ttfts: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds
    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn, headers=headers) as session:

        async def one() -> None:
            nonlocal errors
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                try:
                    async with session.post(url, json=body) as r:
                        if r.status != 200:
                            errors += 1
                            await r.read()
                            continue
                        if stream:
                            first = None
                            async for line in r.content:
                                if first is None and line.startswith(b"data: {"):
                                    first = time.perf_counter() - t0
                            ttfts.append(first or 0.0)
                        else:
                            json.loads(await r.read())
                except aiohttp.ClientError:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - t0)

        started = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    out = {"rps": len(latencies) / elapsed, "errors": errors,
           "p50_ms": 1000 * statistics.median(latencies) if latencies else float("nan"),
           "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))] if latencies else 0}
    if ttfts:
        out["ttft_p50_ms"] = 1000 * statistics.median(ttfts)
    return out


def measure(name: str, url: str, model: str, pid: int | None, args: argparse.Namespace,
            headers: dict[str, str] | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {"target": name}
    for stream in (False, True):
        # a short warm-up, then the measured run
        asyncio.run(load(url, model, seconds=1.0, concurrency=args.concurrency, stream=stream,
                         headers=headers or {}))
        before = cpu_s(pid) if pid is not None else 0.0
        res = asyncio.run(load(url, model, seconds=args.seconds, concurrency=args.concurrency,
                               stream=stream, headers=headers or {}))
        if pid is not None and res["rps"]:
            # The server's CPU per request: steadier than wall-clock figures on a shared machine.
            res["cpu_us"] = 1e6 * (cpu_s(pid) - before) / (res["rps"] * args.seconds)
        row["stream" if stream else "complete"] = res
    # One client at a time: the latency a request pays for the hop, without queueing.
    before = cpu_s(pid) if pid is not None else 0.0
    row["single"] = asyncio.run(load(url, model, seconds=args.seconds / 2, concurrency=1,
                                     stream=False, headers=headers or {}))
    if pid is not None and row["single"]["rps"]:
        row["single"]["cpu_us"] = (1e6 * (cpu_s(pid) - before)
                                   / (row["single"]["rps"] * args.seconds / 2))
    if pid is not None:
        row["rss_mib"] = rss_mib(pid)
    print(json.dumps(row), flush=True)
    return row


# --- the targets ----------------------------------------------------------------------------


def start_mock() -> tuple[subprocess.Popen[str], str]:
    server_py = HERE / ".venv-server" / "bin" / "python"
    py = str(server_py) if server_py.exists() else sys.executable
    proc = subprocess.Popen([py, str(HERE / "mock_server.py"), "--port", "0"],
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    if not line or line[0] != "READY":
        raise RuntimeError("mock server did not start")
    return proc, f"http://127.0.0.1:{line[1]}"


def gateway_config(mock: str, path: Path) -> None:
    path.write_text(
        '[policy]\nallow_providers = ["openai-compatible"]\n'
        "[[deployments]]\n"
        'name = "mock/starcoder2-3b"\nprovider = "openai-compatible"\n'
        f'variant = "starcoder2-3b"\nmodel = "bench-model"\nbase_url = "{mock}/v1"\n'
        "context_window = 16384\n"
        # Every load client comes from 127.0.0.1: one address, so its connection cap goes up.
        '[server]\nmax_tokens = 4096\nmax_connections_per_client = 1024\n')


def litellm_config(mock: str, path: Path) -> None:
    path.write_text(
        "model_list:\n"
        "  - model_name: starcoder2\n"
        "    litellm_params:\n"
        "      model: text-completion-openai/bench-model\n"
        f"      api_base: {mock}/v1\n"
        "      api_key: unused\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
        "  drop_params: true\n")


def run_gateways(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    mock, mock_url = start_mock()
    tmp = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        rows.append(measure("direct (mock)", mock_url + "/v1/completions", "bench-model",
                            None, args))
        cfg = tmp / "router.toml"
        gateway_config(mock_url, cfg)
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
        gw = start([sys.executable, "-m", "starcoder_router._cli", "serve", "--config",
                    str(cfg), "--port", str(port), "--state-dir", str(tmp / "state")], env=env)
        procs.append(gw)
        wait_http(f"http://127.0.0.1:{port}/health")
        rows.append(measure("starcoder-router serve", f"http://127.0.0.1:{port}/v1/completions",
                            "starcoder2", gw.pid, args))
        stop(gw)
        litellm = HERE / ".venv-litellm-proxy" / "bin" / "litellm"
        if args.no_litellm or not litellm.exists():
            print(json.dumps({"note": "LiteLLM proxy skipped"}), flush=True)
            return rows
        lcfg = tmp / "litellm.yaml"
        litellm_config(mock_url, lcfg)
        port = free_port()
        key = "sk-bench-" + os.urandom(16).hex()  # the proxy refuses to start without one
        lenv = {**env, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR",
                "NO_PROXY": "127.0.0.1,localhost", "LITELLM_MASTER_KEY": key}
        lp = start([str(litellm), "--config", str(lcfg), "--port", str(port), "--host",
                    "127.0.0.1", "--num_workers", "1"], env=lenv)
        procs.append(lp)
        wait_http(f"http://127.0.0.1:{port}/health/liveliness", timeout=120)
        rows.append(measure("LiteLLM proxy", f"http://127.0.0.1:{port}/v1/completions",
                            "starcoder2", lp.pid, args,
                            headers={"Authorization": f"Bearer {key}"}))
    finally:
        for p in procs:
            stop(p)
        mock.terminate()
        mock.wait(5)
    return rows


# --- aiohttp.web vs Starlette under uvicorn ----------------------------------------------------

_REPLY = {"id": "x", "object": "text_completion", "model": "m",
          "choices": [{"index": 0, "text": "    return fib(n - 1) + fib(n - 2)\n",
                       "finish_reason": "stop"}],
          "usage": {"prompt_tokens": 4, "completion_tokens": 16, "total_tokens": 20}}


def _events() -> list[bytes]:
    return [b"data: " + json.dumps({"choices": [{"index": 0, "text": "x"}]}).encode() + b"\n\n"
            for _ in range(MAX_TOKENS)] + [b"data: [DONE]\n\n"]


def serve_aiohttp(port: int, uvloop: bool = False) -> None:
    from aiohttp import web

    async def completions(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if not body.get("stream"):
            return web.json_response(_REPLY)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for event in _events():
            await resp.write(event)
        return resp

    app = web.Application()
    app.router.add_post("/v1/completions", completions)
    app.router.add_get("/health", lambda r: web.json_response({}))  # type: ignore[arg-type,return-value]
    loop = None
    if uvloop:
        import uvloop as uv

        loop = uv.new_event_loop()
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, loop=loop)


def serve_starlette(port: int) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    async def completions(request: Request) -> Response:
        body = await request.json()
        if not body.get("stream"):
            return JSONResponse(_REPLY)

        async def gen():  # type: ignore[no-untyped-def]
            for event in _events():
                yield event

        return StreamingResponse(gen(), media_type="text/event-stream")

    async def health(request: Request) -> Response:
        return JSONResponse({})

    app = Starlette(routes=[Route("/v1/completions", completions, methods=["POST"]),
                            Route("/health", health)])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="error", access_log=False)


def run_stacks(args: argparse.Namespace) -> list[dict[str, Any]]:
    py = HERE / ".venv-server-stacks" / "bin" / "python"
    if not py.exists():
        print(json.dumps({"note": "benchmarks/.venv-server-stacks missing"}))
        return []
    rows = []
    for name, mode in (("aiohttp.web (asyncio loop)", "--serve-aiohttp"),
                       ("aiohttp.web (uvloop)", "--serve-aiohttp-uvloop"),
                       ("Starlette + uvicorn (uvloop, httptools)", "--serve-starlette")):
        port = free_port()
        proc = start([str(py), __file__, mode, str(port)])
        try:
            wait_http(f"http://127.0.0.1:{port}/health")
            rows.append(measure(name, f"http://127.0.0.1:{port}/v1/completions", "m", proc.pid,
                                args))
        finally:
            stop(proc)
    return rows


BEGIN, END = "<!-- bench_gateway:begin -->", "<!-- bench_gateway:end -->"


def markdown(gateways: list[dict[str, Any]], stacks: list[dict[str, Any]],
             args: argparse.Namespace) -> str:
    """The BENCHMARKS.md section for one run."""
    load = os.getloadavg()[0]
    out = [BEGIN, "## Gateway: `starcoder-router serve` vs LiteLLM's proxy", "",
           f"Generated by `python benchmarks/bench_gateway.py --write` on "
           f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {args.concurrency} "
           f"concurrent clients for {args.seconds:g} s per mode, OpenAI `/v1/completions`, "
           f"`max_tokens` {MAX_TOKENS}, the same loopback mock (`mock_server.py`) behind every "
           f"target; no pinning, load average {load:.1f} on {os.cpu_count()} cores after the "
           "run (other work shared the machine: compare rows of this run only). "
           "`single` is one client alone: its p50 minus the direct one is what the hop adds "
           "without queueing. *CPU µs/req* is the server's CPU (all its threads and "
           "processes) per completion, under load and for the single client.", "",
           "| target | req/s | p50 ms | p99 ms | stream req/s | stream TTFT p50 ms "
           "| single p50 ms | added p50 ms | CPU µs/req (load / single) | RSS MiB |",
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    direct = next((r for r in gateways if str(r["target"]).startswith("direct")), None)
    base = direct["single"]["p50_ms"] if direct else 0.0
    for r in gateways:
        c, st, one = r["complete"], r["stream"], r["single"]
        added = "-" if r is direct else f"{one['p50_ms'] - base:.2f}"
        rss = f"{r['rss_mib']:.0f}" if "rss_mib" in r else "-"
        cpu = (f"{c['cpu_us']:,.0f} / {one['cpu_us']:,.0f}"
               if "cpu_us" in c and "cpu_us" in one else "-")
        out.append(f"| {r['target']} | {c['rps']:,.0f} | {c['p50_ms']:.1f} | "
                   f"{c['p99_ms']:.1f} | {st['rps']:,.0f} | {st['ttft_p50_ms']:.1f} | "
                   f"{one['p50_ms']:.2f} | {added} | {cpu} | {rss} |")
    ours = next((r for r in gateways if str(r["target"]).startswith("starcoder")), None)
    theirs = next((r for r in gateways if str(r["target"]).startswith("LiteLLM")), None)
    if ours and theirs:
        ratio = ours["complete"]["rps"] / theirs["complete"]["rps"]
        sratio = ours["stream"]["rps"] / theirs["stream"]["rps"]
        x = "\u00d7"
        out += ["", f"Throughput: {ratio:.1f}{x} LiteLLM's proxy for completions, "
                f"{sratio:.1f}{x} for streams (target: at least 40{x})."]
    if stacks:
        out += ["", "Server stack, chosen by measurement (`--stacks`: the same minimal "
                "completion endpoint on each, same load):", "",
                "| stack | req/s | p50 ms | stream req/s | stream TTFT p50 ms | RSS MiB |",
                "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for r in stacks:
            c, st = r["complete"], r["stream"]
            out.append(f"| {r['target']} | {c['rps']:,.0f} | {c['p50_ms']:.1f} | "
                       f"{st['rps']:,.0f} | {st['ttft_p50_ms']:.1f} | {r['rss_mib']:.0f} |")
        out += ["", "The gateway runs on aiohttp.web, with uvloop's event loop when installed "
                "(the `server` extra brings it): level with Starlette under uvicorn here, and "
                "already a core dependency (the router's own transport), so the `server` "
                "extra adds only prometheus-client and uvloop."]
    out.append(END)
    return "\n".join(out)


def write_section(text: str) -> None:
    path = ROOT / "BENCHMARKS.md"
    doc = path.read_text()
    if BEGIN in doc and END in doc:
        doc = doc[:doc.index(BEGIN)] + text + doc[doc.index(END) + len(END):]
    else:
        doc = doc.rstrip("\n") + "\n\n" + text + "\n"
    path.write_text(doc)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--no-litellm", action="store_true")
    p.add_argument("--stacks", action="store_true", help="compare the server stacks only")
    p.add_argument("--write", action="store_true",
                   help="run both comparisons and write their section of BENCHMARKS.md")
    p.add_argument("--serve-aiohttp", type=int, help=argparse.SUPPRESS)
    p.add_argument("--serve-aiohttp-uvloop", type=int, help=argparse.SUPPRESS)
    p.add_argument("--serve-starlette", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve_aiohttp:
        serve_aiohttp(args.serve_aiohttp)
        return 0
    if args.serve_aiohttp_uvloop:
        serve_aiohttp(args.serve_aiohttp_uvloop, uvloop=True)
        return 0
    if args.serve_starlette:
        serve_starlette(args.serve_starlette)
        return 0
    if args.write:
        gateways = run_gateways(args)
        write_section(markdown(gateways, run_stacks(args), args))
    elif args.stacks:
        run_stacks(args)
    else:
        run_gateways(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
