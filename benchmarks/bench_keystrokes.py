"""Keystroke replay: editors typing through real source files, through the real gateway, with
the autocomplete features off and on.

    python benchmarks/bench_keystrokes.py [--quick] [--write] [--json PATH]

What is replayed
- Sessions type through functions of Python standard-library modules (`FILES`, read from
  `sysconfig.get_paths()["stdlib"]`): each session picks a `def` line (seeded) and types the
  code from there, character by character; a newline and the next line's indentation are one
  keystroke, as an editor's auto-indent makes them. The code being typed is absent from the
  buffer: the prefix is what was typed so far (at most `PREFIX_CHARS` of it), the suffix the
  code after the function (at most `SUFFIX_CHARS`).
- Inter-key times are lognormal with a median of 120 ms (sigma 0.45: most gaps 60-250 ms,
  bursts included), plus a pause of 1-3 s (uniform) after 4% of keystrokes and after a quarter
  of the line ends, where people stop to think. Everything is seeded (`--seed`).
- Two client behaviours, both on the OpenAI `/v1/completions` route with `prompt` + `suffix`:
  * Continue-like: waits 350 ms after the last keystroke (`debounceDelay: 350` in
    continuedev/continue core/util/parameters.ts), streams (temperature 0.01, as
    core/autocomplete/CompletionProvider.ts sets it), and aborts its request in flight on the
    next keystroke, which closes the connection (CompletionStreamer cancels the running
    generator). Its own client-side cache and generator reuse are not modelled: they are what
    the gateway's features would do for every client.
  * llm-vscode-like: waits 150 ms (`llm.requestDelay` default 150 in huggingface/llm-vscode
    package.json), asks for a plain (non-streamed) answer with `max_new_tokens` 60,
    temperature 0.2, top_p 0.95 (its default request body), and never aborts: a request in
    flight runs on when the user types on.
- The upstream stand-in (`StandIn`, aiohttp on loopback) plays a hosted StarCoder 2 3B/7B
  fill-in-the-middle endpoint: time to first token uniform in 150-300 ms, then 20 ms per token
  (tokens of about 4 characters, spaces joined to the next word), streamed as SSE or sent whole.
  Its answer for a cursor position is the file's TRUE continuation with probability `accuracy`
  (30% for the headline figures: about the share of Copilot's suggestions users accept; 15% and
  50% as a sensitivity check) and otherwise a plausible wrong one: the same column of another
  line of the file. Either way it runs to the end of the line plus 0-3 more lines (seeded),
  then ends, within the request's `max_tokens` and `stop`. It is deterministic per cursor
  position, so repeats are identical. It counts what it was sent and what it generated: a
  stream cut by the gateway stops generating, a plain request runs to its end whatever the
  client does (a provider does not see a plain request's client go away).
- Prices: the default catalog's Fireworks StarCoder 2 3B and 7B prices, on two stand-in
  deployments (`openai-compatible`); the cheaper 3B is tried first.
- Features OFF: the gateway as shipped, the client's own parameters. ON: `[autocomplete]`
  sessions, typed-ahead reuse and an exact-repeat cache (when this build has them: the run
  says which), `[server] autocomplete_mode = "auto"`, and `first_token_timeout_s` on both
  deployments; the client sends `x-starcoder-router-session` with its user's name (Continue's
  `requestOptions.headers` can). DEADLINE: OFF plus the first-token deadline alone.
- The slow run: the 3B deployment takes 2 s to its first token on `--slow-share` of its
  requests (a stalled queue); features OFF, DEADLINE and ON side by side.

Runs that are compared (OFF, ON, DEADLINE for one client) replay the same keystrokes at the
same moments, concurrently, each against its own gateway. The gateways run in one process on
one event loop (as `starcoder-router serve` does), the stand-in in a second process, the
editors in this one, all on the same machine; the report gives its load average.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import re
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.request
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from starcoder_router import Catalog, ConfigError, MemoryStore  # noqa: E402
from starcoder_router._routing.tokens import load_token_counter  # noqa: E402
from starcoder_router._server.app import create_app, listen  # noqa: E402
from starcoder_router._server.gateway import Gateway  # noqa: E402

HEADING = "## Editor keystroke replay: autocomplete features off and on"

FILES = ("textwrap.py", "heapq.py", "shlex.py", "fnmatch.py", "queue.py", "glob.py",
         "graphlib.py", "sched.py", "calendar.py", "string.py", "bisect.py", "colorsys.py")
PREFIX_CHARS, SUFFIX_CHARS = 3000, 1000

# Typing (seconds).
KEY_MEDIAN_S, KEY_SIGMA = 0.120, 0.45
PAUSE_SHARE, LINE_END_PAUSE_SHARE, PAUSE_S = 0.04, 0.25, (1.0, 3.0)

# The stand-in (seconds).
TTFT_S, PER_TOKEN_S = (0.150, 0.300), 0.020
SLOW_TTFT_S = 2.0
FIRST_TOKEN_TIMEOUT_S = 1.0  # well above a healthy TTFT (with room for a loaded machine)

HEADER_SESSION = "x-starcoder-router-session"
HEADER_SERVED_FROM = "x-starcoder-router-served-from"
HEADER_SUPERSEDED = "x-starcoder-router-superseded"


def default_prices() -> dict[str, tuple[float, float, str]]:
    """Stand-in model -> (input, output $/M tokens, variant) from the default catalog."""
    out = {}
    for dep in Catalog.default().deployments:
        if dep.provider == "fireworks" and dep.variant in ("starcoder2-3b", "starcoder2-7b"):
            out[f"standin-{dep.variant.rsplit('-', 1)[1]}"] = (
                dep.input_usd_per_mtok, dep.output_usd_per_mtok, dep.variant)
    assert len(out) == 2, out
    return out


PRICES = default_prices()


# -- sessions ----------------------------------------------------------------------------------

@dataclass
class Session:
    user: str
    file: str
    text: str
    start: int
    end: int
    keys: list[tuple[float, int]]  # (seconds from the session's start, cursor after the key)

    def prompt_at(self, pos: int) -> tuple[str, str]:
        """The editor's prefix and suffix with the cursor at `pos`: typed so far, and the code
        after the function being typed, each cut to whole lines, as editors prune a prompt
        to its budget (Continue's `pruneLinesFromTop` in continuedev/continue
        core/llm/countTokens.ts): the prefix's first line changes only as whole lines leave
        the budget, not with every keystroke."""
        text = self.text
        start = 0 if pos <= PREFIX_CHARS else text.find("\n", pos - PREFIX_CHARS) + 1
        end = text.rfind("\n", self.end, self.end + SUFFIX_CHARS) + 1 or self.end
        return text[min(start, pos):pos], text[self.end:end]


def corpus() -> dict[str, str]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    return {name: (stdlib / name).read_text(encoding="utf-8") for name in FILES
            if (stdlib / name).exists()}


def plan_session(rng: random.Random, user: str, files: dict[str, str],
                 max_keys: int) -> Session:
    name = rng.choice(sorted(files))
    text = files[name]
    starts = [m.start(1) for m in re.finditer(r"(?m)^[ \t]*(def )", text)]
    start = rng.choice(starts[:-1] or starts)
    pos, t, keys = start, 0.0, []
    while len(keys) < max_keys and pos < len(text):
        nxt = pos + 1
        if text[pos] == "\n":  # the newline and the auto-indent of the next line
            while nxt < len(text) and text[nxt] in " \t":
                nxt += 1
        gap = min(1.0, rng.lognormvariate(math.log(KEY_MEDIAN_S), KEY_SIGMA))
        line_end = pos > start and text[pos - 1] == "\n"
        if rng.random() < PAUSE_SHARE or (line_end and rng.random() < LINE_END_PAUSE_SHARE):
            gap += rng.uniform(*PAUSE_S)
        t += gap
        keys.append((t, nxt))
        pos = nxt
    return Session(user, name, text, start, pos, keys)


def plan(seed: int, sessions: int, keys: int) -> list[Session]:
    files = corpus()
    return [plan_session(random.Random(seed * 1000 + i), f"user{i}", files, keys)
            for i in range(sessions)]


# -- the upstream stand-in ---------------------------------------------------------------------

_TOKEN = re.compile(r"[ \t]*\w{1,6}|[ \t]*[^\w\s]{1,2}|[ \t]+|\n")


def tokens_of(text: str) -> list[str]:
    return _TOKEN.findall(text)


@dataclass
class Books:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usd: float = 0.0
    by_model: dict[str, int] = field(default_factory=dict)


class StandIn:
    """A hosted StarCoder 2 FIM endpoint on loopback: `/{run}/v1/completions`."""

    def __init__(self, files: dict[str, str], seed: int) -> None:
        self.files = files
        self.seed = seed
        self.runs: dict[str, dict[str, Any]] = {}  # run -> accuracy, slow_share
        self.books: dict[str, Books] = {}
        self.counter = load_token_counter(None)
        self._where: dict[int, tuple[str, int] | None] = {}

    def add_run(self, run: str, accuracy: float, slow_share: float) -> None:
        self.runs[run] = {"accuracy": accuracy, "slow_share": slow_share,
                          "rng": random.Random(zlib.crc32(run.encode()) + self.seed)}
        self.books[run] = Books()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/{run}/v1/completions", self.handle)
        app.router.add_post("/_runs", self._add_run)
        app.router.add_get("/_books", self._books)
        return app

    async def _add_run(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.add_run(body["run"], body["accuracy"], body["slow_share"])
        return web.json_response({})

    async def _books(self, request: web.Request) -> web.Response:
        return web.json_response({run: asdict(books) for run, books in self.books.items()})

    def locate(self, prefix: str) -> tuple[str, int] | None:
        """Which file and cursor position a prefix comes from."""
        key = hash(prefix)
        if key not in self._where:
            found = None
            for name, text in self.files.items():
                i = text.find(prefix)
                if i >= 0:
                    found = (name, i + len(prefix))
                    break
            self._where[key] = found
        return self._where[key]

    def answer(self, prompt: str, accuracy: float) -> str:
        """The model's whole output for this cursor: true or plausible-wrong, then its end."""
        prefix = prompt.split("<fim_prefix>", 1)[-1].split("<fim_suffix>", 1)[0]
        where = self.locate(prefix)
        if where is None:
            return "pass\n"
        name, pos = where
        text = self.files[name]
        rng = random.Random(zlib.crc32(f"{name}:{pos}:{self.seed}".encode()))
        right = rng.random() < accuracy
        extra_lines = rng.choice((0, 0, 1, 1, 2, 3))
        start = pos
        if not right:
            line_start = text.rfind("\n", 0, pos) + 1
            col = pos - line_start
            lines = [m.start() for m in re.finditer(r"(?m)^.+$", text)]
            for _ in range(20):
                other = rng.choice(lines)
                if other != line_start and text.find("\n", other) - other > col:
                    start = other + col
                    break
        end = start
        for _ in range(extra_lines + 1):
            nl = text.find("\n", end)
            end = len(text) if nl < 0 else nl + 1
        return text[start:end].rstrip("\n") if extra_lines == 0 else text[start:end]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        run = request.match_info["run"]
        body = await request.json()
        cfg, books = self.runs[run], self.books[run]
        model = str(body.get("model"))
        text = self.answer(str(body.get("prompt", "")), cfg["accuracy"])
        for stop in body.get("stop") or ():
            i = text.find(stop)
            if i >= 0:
                text = text[:i]
        toks = tokens_of(text)[: int(body.get("max_tokens") or 16)]
        prompt_tokens = self.counter.count(str(body.get("prompt", "")))
        rng = cfg["rng"]
        ttft = rng.uniform(*TTFT_S)
        if model.endswith("-3b") and rng.random() < cfg["slow_share"]:
            ttft = SLOW_TTFT_S
        books.requests += 1
        books.by_model[model] = books.by_model.get(model, 0) + 1
        sent = 0
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        try:
            if not body.get("stream"):
                sent = len(toks)  # generated in full, whether anyone still listens or not
                await asyncio.sleep(ttft + PER_TOKEN_S * len(toks))
                usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(toks),
                         "total_tokens": prompt_tokens + len(toks)}
                return web.json_response({
                    "id": "standin", "object": "text_completion", "model": model,
                    "choices": [{"index": 0, "text": "".join(toks), "finish_reason": "stop"}],
                    "usage": usage})
            await response.prepare(request)
            await asyncio.sleep(ttft)
            for i, tok in enumerate(toks):
                last = i == len(toks) - 1
                await _event(response, {"id": "standin", "model": model, "choices": [{
                    "index": 0, "text": tok, "finish_reason": "stop" if last else None}]})
                sent += 1
                await asyncio.sleep(PER_TOKEN_S)
            await _event(response, {"id": "standin", "model": model, "choices": [], "usage": {
                "prompt_tokens": prompt_tokens, "completion_tokens": len(toks),
                "total_tokens": prompt_tokens + len(toks)}})
            await response.write(b"data: [DONE]\n\n")
            return response
        except ConnectionResetError:  # the gateway closed the call: the provider stops
            return response
        finally:
            # The provider bills the prompt and what it generated before the call was closed.
            price_in, price_out, _ = PRICES[model]
            books.prompt_tokens += prompt_tokens
            books.completion_tokens += sent
            books.usd += (prompt_tokens * price_in + sent * price_out) / 1e6


