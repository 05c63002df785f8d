"""A faster exact StarCoder 2 encoder: the tokenizer's own vocabulary run by `tiktoken`'s BPE.

StarCoder 2's tokenizer is a plain byte-level BPE: no normalizer, pre-tokenization by
`Digits(individual_digits=True)` then the GPT-2 split (`ByteLevel`, no prefix space), and merges
whose ids rise in merge order. `tiktoken` merges by the rank of the merged bytes, so with the
token ids as ranks it applies the same merges in the same order. The two pre-tokenizers fold into
one regex: each digit is a piece of its own, and a whitespace run that a digit follows ends
before the digit (the digit split made that run end its piece), which is why the lookahead below
refuses only a non-space non-digit character. Sources: huggingface/tokenizers
`tokenizers/src/pre_tokenizers/{digits,byte_level}.rs`; openai/gpt-2 `src/encoder.py` (the
split) and openai/tiktoken `src/lib.rs` (the merge loop).

`tiktoken_engine()` builds it only when the loaded tokenizer has exactly that shape, and only
when `tiktoken` is installed (the `fast` extra); otherwise counting stays with `tokenizers`.
Agreement, token for token, is tested on real code (tests/routing/test_bpe_oracle.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tokenizers import Tokenizer

__all__ = ["SPLIT_PATTERN", "TiktokenEngine", "tiktoken_engine"]

SPLIT_PATTERN = (
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+|\s+(?![^\s\p{N}])|\s+"
)
_PRE_TOKENIZER = {
    "type": "Sequence",
    "pretokenizers": [
        {"type": "Digits", "individual_digits": True},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
    ],
}


class TiktokenEngine:
    """Exact StarCoder 2 ids with `tiktoken`. Special-token strings count as one token each.

    The vocabulary has no token for a few byte values (0xC0, 0xC1, 0xF1, 0xF5 to 0xFF): the
    `tokenizers` BPE drops such a byte, while `tiktoken` panics (a `BaseException`). Only text
    with a character from U+40000 to U+7FFFF (UTF-8 lead byte 0xF1) has one, so such a text,
    which anyone can send, goes to `fallback` (the `tokenizers` encoder) instead.
    """

    name = "tiktoken"

    def __init__(self, encoding: Any, fallback: Callable[[str], list[int]]):
        self._encoding = encoding
        # Bound once: the hot path is one call per uncached block of text.
        self._encode = encoding.encode
        self._encode_plain = encoding.encode_ordinary
        self._fallback = fallback

    def encode(self, text: str) -> list[int]:
        try:
            return list(self._encode(text, allowed_special="all"))
        except BaseException as exc:
            if type(exc).__name__ != "PanicException":
                raise
            return self._fallback(text)

    def count(self, text: str) -> int:
        try:
            return len(self._encode(text, allowed_special="all"))
        except BaseException as exc:
            if type(exc).__name__ != "PanicException":
                raise
            return len(self._fallback(text))

    def count_many(self, texts: list[str]) -> list[int]:
        return [self.count(t) for t in texts]

    def count_plain(self, text: str) -> int:
        """`count` for text that holds no special-token string, such as the count cache's pieces
        (cut around every one): the ordinary encoding gives the same ids there without building
        the set of allowed special tokens on every call (`tiktoken`'s `encode` does, about
        6 µs; the edited line of a keystroke costs a few µs more)."""
        try:
            return len(self._encode_plain(text))
        except BaseException as exc:
            if type(exc).__name__ != "PanicException":
                raise
            return len(self._fallback(text))

    def count_many_plain(self, texts: list[str]) -> list[int]:
        return [self.count_plain(t) for t in texts]


def tiktoken_engine(tokenizer: Tokenizer) -> TiktokenEngine | None:
    """The `tiktoken` engine for `tokenizer`, or None when `tiktoken` is missing or the tokenizer
    is not shaped like StarCoder 2's (then only `tokenizers` gives exact counts)."""
    try:
        import tiktoken
    except ImportError:
        return None
    spec = json.loads(tokenizer.to_str())
    ranks = _ranks(spec)
    if ranks is None:
        return None
    special = {t["content"]: t["id"] for t in spec["added_tokens"]}
    encoding = tiktoken.Encoding(
        "starcoder2", pat_str=SPLIT_PATTERN, mergeable_ranks=ranks, special_tokens=special,
    )
    def fallback(text: str) -> list[int]:
        return list(tokenizer.encode(text, add_special_tokens=False).ids)

    return TiktokenEngine(encoding, fallback)


def _ranks(spec: dict[str, Any]) -> dict[bytes, int] | None:
    """Token bytes to id, when the tokenizer is exactly the shape the regex above reproduces."""
    model = spec.get("model") or {}
    if (spec.get("normalizer") is not None or spec.get("pre_tokenizer") != _PRE_TOKENIZER
            or model.get("type") != "BPE" or model.get("dropout") is not None
            or model.get("continuing_subword_prefix") or model.get("end_of_word_suffix")
            or model.get("byte_fallback")):
        return None
    added = spec.get("added_tokens") or []
    if any(t.get("lstrip") or t.get("rstrip") or t.get("single_word") or t.get("normalized")
           for t in added):
        return None
    vocab: dict[str, int] = model["vocab"]
    if not _merges_in_id_order(model["merges"], vocab):
        return None
    special_ids = {t["id"] for t in added}
    decode = _byte_decoder()
    try:
        return {bytes(decode[ch] for ch in tok): i for tok, i in vocab.items()
                if i not in special_ids}
    except KeyError:
        return None


def _merges_in_id_order(merges: list[Any], vocab: dict[str, int]) -> bool:
    last = -1
    for m in merges:
        a, b = m.split(" ", 1) if isinstance(m, str) else m
        i = vocab.get(a + b)
        if i is None or i <= last:
            return False
        last = i
    return True


def _byte_decoder() -> dict[str, int]:
    """GPT-2's printable stand-ins for the 256 byte values, reversed (openai/gpt-2 encoder.py,
    `bytes_to_unicode`)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}
