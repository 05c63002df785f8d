"""StarCoder 2 token counts: exact with the real tokenizer, bounded or estimated without it.

Three facts make counting cheap (all about StarCoder 2's byte-level BPE):

* The UTF-8 byte length is a hard upper bound on the token count: every token covers at least one
  byte, and every special token is at least four bytes long. So `bytes + max_tokens <= window`
  proves a fit without tokenizing anything; most short prompts never reach the tokenizer.
* Digits are split one per token, so they count in full; other ASCII code averages 3-4 bytes per
  token and rarely falls below 2.
* Emoji can take 1.5 bytes per token, the worst case among non-ASCII text.

`EstimatingCounter` estimates closely from the pieces the tokenizer would split code into (see
`estimate.py`) for when no tokenizer is available; `TokenizerCounter` counts exactly with Hugging
Face `tokenizers` (an optional extra), loaded from a path, `STARCODER_ROUTER_TOKENIZER`, the
local Hugging Face cache, or a hub id the user names explicitly. Nothing is downloaded unless a
hub id is given.
"""

from __future__ import annotations

import glob
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

from .._errors import ConfigError, MissingDependencyError
from .bpe import tiktoken_engine
from .count_cache import CacheStats, CountCache
from .estimate import estimate_tokens

if TYPE_CHECKING:
    from tokenizers import Tokenizer

__all__ = [
    "CountKind",
    "EstimatingCounter",
    "TokenCounter",
    "TokenizerCounter",
    "load_token_counter",
    "utf8_length",
]

CountKind = Literal["exact", "bound", "estimate"]

logger = logging.getLogger("starcoder_router")

# How a Python caller names a tokenizer; the command line says `--tokenizer PATH` instead.
API_ADVICE = "pass tokenizer=<path to tokenizer.json>"


def estimate_notice(advice: str = API_ADVICE) -> str:
    """The one line that says counts are estimated and how to make them exact; it suggests
    installing the `tokenizer` extra only when `tokenizers` is missing."""
    try:
        _import_tokenizers()
        install = ""
    except MissingDependencyError:
        install = "pip install 'starcoder-router[tokenizer]' and "
    return ("no StarCoder 2 tokenizer found: prompt token counts are estimated (close, not "
            f"exact). For exact counts: {install}{advice}, set {TOKENIZER_ENV}, or have "
            "bigcode/starcoder2-* in the Hugging Face cache")


TOKENIZER_ENV = "STARCODER_ROUTER_TOKENIZER"
_HF_REPOS = (
    "bigcode/starcoder2-15b",
    "bigcode/starcoder2-7b",
    "bigcode/starcoder2-3b",
    "bigcode/starcoder2-15b-instruct-v0.1",
)


def utf8_length(text: str) -> int:
    """UTF-8 byte length: a proven upper bound on the StarCoder 2 token count of `text`."""
    if text.isascii():
        return len(text)
    return len(text.encode("utf-8", "surrogatepass"))  # a lone surrogate: 3 bytes, no error


@runtime_checkable
class TokenCounter(Protocol):
    """Counts StarCoder 2 tokens. `exact` says whether counts are exact or conservative."""

    @property
    def exact(self) -> bool: ...

    def count(self, text: str) -> int: ...

    def count_many(self, texts: Sequence[str]) -> list[int]: ...


class EstimatingCounter:
    """A tight estimate, for when the real tokenizer is not available (see `estimate.py`).

    Calibrated on real code so that it covers the exact count for about 90% of prompts and is
    within a few percent of it for most of the rest; never more than the byte bound. An
    under-count meets the provider's context-length error, and the router fits the prompt again
    with the count the provider reports.
    """

    exact = False

    def count(self, text: str) -> int:
        return estimate_tokens(text)

    def count_many(self, texts: Sequence[str]) -> list[int]:
        return [estimate_tokens(t) for t in texts]

    def __repr__(self) -> str:
        return "EstimatingCounter()"