async def _event(response: web.StreamResponse, obj: dict[str, Any]) -> None:
    await response.write(b"data: " + json.dumps(obj).encode() + b"\n\n")


# -- gateways ----------------------------------------------------------------------------------

FEATURES = ("off", "deadline", "on")


def gateway_config(base_url: str, features: str, sessions: bool) -> str:
    deadline = features in ("deadline", "on")
    lines = ['[policy]', 'allow_providers = ["openai-compatible"]', '']
    for model, (price_in, price_out, variant) in PRICES.items():
        lines += ['[[deployments]]', f'name = "standin/{variant}"',
                  'provider = "openai-compatible"', f'variant = "{variant}"',
                  f'model = "{model}"', 'context_window = 16384', f'base_url = "{base_url}"',
                  f'input_usd_per_mtok = {price_in}', f'output_usd_per_mtok = {price_out}',
                  'capabilities = ["completion", "fim", "streaming"]']
        if deadline:
            lines.append(f'first_token_timeout_s = {FIRST_TOKEN_TIMEOUT_S}')
        lines.append('')
    # Every editor of the replay comes from 127.0.0.1: lift the per-address connection cap
    # that would otherwise treat them as one client.
    lines += ['[server]', 'access_log = false', 'max_connections_per_client = 1024']
    if features == "on":
        lines.append('autocomplete_mode = "auto"')
    if sessions:  # explicitly, both ways: a build may turn them on by default
        on = "true" if features == "on" else "false"
        lines += ['', '[autocomplete]', f'sessions = {on}', f'reuse = {on}',
                  f'cache_entries = {4096 if features == "on" else 0}']
    return "\n".join(lines) + "\n"


