"""A StarCoder 2 token estimate for code, close to exact without the tokenizer.

StarCoder 2's tokenizer splits text the GPT-2 way before its byte-level BPE: runs of letters (with
a leading space), each digit alone, runs of punctuation, whitespace. In code almost every letter
run is one token or two, so the count follows how many such pieces a text has far better than
how many bytes it has (bytes over-count code about 2x). Counting pieces needs no regex: the text
is mapped to one class letter per byte (`bytes.translate`) and the class boundaries are counted
with `bytes.count`, all in C.

The weights are least-squares fits of the exact count on prompts cut from real code (the Python
standard library, C headers, JavaScript), then scaled so the estimate is at least the exact
count for 90% of them: `benchmarks/calibrate_estimator.py` makes them, and
`benchmarks/bench_estimator.py` judges them on held-out files. It is a tight estimate, not a
bound: a prompt that turns out longer than estimated meets the provider's context-length error,
and the router fits it again with the count the provider reports. The UTF-8 byte length stays
the proven bound, and an estimate never exceeds it.

Example::

    estimate_tokens("def add(a, b):\\n    return a + b\\n")   # 13 (exact: 13)
"""

from __future__ import annotations

__all__ = ["estimate_tokens", "features"]


def _class_table() -> bytes:
    table = bytearray(b"." * 256)  # punctuation unless said otherwise
    for b in range(256):
        c = chr(b)
        if b >= 0x80 or c.islower():
            table[b] = ord("a")  # UTF-8 bytes join letter runs, as \p{L} does
        elif c.isupper():
            table[b] = ord("A")
        elif c.isdigit():
            table[b] = ord("0")
        elif c in " \n":
            table[b] = b
        elif c in "\t\r\x0b\x0c":
            table[b] = ord("\t")
    return bytes(table)


def _marking(marked: bytes) -> bytes:
    """A table that maps the class letters in `marked` to b"m" and every other byte to b"x"."""
    return bytes(ord("m") if b in marked else ord("x") for b in range(256))


_CLASSES = _class_table()
_LETTERS = _marking(b"aA")
_PUNCT = _marking(b".")
_SPACE = _marking(b" ")
_NON_ASCII = bytes(range(128, 256))

# Tokens per feature, in the order `features` returns them: the output of
# `python benchmarks/calibrate_estimator.py --prompts 2000` (2026-12-01; 2,000 calibration prompts
# of 4,000-60,000 characters, scaled to cover 90% of them; non-ASCII bytes fixed at 1/1.4).
WEIGHTS: tuple[float, ...] = (
    1.1465, 0.0224, 0.7517, 1.3009, 1.6541, 1.0082, 0.0494, 0.2799, 0.1621, 0.7551,
)


def features(data: bytes) -> tuple[int, ...]:
    """Letter runs, letters, non-ASCII bytes, camelCase humps, digits, punctuation runs,
    punctuation bytes, newlines, runs of 2+ spaces, tabs (and other control whitespace)."""
    s = b"." + data.translate(_CLASSES)
    n = len(data)
    # A run starts where its class follows another: one two-byte count per kind of run.
    return (
        s.translate(_LETTERS).count(b"xm"),
        s.count(b"a") + s.count(b"A"),
        n - len(data.translate(None, _NON_ASCII)),
        s.count(b"aA"),
        s.count(b"0"),
        s.translate(_PUNCT).count(b"xm"),
        s.count(b"."),
        s.count(b"\n"),
        s.translate(_SPACE).count(b"xmm"),
        s.count(b"\t"),
    )


def estimate_tokens(text: str, weights: tuple[float, ...] = WEIGHTS) -> int:
    """The estimated StarCoder 2 token count of `text`, never above its UTF-8 byte length."""
    if not text:
        return 0
    # "surrogatepass": a reply may hold a lone surrogate (JSON "\udfff" decodes to one); it is
    # counted as the three bytes it would take, not refused halfway through booking its cost.
    data = text.encode("utf-8", "surrogatepass")
    guess = sum(w * f for w, f in zip(weights, features(data), strict=True))
    return max(1, min(len(data), int(guess + 0.5)))