class TokenizerCounter:
    """Exact StarCoder 2 counts with Hugging Face `tokenizers`, or `tiktoken` when installed.

    Special-token strings in the text (`<fim_prefix>`, `<|endoftext|>`...) count as one token each,
    as the serving stacks parse them. Counts of large texts go through a bounded cache of blocks
    cut where the pre-tokenizer cannot merge across (see `count_cache`), so a prompt that repeats
    most of an earlier one costs a look-up per block plus the blocks that changed.

        counter = TokenizerCounter.from_file("tokenizer.json")
        counter.count(prompt)
        counter.cache_stats().hit_rate

    `engine`: `"auto"` uses `tiktoken` (the `fast` extra) when the tokenizer has StarCoder 2's
    shape, else `tokenizers`; both give the same ids. `cache_chars=0` turns the cache off.
    """

    exact = True

    def __init__(self, tokenizer: Tokenizer, *, source: str = "tokenizer",
                 engine: Literal["auto", "tiktoken", "tokenizers"] = "auto",
                 cache_chars: int = 8 << 20):
        self._tokenizer = tokenizer
        self.source = source
        fast = tiktoken_engine(tokenizer) if engine != "tokenizers" else None
        if engine == "tiktoken" and fast is None:
            raise MissingDependencyError("the tiktoken counting engine", "tiktoken", "fast")
        self._fast = fast
        self.engine: str = "tiktoken" if fast is not None else "tokenizers"
        # The cache cuts every special-token string out before counting a piece, so its pieces
        # take tiktoken's plain encoding.
        self._cache = CountCache(
            fast.count_many_plain if fast is not None else self._count_many_slow,
            specials=[t.content for t in tokenizer.get_added_tokens_decoder().values()],
            max_chars=max(0, cache_chars),
        )

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> TokenizerCounter:
        """Load a `tokenizer.json` file (or a directory holding one)."""
        tokenizers = _import_tokenizers()
        p = Path(path)
        if p.is_dir():
            p = p / "tokenizer.json"
        if not p.is_file():
            raise ConfigError(f"no tokenizer.json at {str(p)!r}")
        try:
            tok = tokenizers.Tokenizer.from_file(str(p))
        except Exception as exc:
            raise ConfigError(f"cannot load tokenizer from {str(p)!r}: {exc}") from exc
        return cls(tok, source=str(p))

    @classmethod
    def from_hub(cls, repo_id: str) -> TokenizerCounter:
        """Fetch the tokenizer of `repo_id` from the Hugging Face hub (this downloads)."""
        tokenizers = _import_tokenizers()
        try:
            tok = tokenizers.Tokenizer.from_pretrained(repo_id)
        except Exception as exc:
            raise ConfigError(f"cannot fetch tokenizer {repo_id!r} from the hub: {exc}") from exc
        return cls(tok, source=repo_id)

    def encode(self, text: str) -> list[int]:
        """Token ids, without adding any special token."""
        if self._fast is not None:
            return self._fast.encode(text)
        return list(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def count(self, text: str) -> int:
        if not text:
            return 0
        if self._cache.max_chars and len(text) >= _CACHE_FROM:
            return self._cache.count(text)
        if self._fast is not None:
            return self._fast.count(text)
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def count_many(self, texts: Sequence[str]) -> list[int]:
        if self._cache.max_chars or self._fast is not None:
            return [self.count(t) for t in texts]
        return self._count_many_slow(list(texts))

    def costs(self, text: str, *, fine: bool = False) -> tuple[list[int], list[int]]:
        """Where the cacheable pieces of `text` start and their exact counts (they add up to
        `count(text)`); trimming chooses its cut over these without counting again."""
        return self._cache.costs(text, fine=fine)

    def counts_cheaply(self, text: str) -> bool:
        """Whether `count(text)` would cost little now (short, or mostly counted lately): the
        async router counts in a worker thread only when it would not."""
        return self._cache.max_chars > 0 and self._cache.cheap(text)

    def cache_stats(self) -> CacheStats:
        """Hits, misses, evictions and size of the count cache."""
        return self._cache.stats()

    def clear_cache(self) -> None:
        """Forget every cached count (benchmarks of cold counting use this)."""
        self._cache.clear()

    def _count_many_slow(self, texts: list[str]) -> list[int]:
        encs = self._tokenizer.encode_batch(texts, add_special_tokens=False)
        return [len(e.ids) for e in encs]

    def __repr__(self) -> str:
        return f"TokenizerCounter(source={self.source!r}, engine={self.engine!r})"


# Below this many characters a direct count is cheaper than cutting and looking up.
_CACHE_FROM = 512


class LazyCounter:
    """Finds a tokenizer the first time an exact count is needed, never at import.

    Looks at `STARCODER_ROUTER_TOKENIZER` and the local Hugging Face cache; falls back to
    `EstimatingCounter` when neither has one or `tokenizers` is not installed. The notice that
    counts are estimated is logged once, when an estimate is first made: a router whose prompts
    all fit by their byte length (a proven bound) never needs a count and says nothing.
    `advice` says how the caller can name a tokenizer (see `estimate_notice`).
    """

    def __init__(self, *, advice: str = API_ADVICE) -> None:
        self._lock = threading.Lock()
        self._resolved: TokenCounter | None = None
        self._advice = advice
        self._noticed = False

    def resolve(self) -> TokenCounter:
        if self._resolved is None:
            with self._lock:
                if self._resolved is None:
                    self._resolved = _discover() or EstimatingCounter()
        return self._resolved

    def _estimating(self) -> TokenCounter:
        counter = self.resolve()
        if not counter.exact and not self._noticed:
            with self._lock:
                if not self._noticed:
                    self._noticed = True
                    logger.warning(estimate_notice(self._advice))
        return counter

    @property
    def exact(self) -> bool:
        return self.resolve().exact

    def count(self, text: str) -> int:
        return self._estimating().count(text)

    def count_many(self, texts: Sequence[str]) -> list[int]:
        return self._estimating().count_many(texts)

    def __repr__(self) -> str:
        return f"LazyCounter(resolved={self._resolved!r})"


def load_token_counter(
    source: str | os.PathLike[str] | TokenCounter | Literal[False] | None = None,
) -> TokenCounter:
    """Build the counter a router uses.

    * `None` (default): look for a tokenizer lazily (env var, local HF cache), else estimate.
    * a path to `tokenizer.json` or its directory: load it now.
    * a hub id such as `"bigcode/starcoder2-15b"`: download it now (explicit, never implicit).
    * `False`: never tokenize; use the conservative estimate.
    * a `TokenCounter`: use it as is.
    """
    if source is None or isinstance(source, LazyCounter):
        check_tokenizer_env()
        return source or LazyCounter()
    if source is False:
        return EstimatingCounter()
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        if os.path.exists(text):
            return TokenizerCounter.from_file(text)
        if looks_like_hub_id(text):
            return TokenizerCounter.from_hub(text)
        raise ConfigError(f"tokenizer {text!r} is neither an existing path nor a hub id")
    if isinstance(source, TokenCounter):
        return source
    raise ConfigError(f"unsupported tokenizer source {source!r}")


def looks_like_hub_id(text: str) -> bool:
    """`owner/name`, as a Hugging Face hub id is written."""
    parts = text.split("/")
    return len(parts) == 2 and all(parts) and not text.startswith((".", "~"))


def check_tokenizer_env() -> None:
    """Fail now, when a router is built, if `STARCODER_ROUTER_TOKENIZER` names no tokenizer,
    rather than at the first prompt long enough to need a count (perhaps hours later). Loading
    it stays lazy; this only looks at the file and the `tokenizers` package."""
    value = os.environ.get(TOKENIZER_ENV)
    if not value:
        return
    path = Path(value)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise ConfigError(f"{TOKENIZER_ENV}={value!r}: no tokenizer.json there; point it at a "
                          "StarCoder 2 tokenizer.json (or its folder), or unset it")
    try:
        _import_tokenizers()
    except MissingDependencyError as exc:
        raise MissingDependencyError(f"{TOKENIZER_ENV} (exact token counting)", "tokenizers",
                                     "tokenizer") from exc


def _discover() -> TokenCounter | None:
    env = os.environ.get(TOKENIZER_ENV)
    if env:
        # An explicit setting that is wrong should fail loudly, not silently estimate.
        try:
            return TokenizerCounter.from_file(env)
        except (ConfigError, MissingDependencyError) as exc:
            raise ConfigError(f"{TOKENIZER_ENV}={env!r}: {exc}") from exc
    try:
        _import_tokenizers()
    except MissingDependencyError:
        return None
    for path in _hf_cache_candidates():
        try:
            return TokenizerCounter.from_file(path)
        except ConfigError:
            continue
    return None


def _hf_cache_candidates() -> list[str]:
    hub = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if not hub:
        home = os.environ.get("HF_HOME") or os.path.join(
            os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface"
        )
        hub = os.path.join(home, "hub")
    found: list[str] = []
    for repo in _HF_REPOS:
        folder = "models--" + repo.replace("/", "--")
        pattern = os.path.join(hub, folder, "snapshots", "*", "tokenizer.json")
        found.extend(sorted(glob.glob(pattern)))
    return found


def _import_tokenizers() -> ModuleType:
    try:
        import tokenizers
    except ImportError as exc:
        raise MissingDependencyError("exact token counting", "tokenizers", "tokenizer") from exc
    return tokenizers