def sessions_supported(tmp: Path) -> bool:
    """Does this build know the `[autocomplete]` table (sessions, reuse, cache)?"""
    path = tmp / "probe.toml"
    path.write_text(gateway_config("http://127.0.0.1:9/v1", "on", True))
    try:
        Gateway.from_config(path, env={}, store=MemoryStore())
    except ConfigError:
        return False
    return True


async def _serve(app: web.Application, settings: Any = None) -> tuple[web.AppRunner, str]:
    if settings is None:
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
    else:
        runner = await listen(app, settings, host="127.0.0.1", port=0)
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"


# -- editors -----------------------------------------------------------------------------------

@dataclass
class Client:
    name: str
    debounce_s: float
    stream: bool
    aborts: bool
    body: dict[str, Any]


CLIENTS = {
    "continue": Client("Continue-like", 0.350, True, True,
                       {"max_tokens": 256, "temperature": 0.01}),
    "llm-vscode": Client("llm-vscode-like", 0.150, False, False,
                         {"max_tokens": 60, "temperature": 0.2, "top_p": 0.95}),
}


@dataclass
class Tally:
    keystrokes: int = 0
    requests: int = 0
    first_char_s: list[float] = field(default_factory=list)
    shown: int = 0  # suggestions whose first character came before the next keystroke
    # (seconds, observed): time to the first suggestion character, or (False) how long a
    # request ran before it ended without one
    samples: list[tuple[float, bool]] = field(default_factory=list)
    served_from: dict[str, int] = field(default_factory=dict)
    superseded: int = 0
    errors: int = 0


