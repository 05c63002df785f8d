"""Benchmarks of the pure core: routing decisions and token counting, no I/O.

* `Router.route()` for a short prompt over catalogs of 3, 30, 300 and 3,000 deployments
  (every deployment eligible, so each one is filtered, fitted, costed and ranked), and for
  1k- and 12k-token prompts with the real StarCoder 2 tokenizer.
* Token counts of 1k- and 12k-token prompts: exact (`TokenizerCounter`), the conservative
  estimate (`EstimatingCounter`) and the UTF-8 byte bound (`utf8_length`).
* How often the byte bound proves a fit without tokenizing, over prompts cut from real code.

Prompts are cut from the Python standard library's own sources, so they are real code and the
same for everyone on one Python version. Prints one JSON object.

Run: `python benchmarks/bench_core.py [--quick]` (the runner does this).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import random
import sys
import sysconfig
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
TOKENIZER = ROOT.parent / "shared" / "data" / "starcoder2-tokenizer" / "tokenizer.json"
SHORT_PROMPT = "def fib(n):"
CORPUS_DIRS = ("asyncio", "email", "json", "concurrent", "importlib", "unittest")
KEYS = {"FIREWORKS_API_KEY": "bench", "DEEPINFRA_API_KEY": "bench"}


def corpus() -> str:
    """Concatenated stdlib sources, in a fixed order."""
    lib = Path(sysconfig.get_paths()["stdlib"])
    parts = []
    for d in CORPUS_DIRS:
        for f in sorted((lib / d).rglob("*.py")):
            parts.append(f.read_text(encoding="utf-8", errors="replace"))
    return "\n".join(parts)


def timed(fn, *, budget_s: float, min_n: int = 5, max_n: int = 100_000) -> dict:  # type: ignore[no-untyped-def]
    """Median and p99 of single calls, repeated until the time budget or max_n."""
    samples = []
    deadline = time.perf_counter() + budget_s
    while len(samples) < max_n:
        t = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - t)
        if len(samples) >= min_n and time.perf_counter() > deadline:
            break
    samples.sort()
    return {
        "median_us": samples[len(samples) // 2] / 1e3,
        "p99_us": samples[min(len(samples) - 1, int(len(samples) * 0.99))] / 1e3,
        "n": len(samples),
    }


def _deployments(n: int, base_url: str) -> list:  # type: ignore[no-untyped-def]
    from starcoder_router import Deployment

    variants = ("starcoder2-3b", "starcoder2-7b", "starcoder2-15b")
    providers = ("fireworks", "deepinfra")
    out = []
    for i in range(n):
        out.append(Deployment(
            name=f"bench-{i:04d}", provider=providers[i % 2], variant=variants[i % 3],
            model=f"bench-model-{i}", context_window=(8192, 16384)[i % 2],
            input_usd_per_mtok=0.1 + (i % 7) * 0.01, output_usd_per_mtok=0.1 + (i % 5) * 0.02,
            base_url=base_url,
        ))
    return out


def bench_route(quick: bool, texts: dict[str, str], counter) -> dict:  # type: ignore[no-untyped-def]
    from starcoder_router import Catalog, CompletionRequest, Router

    budget = 0.3 if quick else 1.5
    out: dict = {}
    default = Router(env=KEYS)
    req = CompletionRequest(prompt=SHORT_PROMPT, max_tokens=16)
    default.route(req)
    out["default_catalog"] = {
        "deployments": len(default.catalog.deployments),
        **timed(lambda: default.route(req), budget_s=budget),
    }
    out["default_catalog_kwargs"] = timed(
        lambda: default.route(prompt=SHORT_PROMPT, max_tokens=16), budget_s=budget)
    sizes = {}
    for n in (3, 30, 300, 3000):
        cat = Catalog(variants=Catalog.default().variants,
                      deployments=tuple(_deployments(n, "http://127.0.0.1:9/v1")))
        router = Router(catalog=cat, env=KEYS, tokenizer=False)
        decision = router.route(req)
        sizes[str(n)] = {
            "eligible": len(decision.ranked),
            **timed(lambda r=router: r.route(req), budget_s=budget, min_n=3),
        }
    out["by_deployments"] = sizes
    if counter is not None:
        exact = Router(env=KEYS, tokenizer=counter)
        long_prompts = {}
        for label, text in texts.items():
            r = CompletionRequest(prompt=text, max_tokens=256)
            try:
                d = exact.route(r)
                kinds = sorted({c.count_kind or "-" for c in d.ranked})
            except Exception as exc:  # a 12k prompt may not fit every window
                kinds = [f"{type(exc).__name__}"]
            # A fresh request each time: the router must not reuse an earlier count.
            long_prompts[label] = {
                "count_kinds": kinds,
                **timed(lambda t=text: _route_quiet(exact, t), budget_s=budget, min_n=3),
            }
        out["long_prompts_exact"] = long_prompts
    return out


def _route_quiet(router, text: str) -> None:  # type: ignore[no-untyped-def]
    from starcoder_router import CompletionRequest, NoRouteError

    clear = getattr(router.token_counter, "clear_cache", None)
    if clear is not None:  # counts are cached: time counting, not a look-up
        clear()
    with contextlib.suppress(NoRouteError):
        router.route(CompletionRequest(prompt=text, max_tokens=256))


def cut_to_tokens(text: str, target: int, counter) -> str:  # type: ignore[no-untyped-def]
    """The shortest prefix of `text` (at a line end) with at least `target` tokens."""
    lines = text[: target * 8].splitlines(keepends=True)  # code averages under 5 B/token
    lo, hi = 1, len(lines)
    while lo < hi:
        mid = (lo + hi) // 2
        if counter.count("".join(lines[:mid])) >= target:
            hi = mid
        else:
            lo = mid + 1
    return "".join(lines[:lo])


def bench_tokens(quick: bool, texts: dict[str, str], counter) -> dict:  # type: ignore[no-untyped-def]
    from starcoder_router import EstimatingCounter
    from starcoder_router._routing.tokens import utf8_length

    budget = 0.3 if quick else 1.5
    est = EstimatingCounter()
    out = {}
    for label, text in texts.items():
        row = {"bytes": utf8_length(text), "tokens": counter.count(text) if counter else None,
               "estimate": est.count(text)}
        if counter is not None:
            row["exact"] = timed(lambda t=text: _count_cold(counter, t), budget_s=budget,
                                 min_n=3)
        row["estimating"] = timed(lambda t=text: est.count(t), budget_s=budget)
        row["utf8_length"] = timed(lambda t=text: utf8_length(t), budget_s=budget)
        out[label] = row
    return out


def _count_cold(counter, text: str) -> int:  # type: ignore[no-untyped-def]
    """An exact count with nothing cached (the counter caches counts of repeated text)."""
    clear = getattr(counter, "clear_cache", None)
    if clear is not None:
        clear()
    return int(counter.count(text))


class CountingCounter:
    """Wraps a counter and counts how often the router asks it for a count."""

    def __init__(self, inner) -> None:  # type: ignore[no-untyped-def]
        self.inner = inner
        self.calls = 0

    @property
    def exact(self) -> bool:
        return bool(self.inner.exact)

    def count(self, text: str) -> int:
        self.calls += 1
        return int(self.inner.count(text))

    def count_many(self, texts):  # type: ignore[no-untyped-def]
        self.calls += len(texts)
        return self.inner.count_many(texts)


def bench_bound(quick: bool, text: str, counter) -> dict:  # type: ignore[no-untyped-def]
    """Route prompts of log-uniform length (64 B to 64 KiB) cut from real code through one
    16,384-token deployment with max_tokens 128; count the routes that needed the tokenizer."""
    from starcoder_router import Catalog, CompletionRequest, Deployment, NoRouteError, Router

    rng = random.Random(0)
    n = 300 if quick else 2000
    dep = Deployment(provider="openai-compatible", variant="starcoder2-3b", model="m",
                     context_window=16384, base_url="http://127.0.0.1:9/v1")
    cat = Catalog(variants=Catalog.default().variants, deployments=(dep,))
    wrapped = CountingCounter(counter)
    router = Router(catalog=cat, tokenizer=wrapped)
    buckets: dict[str, list[int]] = {}
    edges = ((4096, "<4 KiB"), (16384, "4-16 KiB"), (32768, "16-32 KiB"), (1 << 30, "32-64 KiB"))
    routed = refused = 0
    for _ in range(n):
        size = int(math.exp(rng.uniform(math.log(64), math.log(65536))))
        start = rng.randrange(0, len(text) - size)
        prompt = text[start:start + size]
        before = wrapped.calls
        try:
            router.route(CompletionRequest(prompt=prompt, max_tokens=128))
            routed += 1
        except NoRouteError:
            refused += 1
        tokenized = wrapped.calls > before
        label = next(lbl for edge, lbl in edges if size < edge)
        buckets.setdefault(label, []).append(int(tokenized))
    total_tok = sum(sum(v) for v in buckets.values())
    return {
        "prompts": n,
        "window": 16384,
        "max_tokens": 128,
        "avoided_share": 1 - total_tok / n,
        "routed": routed,
        "refused_too_long": refused,
        "by_size": {k: {"prompts": len(v), "avoided_share": 1 - sum(v) / len(v)}
                    for k, v in sorted(buckets.items(), key=lambda kv: _bucket_order(kv[0]))},
    }


def _bucket_order(label: str) -> int:
    return ["<4 KiB", "4-16 KiB", "16-32 KiB", "32-64 KiB"].index(label)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    out: dict = {"tokenizer_path": str(TOKENIZER)}
    try:
        import starcoder_router  # noqa: F401
        from starcoder_router import TokenizerCounter
    except ImportError as exc:
        print(json.dumps({"error": f"starcoder_router unavailable: {exc}"}))
        return
    counter = None
    if TOKENIZER.is_file():
        t = time.perf_counter()
        try:
            counter = TokenizerCounter.from_file(TOKENIZER)
            out["tokenizer_load_ms"] = (time.perf_counter() - t) * 1e3
        except Exception as exc:
            out["tokenizer_error"] = f"{type(exc).__name__}: {exc}"
    else:
        out["tokenizer_error"] = f"no tokenizer at {TOKENIZER}"
    text = corpus()
    texts = {}
    if counter is not None:
        texts = {"1k": cut_to_tokens(text, 1000, counter),
                 "12k": cut_to_tokens(text, 12000, counter)}
    out["tokens"] = bench_tokens(args.quick, texts, counter)
    out["route"] = bench_route(args.quick, texts, counter)
    if counter is not None:
        out["byte_bound"] = bench_bound(args.quick, text, counter)
    out["median_of"] = "single calls, timed one by one with perf_counter_ns"
    print(json.dumps(out))


if __name__ == "__main__":
    main()
