#!/usr/bin/env python3
"""Write a tiny, randomly initialised StarCoder 2 model as a GGUF file for llama.cpp.

The weights are noise, but everything a client can observe about the model is real: the
architecture is ``starcoder2``, the vocabulary, merges and special tokens come from StarCoder 2's
``tokenizer.json``, and the FIM tokens are declared, so ``llama-server`` tokenizes, builds FIM
prompts and reports sizes exactly as it would for bigcode/starcoder2-3b. The file is about 15 MB
and takes well under a second to write.

Two modes:

- ``random``: greedy output is arbitrary (but fixed for a seed) text from the real vocabulary.
- ``constant``: every generated token is ``constant_token`` whatever the prompt and sampler, so
  tests can assert exact text (``" x x x"``) and trigger stop strings. It works because the final
  layer norm ignores its input (weight 0, bias ``v``) and the LM head row of the chosen token is
  ``50 * v``: that token's logit is 50, the rest stay near 0. EOS never comes unless forced.

Use from Python::

    write_tiny_model(tmp / "tiny.gguf", tokenizer_json=default_tokenizer_json(), mode="constant")

or from the shell::

    python tests/support/make_tiny_starcoder2.py tiny.gguf --mode constant
"""

from __future__ import annotations

import argparse
import json
import os
from functools import cache
from pathlib import Path
from typing import Any, Literal

import gguf
import numpy as np

# Shapes of the tiny model: about 3.2 M parameters, nearly all in the 49,152 x 64 embedding.
N_LAYERS = 2
N_EMBD = 64
N_HEAD = 4
N_HEAD_KV = 2
N_FF = 256

# llama.cpp reads these from the GGUF rather than guessing them from token text. <repo_name> and
# <file_sep> are deliberately not declared as fim_rep/fim_sep: models converted from the Hugging
# Face checkpoints don't declare them either, and declaring them would switch /infill to the
# repo-level prompt layout and make both tokens end generation.
FIM_TOKENS = {
    "fim_pre": "<fim_prefix>",
    "fim_suf": "<fim_suffix>",
    "fim_mid": "<fim_middle>",
    "fim_pad": "<fim_pad>",
}
EOS_TOKEN = "<|endoftext|>"

SHARED_ENV = "STARCODER_ROUTER_SHARED"  # the same variable tests/conftest.py reads


def default_tokenizer_json() -> Path:
    """The real StarCoder 2 tokenizer in the shared data folder next to the project
    (``<project>/../shared``, or ``$STARCODER_ROUTER_SHARED``); it is never copied in."""
    project = Path(__file__).resolve().parents[2]
    shared = Path(os.environ.get(SHARED_ENV) or project / ".." / "shared")
    return shared / "data" / "starcoder2-tokenizer" / "tokenizer.json"