async def one_request(http: aiohttp.ClientSession, url: str, client: Client, prefix: str,
                      suffix: str, headers: dict[str, str], tally: Tally,
                      next_key_at: float) -> None:
    """One editor request; `next_key_at` (loop time) is when the user types on, after which
    an editor no longer shows its answer. Its time to the first suggestion character is a
    sample, or a censored one (at least this long) when it ended without any: aborted by the
    editor, superseded, or empty."""
    body = {"model": "starcoder2", "prompt": prefix, "suffix": suffix,
            "stream": client.stream, **client.body}
    loop = asyncio.get_running_loop()
    started = loop.time()
    seen = False

    def first_char() -> None:
        nonlocal seen
        now = loop.time()
        seen = True
        tally.first_char_s.append(now - started)
        tally.samples.append((now - started, True))
        tally.shown += now < next_key_at

    tally.requests += 1
    try:
        async with http.post(url + "/v1/completions", json=body, headers=headers) as r:
            if r.status != 200:
                tally.errors += 1
                await r.read()
                return
            source = r.headers.get(HEADER_SERVED_FROM, "upstream")
            tally.served_from[source] = tally.served_from.get(source, 0) + 1
            if r.headers.get(HEADER_SUPERSEDED):
                tally.superseded += 1
                return
            if not client.stream:
                data = await r.json()
                if data["choices"] and data["choices"][0]["text"]:
                    first_char()
                return
            async for line in r.content:
                if seen or not line.startswith(b"data: {"):
                    continue
                event = json.loads(line[6:])
                if event.get("choices") and event["choices"][0].get("text"):
                    first_char()
    finally:
        if not seen:
            tally.samples.append((loop.time() - started, False))


