"""How routing without a tokenizer compares with routing on exact counts, on held-out real code.

Requests are prompts from the held-out half of `code_corpus` (Python standard library, C
headers, npm's JavaScript; files the estimator was never fitted to), 300 to 60,000 characters
(log-uniform), each with `max_tokens` log-uniform in 16..1,024, routed over the default catalog
with the default (cheapest) policy twice: once with the exact StarCoder 2 tokenizer, once with
the default install's `EstimatingCounter`. Three figures, each with its target:

* cost: what the estimate's choices cost over what the exact choices cost, both priced with the
  exact prompt size and `max_tokens` of output (target: within 10%);
* refused: requests that fit some deployment but that the estimate refuses (target: <= 1%);
* overflow: requests sent to a deployment whose window they do not fit, which the provider
  answers with a context-length error before the router fits them again (target: <= 0.5%).

Run: `python benchmarks/bench_estimator.py [--requests 3000] [--json]` (about a minute).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
TOKENIZER = ROOT.parent / "shared" / "data" / "starcoder2-tokenizer" / "tokenizer.json"

import code_corpus  # noqa: E402

from starcoder_router import Deployment, NoRouteError, Router, TokenizerCounter  # noqa: E402
from starcoder_router._routing.cost import actual_cost_nano  # noqa: E402

KEYS = {"FIREWORKS_API_KEY": "bench", "DEEPINFRA_API_KEY": "bench"}
TARGETS = {"cost_ratio": 1.10, "refused": 0.01, "overflow": 0.005}


def chosen(router: Router, text: str, max_tokens: int) -> Deployment | None:
    try:
        return router.route(prompt=text, max_tokens=max_tokens).chosen
    except NoRouteError:
        return None


def run(requests: int, seed: int, tokenizer: str) -> dict[str, Any]:
    exact_counter = TokenizerCounter.from_file(tokenizer)
    exact_router = Router(env=KEYS, tokenizer=exact_counter)
    est_router = Router(env=KEYS, tokenizer=False)
    rng = random.Random(seed)
    prompts = [p.text for p in code_corpus.prompts("held-out", requests, seed=seed)]
    exact_tokens = exact_counter.count_many(prompts)
    feasible = refused = overflow = routed = differ = 0
    cost_exact = cost_est = 0
    started = time.perf_counter()
    for text, tokens in zip(prompts, exact_tokens, strict=True):
        max_tokens = int(math.exp(rng.uniform(math.log(16), math.log(1024))))
        exact = chosen(exact_router, text, max_tokens)
        est = chosen(est_router, text, max_tokens)
        if exact is None:
            continue
        feasible += 1
        if est is None:
            refused += 1
            continue
        if tokens + max_tokens > est.context_window:
            overflow += 1
            continue
        routed += 1
        differ += est.name != exact.name
        cost_exact += actual_cost_nano(exact, tokens, max_tokens, 0.0)
        cost_est += actual_cost_nano(est, tokens, max_tokens, 0.0)
    exact_router.close()
    est_router.close()
    return {
        "requests": requests,
        "feasible": feasible,
        "cost_ratio": round(cost_est / cost_exact, 4) if cost_exact else None,
        "refused": round(refused / feasible, 4) if feasible else None,
        "overflow": round(overflow / requests, 4),
        "choices_differ": round(differ / routed, 4) if routed else None,
        "seconds": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--tokenizer", default=str(TOKENIZER))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = run(args.requests, args.seed, args.tokenizer)
    if args.json:
        print(json.dumps(result))
        return
    print(f"{result['requests']} held-out requests, {result['feasible']} fit some deployment")
    for key, target in TARGETS.items():
        value = result[key]
        met = value is not None and value <= target
        print(f"  {key:10} {value}  (target <= {target}: {'met' if met else 'NOT met'})")
    print(f"  choices that differ from the exact ones: {result['choices_differ']}")


if __name__ == "__main__":
    main()