@cache
def _byte_to_char() -> dict[int, str]:
    """GPT-2's byte-level alphabet: printable bytes map to themselves, the rest to U+0100..."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def byte_level(text: str) -> str:
    """Spell ``text`` the way byte-level BPE vocabularies store it (``" x"`` -> ``"Ġx"``)."""
    table = _byte_to_char()
    return "".join(table[b] for b in text.encode("utf-8"))


class Vocab:
    """Tokens, token types and merges in the order GGUF wants them."""

    def __init__(self, tokens: list[str], types: list[int], merges: list[str]) -> None:
        self.tokens = tokens
        self.types = types
        self.merges = merges
        self.ids = {tok: i for i, tok in enumerate(tokens)}

    @classmethod
    def from_tokenizer_json(cls, path: Path) -> Vocab:
        data: dict[str, Any] = json.loads(Path(path).read_text(encoding="utf-8"))
        model = data["model"]
        if model.get("type") != "BPE":
            raise ValueError(f"{path}: expected a BPE tokenizer, got {model.get('type')!r}")
        added = data.get("added_tokens", [])
        vocab: dict[str, int] = model["vocab"]
        size = max([*vocab.values(), *(a["id"] for a in added)]) + 1
        tokens: list[str | None] = [None] * size
        types = [int(gguf.TokenType.NORMAL)] * size
        for tok, i in vocab.items():
            tokens[i] = tok
        for a in added:
            tokens[a["id"]] = a["content"]
            kind = gguf.TokenType.CONTROL if a.get("special") else gguf.TokenType.USER_DEFINED
            types[a["id"]] = int(kind)
        for i, entry in enumerate(tokens):
            if entry is None:  # StarCoder 2 has no holes, but GGUF needs one entry per id.
                tokens[i] = f"[UNUSED{i}]"
                types[i] = int(gguf.TokenType.UNUSED)
        # Newer tokenizer.json files store merges as pairs, older ones as "a b" strings.
        merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
        return cls([t for t in tokens if t is not None], types, merges)

    def token_id(self, text: str) -> int:
        """Id of the single token whose decoded text is ``text``."""
        for spelling in (text, byte_level(text)):
            if spelling in self.ids:
                return self.ids[spelling]
        raise ValueError(f"{text!r} is not a single token of this vocabulary")


def write_tiny_model(
    path: str | os.PathLike[str],
    *,
    tokenizer_json: str | os.PathLike[str],
    mode: Literal["random", "constant"] = "random",
    constant_token: str = " x",
    context: int = 4096,
    seed: int = 0,
) -> Path:
    """Write the model to ``path`` and return it as a ``Path``."""
    if mode not in ("random", "constant"):
        raise ValueError(f"mode must be 'random' or 'constant', not {mode!r}")
    out = Path(path)
    vocab = Vocab.from_tokenizer_json(Path(tokenizer_json))
    n_vocab = len(vocab.tokens)
    head_dim = N_EMBD // N_HEAD
    rng = np.random.default_rng(seed)

    def matrix(rows: int, cols: int) -> np.ndarray[Any, Any]:
        # numpy (rows, cols) is ggml ne = {cols, rows}.
        return (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02).astype(np.float32)

    def noise(n: int) -> np.ndarray[Any, Any]:
        return (rng.standard_normal(n, dtype=np.float32) * 0.02).astype(np.float32)

    def filled(n: int, value: float) -> np.ndarray[Any, Any]:
        return np.full(n, value, dtype=np.float32)

    writer = gguf.GGUFWriter(out, "starcoder2")
    writer.add_name(f"tiny-starcoder2-{mode}")
    writer.add_context_length(context)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(N_LAYERS)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD_KV)
    writer.add_layer_norm_eps(1e-5)
    writer.add_rope_freq_base(100_000.0)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)

    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("starcoder")
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.types)
    writer.add_token_merges(vocab.merges)
    eos = vocab.ids[EOS_TOKEN]
    writer.add_bos_token_id(eos)
    writer.add_eos_token_id(eos)
    writer.add_unk_token_id(eos)
    writer.add_add_bos_token(False)  # StarCoder 2 prompts start without a BOS token.
    for key, token in FIM_TOKENS.items():
        writer.add_uint32(f"tokenizer.ggml.{key}_token_id", vocab.ids[token])

    writer.add_tensor("token_embd.weight", matrix(n_vocab, N_EMBD))
    kv_width = N_HEAD_KV * head_dim
    for layer in range(N_LAYERS):
        p = f"blk.{layer}."
        writer.add_tensor(p + "attn_norm.weight", filled(N_EMBD, 1.0))
        writer.add_tensor(p + "attn_norm.bias", filled(N_EMBD, 0.0))
        writer.add_tensor(p + "attn_q.weight", matrix(N_EMBD, N_EMBD))
        writer.add_tensor(p + "attn_q.bias", noise(N_EMBD))
        writer.add_tensor(p + "attn_k.weight", matrix(kv_width, N_EMBD))
        writer.add_tensor(p + "attn_k.bias", noise(kv_width))
        writer.add_tensor(p + "attn_v.weight", matrix(kv_width, N_EMBD))
        writer.add_tensor(p + "attn_v.bias", noise(kv_width))
        writer.add_tensor(p + "attn_output.weight", matrix(N_EMBD, N_EMBD))
        writer.add_tensor(p + "attn_output.bias", noise(N_EMBD))
        writer.add_tensor(p + "ffn_norm.weight", filled(N_EMBD, 1.0))
        writer.add_tensor(p + "ffn_norm.bias", filled(N_EMBD, 0.0))
        writer.add_tensor(p + "ffn_up.weight", matrix(N_FF, N_EMBD))
        writer.add_tensor(p + "ffn_up.bias", noise(N_FF))
        writer.add_tensor(p + "ffn_down.weight", matrix(N_EMBD, N_FF))
        writer.add_tensor(p + "ffn_down.bias", noise(N_EMBD))

    if mode == "constant":
        direction = rng.standard_normal(N_EMBD, dtype=np.float32)
        direction /= np.linalg.norm(direction)
        writer.add_tensor("output_norm.weight", filled(N_EMBD, 0.0))
        writer.add_tensor("output_norm.bias", direction)
        head = matrix(n_vocab, N_EMBD)
        head[vocab.token_id(constant_token)] = direction * 50.0
        writer.add_tensor("output.weight", head)
    else:
        writer.add_tensor("output_norm.weight", filled(N_EMBD, 1.0))
        writer.add_tensor("output_norm.bias", filled(N_EMBD, 0.0))
        # Without output.weight llama.cpp ties the LM head to token_embd, as StarCoder 2 does.

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="where to write the .gguf file")
    parser.add_argument(
        "--tokenizer-json",
        type=Path,
        default=None,
        help=f"StarCoder 2 tokenizer.json (default: ../shared or ${SHARED_ENV}, data/...)",
    )
    parser.add_argument("--mode", choices=["random", "constant"], default="random")
    parser.add_argument("--constant-token", default=" x", help="token emitted in constant mode")
    parser.add_argument("--context", type=int, default=4096, help="trained context length")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = write_tiny_model(
        args.out,
        tokenizer_json=args.tokenizer_json or default_tokenizer_json(),
        mode=args.mode,
        constant_token=args.constant_token,
        context=args.context,
        seed=args.seed,
    )
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, mode={args.mode})")


if __name__ == "__main__":
    main()