async def type_session(session: Session, url: str, client: Client, features: str,
                       tally: Tally, t0: float) -> None:
    """Replay one session's keystrokes; requests go out after the debounce, and (Continue-like)
    are aborted on the next keystroke, closing the connection."""
    headers = {HEADER_SESSION: session.user} if features == "on" else {}
    loop = asyncio.get_running_loop()
    running: set[asyncio.Task[None]] = set()
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        keys = session.keys
        for i, (at, pos) in enumerate(keys):
            await asyncio.sleep(max(0.0, t0 + at - loop.time()))
            tally.keystrokes += 1
            if client.aborts:
                for task in running:
                    task.cancel()
            nxt = keys[i + 1][0] if i + 1 < len(keys) else math.inf
            if nxt - at <= client.debounce_s:
                continue  # the next key comes first: no request
            await asyncio.sleep(max(0.0, t0 + at + client.debounce_s - loop.time()))
            prefix, suffix = session.prompt_at(pos)
            task = asyncio.create_task(one_request(http, url, client, prefix, suffix, headers,
                                                   tally, t0 + nxt))
            running.add(task)
            task.add_done_callback(running.discard)
            task.add_done_callback(_count_failure(tally))
        if running:
            await asyncio.wait(running)


def _count_failure(tally: Tally) -> Callable[[asyncio.Task[None]], None]:
    def done(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            tally.errors += 1
    return done


# -- one group of runs -------------------------------------------------------------------------

@dataclass
class Run:
    name: str
    client: str
    features: str
    accuracy: float
    slow_share: float = 0.0
    url: str = ""
    tally: Tally = field(default_factory=Tally)


class Child:
    """A child process of this script (the stand-in, or the gateways) that prints the URLs it
    serves, one a line, and stops when its stdin closes: `urls`, `call`, `close`."""

    def __init__(self, *args: str, urls: int = 1) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, *args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.urls = [self.proc.stdout.readline().strip() for _ in range(urls)]
        if not all(u.startswith("http") for u in self.urls):
            self.close()
            raise RuntimeError(f"{args[0]} did not start")
        self.url = self.urls[0]

    def call(self, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def serve_standin(seed: int) -> None:
    """The stand-in, in this (child) process: prints its URL, serves until stdin closes."""

    async def run() -> None:
        runner, url = await _serve(StandIn(corpus(), seed).app())
        print(url, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await runner.cleanup()

    asyncio.run(run())


def serve_gateways(configs: list[str]) -> None:
    """One gateway per config file, in this (child) process and its one event loop, as
    `starcoder-router serve` runs: prints their URLs, serves until stdin closes."""

    async def run() -> None:
        served = []
        for path in configs:
            gateway = Gateway.from_config(path, env={}, store=MemoryStore())
            runner, url = await _serve(create_app(gateway), gateway.settings)
            served.append((runner, gateway))
            print(url, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        for runner, gateway in served:
            await runner.cleanup()
            await gateway.aclose()

    asyncio.run(run())


def measure_group(runs: list[Run], sessions: list[Session], standin: Child,
                  with_sessions: bool) -> list[dict[str, Any]]:
    """Replay `sessions` against one gateway per run, all at once; each run's figures."""
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for run in runs:
            standin.call("/_runs", {"run": run.name, "accuracy": run.accuracy,
                                    "slow_share": run.slow_share})
            path = Path(tmp) / f"{run.name}.toml"
            path.write_text(gateway_config(f"{standin.url}/{run.name}/v1", run.features,
                                           with_sessions))
            paths.append(str(path))
        gateways = Child("--gateways", *paths, urls=len(paths))
        try:
            for run, url in zip(runs, gateways.urls, strict=True):
                run.url = url
            asyncio.run(_replay(runs, sessions))
        finally:
            gateways.close()
    books = {run: Books(**b) for run, b in standin.call("/_books").items()}
    return [summary(run, books[run.name]) for run in runs]


async def _replay(runs: list[Run], sessions: list[Session]) -> None:
    t0 = asyncio.get_running_loop().time() + 0.5
    await asyncio.gather(*(type_session(s, run.url, CLIENTS[run.client], run.features,
                                        run.tally, t0)
                           for run in runs for s in sessions))
    await asyncio.sleep(0.5)  # cut streams end and book on the stand-in's side


def km_quantile(samples: list[tuple[float, bool]], q: float) -> float | None:
    """The `q` quantile of the time to the first suggestion character, by the Kaplan-Meier
    estimator: a request that ended without one (the editor aborted it, a newer one
    superseded it) is censored then, not dropped. Dropping them would flatter whatever lets
    the slowest requests be aborted, and counting them as answered would invent answers.
    None when too few requests got that far."""
    at_risk = len(samples)
    surviving = 1.0
    for t, observed in sorted(samples, key=lambda s: (s[0], not s[1])):
        if observed:
            surviving *= 1 - 1 / at_risk
            if 1 - surviving >= q:
                return t
        at_risk -= 1
    return None


def summary(run: Run, books: Books) -> dict[str, Any]:
    t = run.tally
    per_k = 1000 / max(1, t.keystrokes)
    answered = sum(t.served_from.values())
    saved = t.served_from.get("reuse", 0) + t.served_from.get("cache", 0)
    p50, p90 = km_quantile(t.samples, 0.5), km_quantile(t.samples, 0.9)
    return {
        "run": run.name, "client": CLIENTS[run.client].name, "features": run.features,
        "accuracy": run.accuracy, "slow_share": run.slow_share, "keystrokes": t.keystrokes,
        "editor_requests": t.requests, "errors": t.errors, "superseded": t.superseded,
        "upstream_per_1k": books.requests * per_k,
        "tokens_in_per_1k": books.prompt_tokens * per_k,
        "tokens_out_per_1k": books.completion_tokens * per_k,
        "usd_per_1k": books.usd * per_k,
        "p50_ms": None if p50 is None else p50 * 1e3, "p90_ms": None if p90 is None else p90 * 1e3,
        "suggestions": len(t.first_char_s), "shown_per_1k": t.shown * per_k,
        "reuse_or_cache_share": saved / answered if answered else 0.0,
        "by_model": dict(books.by_model),
    }


# -- the whole benchmark -----------------------------------------------------------------------

def measure(*, quick: bool, seed: int = 7, slow_share: float = 0.3,
            sessions: int | None = None, keys: int | None = None,
            accuracies: tuple[float, ...] | None = None, slow: bool = True,
            clients: tuple[str, ...] = tuple(CLIENTS),
            out: Callable[[str], None] = print) -> dict[str, Any]:
    n_sessions = sessions or (4 if quick else 8)
    n_keys = keys or (50 if quick else 250)
    levels = accuracies or ((0.30,) if quick else (0.30, 0.15, 0.50))
    plan_ = plan(seed, n_sessions, n_keys)
    with tempfile.TemporaryDirectory() as tmp:
        with_sessions = sessions_supported(Path(tmp))
    results: list[dict[str, Any]] = []
    groups = [[Run(f"{c}-{f}-{int(a * 100)}", c, f, a) for c in clients for f in ("off", "on")]
              for a in levels]
    if slow:
        groups.append([Run(f"{c}-{f}-slow", c, f, 0.30, slow_share) for c in clients
                       for f in FEATURES])
    standin = Child("--standin", str(seed))
    load = [os.getloadavg()[0]]
    try:
        for group in groups:
            started = time.perf_counter()
            results += measure_group(group, plan_, standin, with_sessions)
            load.append(os.getloadavg()[0])
            out(f"  {', '.join(r.name for r in group)}: {time.perf_counter() - started:.0f} s")
    finally:
        standin.close()
    return {"quick": quick, "seed": seed, "sessions": n_sessions, "keys_per_session": n_keys,
            "files": sorted({s.file for s in plan_}), "slow_share": slow_share,
            "sessions_reuse_cache": with_sessions, "load_average": load,
            "results": results}


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _rows(results: list[dict[str, Any]]) -> list[str]:
    rows = []
    for r in results:
        rows.append(
            f"| {r['client']} | {r['features'].upper()} | {int(r['accuracy'] * 100)}% | "
            f"{r['keystrokes']} | {r['upstream_per_1k']:.0f} | "
            f"{r['tokens_in_per_1k'] / 1000:.0f}k / {r['tokens_out_per_1k'] / 1000:.1f}k | "
            f"{r['usd_per_1k']:.4f} | {_ms(r['p50_ms'])} | {_ms(r['p90_ms'])} | "
            f"{r['shown_per_1k']:.0f} | {r['reuse_or_cache_share']:.0%} |")
    return rows


def section(result: dict[str, Any]) -> str:
    head = ("| client | features | right | keystrokes | upstream req / 1k keys | "
            "tokens in / out per 1k keys | $ / 1k keys | p50 ms | p90 ms | "
            "shown / 1k keys | reuse + cache |")
    sep = "|---|---|---|---|---|---|---|---|---|---|---|"
    plain = [r for r in result["results"] if not r["slow_share"]]
    slow = [r for r in result["results"] if r["slow_share"]]
    headline = [r for r in plain if r["accuracy"] == 0.30]
    other = [r for r in plain if r["accuracy"] != 0.30]
    features_on = ("sessions, typed-ahead reuse and the exact-repeat cache, completion mode "
                   "`auto` and the first-token deadline" if result["sessions_reuse_cache"] else
                   "completion mode `auto` and the first-token deadline only: this build has "
                   "no `[autocomplete]` sessions, reuse or cache, so ON measures the rest")
    text = [
        HEADING, "",
        f"`benchmarks/bench_keystrokes.py{' --quick' if result['quick'] else ''}`: "
        f"{result['sessions']} editor sessions of up to {result['keys_per_session']} keystrokes "
        f"each type through functions of {', '.join(result['files'])} (Python standard "
        "library), lognormal inter-key times (median 120 ms) with 1-3 s pauses, through the "
        "real gateway to a loopback stand-in of a hosted StarCoder 2 FIM endpoint (first token "
        "in 150-300 ms, then 20 ms a token) whose suggestion is the file's true continuation "
        "in the share of requests the `right` column gives, a plausible wrong line otherwise. "
        "Continue-like: "
        "350 ms debounce, streams, aborts on the next key; llm-vscode-like: 150 ms debounce, "
        "plain requests, never aborts. ON: " + features_on + ". Dollars at the default "
        "catalog's Fireworks StarCoder 2 3B/7B prices, tokens as the stand-in counted what it "
        "was sent and generated; times from the editor's request to the first suggestion "
        "character (Kaplan-Meier: a request aborted or superseded before its first character "
        "counts as censored then); shown: "
        "suggestions whose first character came before the next keystroke, the ones an "
        "editor can show; reuse + cache: the share of answers the gateway served without an "
        "upstream call. Method and sources in the script's docstring.", "",
        head, sep, *_rows(headline), "",
    ]
    if other:
        text += ["Sensitivity to how often the suggestion is right:", "", head, sep,
                 *_rows(other), ""]
    if slow:
        text += [f"One deployment slow to its first token: the 3B (tried first) takes "
                 f"{SLOW_TTFT_S:g} s on {result['slow_share']:.0%} of its requests. DEADLINE "
                 f"is OFF plus `first_token_timeout_s = {FIRST_TOKEN_TIMEOUT_S:g}` on the "
                 "deployments:", "", head, sep, *_rows(slow), ""]
    odd = [r for r in result["results"] if r["errors"] or r["superseded"]]
    if odd:
        text += ["Answers that were errors (a 503 when every deployment missed the deadline "
                 "or failed) or superseded: " + ", ".join(
                     f"{r['run']} {r['errors']} errors, {r['superseded']} superseded"
                     for r in odd) + ".", ""]
    split = [r for r in result["results"] if len(r["by_model"]) > 1]
    if split:
        text += ["Upstream calls that the pricier 7B served (after a first-token deadline "
                 "passed, or while failures kept the 3B's circuit open): " + ", ".join(
                     f"{r['run']} {r['by_model'].get('standin-7b', 0)} of "
                     f"{sum(r['by_model'].values())}" for r in split) + ".", ""]
    text += [f"Machine load average (1 min) at the start and after each group: "
             f"{', '.join(f'{x:.1f}' for x in result['load_average'])} on "
             f"{os.cpu_count()} cores.", ""]
    return "\n".join(text)


def write(text: str, path: Path) -> None:
    old = path.read_text() if path.exists() else ""
    parts = [p for p in re.split(r"(?m)^(?=## )", old) if not p.startswith(HEADING)]
    path.write_text("".join(parts).rstrip("\n") + "\n\n" + text)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="one accuracy, short sessions (<60 s)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--sessions", type=int, default=None)
    p.add_argument("--keys", type=int, default=None, help="keystrokes per session")
    p.add_argument("--slow-share", type=float, default=0.3,
                   help="share of the 3B's requests that are slow to their first token")
    p.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    p.add_argument("--json", type=Path, default=None, help="also write the raw figures here")
    p.add_argument("--standin", type=int, metavar="SEED", help=argparse.SUPPRESS)
    p.add_argument("--gateways", nargs="+", metavar="CONFIG", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.standin is not None:
        serve_standin(args.standin)
        return
    if args.gateways:
        serve_gateways(args.gateways)
        return
    result = measure(quick=args.quick, seed=args.seed, sessions=args.sessions, keys=args.keys,
                     slow_share=args.slow_share)
    text = section(result)
    print(text)
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1))
    if args.write:
        write(text, ROOT / "BENCHMARKS.md")


if __name__ == "__main__":
    main()
