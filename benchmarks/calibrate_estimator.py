"""Fit the weights of `starcoder_router._routing.estimate` on real code from this machine.

Prompts come from the calibration half of `code_corpus` (Python standard library, C headers,
npm's JavaScript), 4,000 to 60,000 characters long: shorter prompts fit every window by their
byte length alone and never reach the estimate. The exact counts come from the real StarCoder 2
tokenizer. The fit minimises the relative error (least squares of estimate/exact - 1); the
weights are then scaled so the estimate covers the exact count for `--quantile` of the prompts.
Prints the weights as the Python tuple `estimate.py` holds, and how they do on the held-out half.

Run: `python benchmarks/calibrate_estimator.py [--prompts 3000] [--quantile 0.9]`
(needs numpy and tokenizers, both in the dev extra).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
TOKENIZER = ROOT.parent / "shared" / "data" / "starcoder2-tokenizer" / "tokenizer.json"

import code_corpus  # noqa: E402

from starcoder_router import TokenizerCounter  # noqa: E402
from starcoder_router._routing.estimate import features  # noqa: E402

NON_ASCII, NON_ASCII_WEIGHT = 2, 1 / 1.4
NAMES = ("letter runs", "letters", "non-ASCII bytes", "camel humps", "digits", "punct runs",
         "punct bytes", "newlines", "space runs", "tabs")


def dataset(split: code_corpus.Split, count: int, seed: int,
            counter: TokenizerCounter) -> tuple[np.ndarray, np.ndarray]:
    prompts = [p.text for p in code_corpus.prompts(split, count, seed=seed, min_chars=4000)]
    exact = np.array(counter.count_many(prompts), dtype=float)
    x = np.array([features(p.encode("utf-8")) for p in prompts], dtype=float)
    return x, exact


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=3000)
    parser.add_argument("--quantile", type=float, default=0.9)
    parser.add_argument("--tokenizer", default=str(TOKENIZER))
    args = parser.parse_args()
    counter = TokenizerCounter.from_file(args.tokenizer)
    started = time.perf_counter()
    x, y = dataset("calibration", args.prompts, 1, counter)
    # Non-ASCII bytes keep the conservative weight of the worst case (emoji, ~1.4 bytes per
    # token): code has too little non-ASCII text to fit it, and CJK prose must not under-count.
    fixed = x[:, NON_ASCII] * NON_ASCII_WEIGHT
    free = [i for i in range(x.shape[1]) if i != NON_ASCII]
    fitted, *_ = np.linalg.lstsq(x[:, free] / y[:, None], 1 - fixed / y, rcond=None)
    weights = np.insert(fitted, NON_ASCII, NON_ASCII_WEIGHT)
    ratio = (x @ weights) / y
    scale = 1 / np.quantile(ratio, 1 - args.quantile)
    weights = weights * scale
    xh, yh = dataset("held-out", args.prompts // 2, 2, counter)
    held = (xh @ weights) / yh
    print(f"# {len(y)} calibration prompts, {len(yh)} held-out; "
          f"{time.perf_counter() - started:.0f} s")
    for name, w in zip(NAMES, weights, strict=True):
        print(f"#   {name:16} {w:.4f}")
    quantiles = (0.005, 0.05, 0.1, 0.5, 0.9, 0.995)
    print("# estimate/exact quantiles " + ", ".join(f"{q}" for q in quantiles))
    print("#   calibration: " + ", ".join(f"{v:.3f}" for v in np.quantile(ratio * scale,
                                                                           quantiles)))
    print("#   held-out:    " + ", ".join(f"{v:.3f}" for v in np.quantile(held, quantiles)))
    print("WEIGHTS: tuple[float, ...] = (")
    print("    " + ", ".join(f"{w:.4f}" for w in weights) + ",")
    print(")")


if __name__ == "__main__":
    main()
