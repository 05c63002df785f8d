"""Runs the whole benchmark suite and writes BENCHMARKS.md at the repository root.

    python benchmarks/run.py            # full run, about ten minutes on 2 cores
    python benchmarks/run.py --quick    # one short round, under a minute

What it does, in order:

1. Makes the benchmark virtualenvs it needs (git-ignored, never the project's):
   `benchmarks/.venv-server` (uvloop for the mock server) and `benchmarks/.venv-litellm`
   (LiteLLM, from `requirements-litellm.txt`). `--quick` builds the server one if missing but
   uses the LiteLLM one only if it already exists.
2. Starts `mock_server.py` in its own process, pinned to core 0; every client runs in a fresh
   subprocess pinned to core 1, so client and server never share a core.
3. Measures the mock server's own CPU per request with a raw-socket client.
4. Runs every stack in rounds, interleaved (A B C ... then ... C B A): sync requests, async
   requests at concurrency 64, sync and async 200-chunk streams. Ratios are taken against the
   floor measured in the same round, then the median over rounds is reported.
5. Times imports in fresh interpreters (interleaved, median of several) and attributes
   `import starcoder_router` with `-X importtime`.
6. Runs `bench_core.py` (routing and token counting, no I/O) and `bench_estimator.py` (routing
   without a tokenizer against routing on exact counts, on held-out real code).
7. Writes BENCHMARKS.md and the raw results to `benchmarks/results/latest.json`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import report  # noqa: E402
from stacks import BY_NAME, STACKS, Stack  # noqa: E402

RESULTS = HERE / "results"
SERVER_CPU, CLIENT_CPU = 0, 1


class Settings:
    def __init__(self, quick: bool, rounds: int | None) -> None:
        self.quick = quick
        self.rounds = rounds or (1 if quick else 4)
        self.budget_s = 0.3 if quick else 1.5
        self.sync_warmup = 50 if quick else 100
        # RSS "after 1,000 requests" comes from round 1, which runs at least that many.
        self.sync_min_first = 100 if quick else 900
        self.sync_min = 100 if quick else 200
        self.sync_n = 1000 if quick else 5000
        self.async_warmup = 128
        self.async_n = 64 * (20 if quick else 100)
        self.async_min = 320 if quick else 640
        self.chunks = 200
        self.streams = 30 if quick else 100
        self.min_streams = 5 if quick else 10
        self.import_runs = 3 if quick else 7
        self.litellm_import_runs = 1 if quick else 3


# --- virtualenvs ---------------------------------------------------------------------------


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def ensure_venv(name: str, requirements: Path, *, create: bool, log: list[str]) -> Path | None:
    """The python of `benchmarks/.venv-NAME` with `requirements` installed, or None."""
    venv = HERE / f".venv-{name}"
    stamp = venv / ".requirements.sha256"
    want = hashlib.sha256(requirements.read_bytes()).hexdigest()
    py = _venv_python(venv)
    if py.exists() and stamp.exists() and stamp.read_text().strip() == want:
        return py
    if not create:
        log.append(f"{venv.name} not built (run without --quick once to build it)")
        return None
    print(f"building {venv.relative_to(ROOT)} from {requirements.name} ...", flush=True)
    try:
        if not py.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        "-r", str(requirements)], check=True, timeout=900,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        err = getattr(exc, "stderr", b"") or b""
        log.append(f"could not build {venv.name}: {exc} {err.decode(errors='replace')[-300:]}")
        return None
    stamp.write_text(want + "\n")
    return py


# --- the mock server -----------------------------------------------------------------------


class MockServer:
    def __init__(self, python: Path, pin: bool) -> None:
        cmd = [str(python), str(HERE / "mock_server.py"), "--port", "0", "--chunks", "200"]
        if pin:
            cmd += ["--cpu", str(SERVER_CPU)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().split()
        if not line or line[0] != "READY":
            self.proc.kill()
            raise RuntimeError("mock server did not start")
        self.port = int(line[1])
        self.loop = " ".join(line[2:])
        self.base = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# --- running workers -----------------------------------------------------------------------


def _env(kind: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.lower().endswith("_proxy") and k not in ("PYTHONPATH",)}
    env.update({"BENCH_ENV": kind, "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                "NO_PROXY": "127.0.0.1,localhost", "PYTHONHASHSEED": "0"})
    return env


class Runner:
    def __init__(self, settings: Settings, pythons: dict[str, Path], server: MockServer,
                 pin: bool) -> None:
        self.s = settings
        self.pythons = pythons
        self.server = server
        self.pin = pin
        RESULTS.mkdir(exist_ok=True)
        self.stderr = (RESULTS / "worker-stderr.log").open("w")

    def worker(self, stack: Stack, mode: str, **spec: object) -> dict:
        py = self.pythons.get(stack.env)
        if py is None:
            return {"ok": False, "unavailable": True, "error": f"no {stack.env} virtualenv"}
        full = {"stack": stack.name, "mode": mode, "base": self.server.base,
                "cpu": CLIENT_CPU if self.pin else None, "concurrency": 64, **spec}
        self.stderr.write(f"--- {stack.name} {mode}\n")
        self.stderr.flush()
        t = time.perf_counter()
        try:
            proc = subprocess.run([str(py), str(HERE / "worker.py"), json.dumps(full)],
                                  check=False, capture_output=True, text=True, timeout=300,
                                  env=_env(stack.env), cwd=str(ROOT))
        except subprocess.TimeoutExpired:
            return {"ok": False, "error": "timed out after 300 s"}
        self.stderr.write(proc.stderr[-20000:])
        for line in reversed(proc.stdout.splitlines()):
            if line.startswith("RESULT "):
                out = json.loads(line[7:])
                out["process_s"] = time.perf_counter() - t
                return out
        return {"ok": False, "error": f"exit {proc.returncode}: {proc.stderr[-400:]}"}

    def complete(self, stack: Stack, first_round: bool) -> dict:
        s = self.s
        if stack.kind == "sync":
            return self.worker(stack, "complete", n=s.sync_n, warmup=s.sync_warmup,
                               min_n=s.sync_min_first if first_round else s.sync_min,
                               budget_s=s.budget_s)
        return self.worker(stack, "complete", n=s.async_n, warmup=s.async_warmup,
                           min_n=s.async_min, budget_s=s.budget_s)

    def stream(self, stack: Stack) -> dict:
        s = self.s
        return self.worker(stack, "stream", chunks=s.chunks, streams=s.streams,
                           min_streams=s.min_streams, warmup_streams=3, budget_s=s.budget_s)

    def imports(self, probe_python: Path, modules: str, tree: bool) -> dict:
        args = [str(probe_python), str(HERE / "import_probe.py"), modules]
        if tree:
            args.append(str(ROOT))
        cmd = (["taskset", "-c", str(CLIENT_CPU)] if self.pin else []) + args
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120,
                              env=_env("project"), cwd="/")
        try:
            return json.loads(proc.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            return {"error": proc.stderr[-300:]}


def _stacks_for(settings: Settings, only: set[str] | None) -> list[Stack]:
    """The stacks to run: all (or `only` plus their floors), in table order. `--quick` keeps
    two LiteLLM stacks, since each LiteLLM process spends about 3 s importing."""
    wanted = None
    if only:
        wanted = only | {BY_NAME[n].floor for n in only if n in BY_NAME and BY_NAME[n].floor}
    chosen = []
    for st in STACKS:
        if st.name == "raw-socket" or (wanted is not None and st.name not in wanted):
            continue
        if settings.quick and st.env == "litellm" and st.name not in ("litellm",
                                                                       "litellm-async"):
            continue
        chosen.append(st)
    return chosen


def run_rounds(runner: Runner, stacks: list[Stack]) -> list[dict]:
    rounds = []
    for r in range(runner.s.rounds):
        order = stacks if r % 2 == 0 else list(reversed(stacks))
        res: dict[str, dict[str, dict]] = {"complete": {}, "stream": {}}
        t = time.perf_counter()
        for st in order:
            if "complete" in st.modes:
                res["complete"][st.name] = runner.complete(st, first_round=r == 0)
            if "stream" in st.modes and not (runner.s.quick and st.env == "litellm"):
                res["stream"][st.name] = runner.stream(st)
        print(f"round {r + 1}/{runner.s.rounds}: {time.perf_counter() - t:.0f} s", flush=True)
        res["loadavg"] = {"1min_at_end": os.getloadavg()[0]}
        rounds.append(res)
    return rounds


IMPORT_SETS = (
    ("httpx", "project", "httpx"),
    ("aiohttp", "project", "aiohttp"),
    ("httpx + httpx_aiohttp", "project", "httpx,httpx_aiohttp"),
    ("openai", "project", "openai"),
    ("starcoder_router", "project", "starcoder_router"),
    ("litellm", "litellm", "litellm"),
    ("(bare interpreter)", "project", ""),
)


def compile_bytecode(python: Path) -> None:
    """Write the package's bytecode first, as installing it from a wheel does: the probes then
    time loading the package, not compiling its source (which an editable install does on every
    import when PYTHONDONTWRITEBYTECODE is set, as it is in some sandboxes and CI images)."""
    env = _env("project")
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    subprocess.run([str(python), "-m", "compileall", "-q", str(ROOT / "starcoder_router")],
                   check=False, capture_output=True, env=env, timeout=120)


def run_imports(runner: Runner) -> dict[str, list[dict]]:
    if "project" in runner.pythons:
        compile_bytecode(runner.pythons["project"])
    out: dict[str, list[dict]] = {label: [] for label, _, _ in IMPORT_SETS}
    runs = max(runner.s.import_runs, runner.s.litellm_import_runs)
    for i in range(runs):
        for label, env, mods in IMPORT_SETS:
            py = runner.pythons.get(env)
            if py is None:
                continue
            if env == "litellm" and i >= runner.s.litellm_import_runs:
                continue
            if env != "litellm" and i >= runner.s.import_runs:
                continue
            out[label].append(runner.imports(py, mods, tree=env == "project"))
    return out


def import_attribution(python: Path) -> list[dict]:
    """`-X importtime` for `import starcoder_router`: what it pulls in, largest first."""
    proc = subprocess.run([str(python), "-X", "importtime", "-c", "import starcoder_router"],
                          check=False, capture_output=True, text=True, cwd=str(ROOT),
                          env=_env("project"), timeout=120)
    rows = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cum_us, name = line[len("import time:"):].split("|")
        depth = (len(name) - len(name.lstrip(" ")) - 1) // 2
        rows.append({"module": name.strip(), "self_us": int(self_us), "cum_us": int(cum_us),
                     "depth": depth})
    return rows


def run_core(python: Path, quick: bool, pin: bool) -> dict:
    cmd = (["taskset", "-c", str(CLIENT_CPU)] if pin else []) + [
        str(python), str(HERE / "bench_core.py")] + (["--quick"] if quick else [])
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=900,
                          cwd=str(ROOT), env=_env("project"))
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return {"error": (proc.stderr or proc.stdout)[-600:]}


def run_estimator(python: Path, quick: bool, pin: bool) -> dict:
    cmd = (["taskset", "-c", str(CLIENT_CPU)] if pin else []) + [
        str(python), str(HERE / "bench_estimator.py"), "--json"] + (
        ["--requests", "600"] if quick else [])
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=900,
                          cwd=str(ROOT), env=_env("project"))
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return {"error": (proc.stderr or proc.stdout)[-600:]}


def versions(python: Path, names: tuple[str, ...]) -> dict[str, str]:
    code = ("import importlib.metadata as m, json, sys, platform\n"
            "out = {'python': platform.python_version()}\n"
            f"for n in {names!r}:\n"
            "    try: out[n] = m.version(n)\n"
            "    except m.PackageNotFoundError: pass\n"
            "print(json.dumps(out))")
    proc = subprocess.run([str(python), "-c", code], check=False, capture_output=True, text=True,
                          timeout=60)
    try:
        return json.loads(proc.stdout)
    except ValueError:
        return {}


def keep_other_sections(new: str, old: str) -> str:
    """`new` plus every `## ` section of `old` that this run does not write: the benchmarks with
    scripts of their own (estimator, editor-size prompts, gateway, simulate, soak) keep theirs."""
    written = set(re.findall(r"^## .*$", new, re.M))
    kept = [part for part in re.split(r"(?m)^(?=## )", old)[1:]
            if part.splitlines()[0] not in written]
    return new.rstrip("\n") + "\n\n" + "".join(kept) if kept else new


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Run the benchmark suite; write BENCHMARKS.md.")
    p.add_argument("--quick", action="store_true", help="one short round (under a minute)")
    p.add_argument("--rounds", type=int, default=None, help="rounds (default 4; quick 1)")
    p.add_argument("--no-litellm", action="store_true", help="skip the LiteLLM stacks")
    p.add_argument("--no-pin", action="store_true", help="do not pin server and clients")
    p.add_argument("--only", default="", help="comma-separated stack names (floors added)")
    p.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    args = p.parse_args(argv)
    started = time.perf_counter()
    load_before = os.getloadavg()
    settings = Settings(args.quick, args.rounds)
    pin = not args.no_pin and hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2
    notes: list[str] = []

    pythons: dict[str, Path] = {"project": Path(sys.executable)}
    server_py = ensure_venv("server", HERE / "requirements-server.txt", create=True, log=notes)
    if not args.no_litellm:
        lpy = ensure_venv("litellm", HERE / "requirements-litellm.txt", create=not args.quick,
                          log=notes)
        if lpy is not None:
            pythons["litellm"] = lpy
    else:
        notes.append("LiteLLM skipped (--no-litellm)")
    server = MockServer(server_py or Path(sys.executable), pin)
    try:
        runner = Runner(settings, pythons, server, pin)
        only = {n for n in args.only.split(",") if n} or None
        stacks = _stacks_for(settings, only)
        raw = BY_NAME["raw-socket"]
        server_cost = {"complete": runner.complete(raw, first_round=False),
                       "stream": runner.stream(raw)}
        rounds = run_rounds(runner, stacks)
        imports = run_imports(runner)
        attribution = import_attribution(pythons["project"])
        core = run_core(pythons["project"], settings.quick, pin)
        estimator = run_estimator(pythons["project"], settings.quick, pin)
    finally:
        server.stop()
    pkg = ("httpx", "httpcore", "aiohttp", "httpx-aiohttp", "openai", "httpx2", "pydantic",
           "tokenizers", "litellm", "uvloop")
    results = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "quick": settings.quick,
        "rounds": settings.rounds,
        "pinned": pin,
        "server_loop": server.loop,
        "settings": vars(settings),
        "versions": {name: versions(py, pkg) for name, py in
                     {**pythons, **({"server": server_py} if server_py else {})}.items()},
        "stacks": [vars(s) for s in stacks],
        "server_cost": server_cost,
        "rounds_data": rounds,
        "imports": imports,
        "import_attribution": attribution,
        "core": core,
        "estimator": estimator,
        "notes": notes,
        "loadavg": {"before": load_before, "after": os.getloadavg()},
        "git": report.git_describe(ROOT),
    }
    results["elapsed_s"] = time.perf_counter() - started
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=1, default=str))
    out = Path(args.out)
    text = report.render(results)
    if out.is_file():
        text = keep_other_sections(text, out.read_text())
    out.write_text(text)
    print(f"wrote {args.out} in {results['elapsed_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
