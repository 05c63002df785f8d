"""Text of a known token count, for workloads that give only counts.

The router decides from text: it renders the prompt format, bounds and counts tokens, fits and
trims by lines. So a request given as "812 prefix tokens" becomes 812 synthetic tokens in lines of
`LINE_TOKENS` (the newline being one of them), and `SyntheticCounter` counts them exactly.
Rendering, fitting and trimming then run unchanged and land on the given sizes.

Each token is one `START` character and two or three `FILL` characters, 3.5 bytes on average: the
bytes per token of real code that the router assumes when it ranks a prompt whose fit was proved by
its byte length alone. Synthetic text of one byte per token would make every such prompt look
three times cheaper than it is.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .._routing.render import SPECIAL_TOKENS, render
from .._routing.request import CompletionRequest
from .._routing.tokens import TokenCounter

__all__ = [
    "LINE_TOKENS",
    "START",
    "PiecesCounter",
    "SyntheticCounter",
    "synthetic_lines",
    "synthetic_text",
]

# ASCII control characters that no source file or prompt format uses.
START = "\x01"
FILL = "\x02"
LINE_TOKENS = 12
# Eleven tokens of 4, 4, 3, 4, 4, 3... bytes and the newline: 42 bytes, 3.5 per token.
_TOKENS = tuple(START + FILL * (3 if i % 3 != 2 else 2) for i in range(LINE_TOKENS - 1))
_LINE = "".join(_TOKENS) + "\n"
# A control string of the FIM / repository format with the path or name that follows it.
_FRAME = re.compile("<[a-z_|]+>[^\x01\x02\n<]*")
_SPECIALS = frozenset(SPECIAL_TOKENS)


def synthetic_lines(tokens: int, *, cursor: bool = False) -> str:
    """`tokens` synthetic tokens in lines; with `cursor` the partial line comes last (a prefix
    ends mid-line at the cursor), else first."""
    full, rest = divmod(tokens, LINE_TOKENS)
    if cursor:
        return _LINE * full + "".join(_TOKENS[:rest])
    return ("".join(_TOKENS[:rest - 1]) + "\n" if rest else "") + _LINE * full


def synthetic_text(tokens: int) -> str:
    """A left-to-right prompt of `tokens` synthetic tokens."""
    return synthetic_lines(tokens, cursor=True)


class SyntheticCounter:
    """Counts synthetic text exactly and everything else with `inner`.

    In a synthetic prompt each `START` and each newline is a token; the format around it
    (control strings, one token each, and the paths after them) is counted by `inner`. `exact`
    is True: a counts-only workload knows its sizes.

    A simulated request's prompt is counted several times over, with the same text in new
    strings: when the request is prepared, when the router fits it to each window, when the
    simulated server bills it. So the counts of recent long texts are kept, found by length
    and then by comparing the text, which costs a fraction of counting it again; and the
    synthetic parts a request is made of are `known` when it is made, so that even the first
    count of its prompt only counts the format around them.
    """

    exact = True

    def __init__(self, inner: TokenCounter):
        self._inner = inner
        self._frames: dict[str, int] = {}
        self._short: dict[str, int] = {}
        self._shapes: dict[tuple[str | None, str | None, tuple[str, ...]], int] = {}
        # Whole texts and their counts; synthetic parts and their START + newline counts.
        self._whole = _Recent(_RECENT)
        self._parts = _Recent(4 * _RECENT)

    def known(self, text: str, tokens: int) -> None:
        """`text` is `synthetic_lines(tokens)` or `synthetic_text(tokens)`: remember its count
        (it is `tokens`) for the prompts it goes into."""
        if len(text) >= _REMEMBER_FROM:
            self._parts.add(text, tokens)

    def fim_tokens(self, request: CompletionRequest, parts_tokens: int) -> int:
        """`count(render(request).prompt)` for a fill-in-the-middle request whose prefix,
        suffix and files are synthetic text of `parts_tokens` tokens in all, without rendering
        it: the format around them costs the same for every request of its shape (its paths),
        so it is counted once per shape, rendered with empty texts. (That holds because every
        synthetic text starts with `START` or a newline, where the paths before it end.)"""
        texts = (request.prefix or "", request.suffix or "", *(f.text for f in request.files))
        if not any(START in t for t in texts):  # no synthetic token: `inner` counts it all
            return self.count(render(request).prompt)
        shape = (request.repo_name, request.path, tuple(f.path for f in request.files))
        frame = self._shapes.get(shape)
        if frame is None:
            empty = request.model_copy(update={
                "prefix": "", "suffix": "",
                "files": tuple(f.model_copy(update={"text": ""}) for f in request.files)})
            frame = self._framed(render(empty).prompt)
            if len(self._shapes) < _MAX_FRAMES:
                self._shapes[shape] = frame
        return parts_tokens + frame

    def count(self, text: str) -> int:
        if text == _LINE:
            return LINE_TOKENS  # trimming counts line by line: most lines are this one
        if len(text) < _REMEMBER_FROM:
            if START in text:
                return self._count(text)
            # Short text of the format alone (the frame a trim keeps): `inner` counts it once.
            n = self._short.get(text)
            if n is None:
                n = self._inner.count(text)
                if len(self._short) >= _MAX_FRAMES:
                    self._short.clear()
                self._short[text] = n
            return n
        n = self._whole.find(text, 0, len(text))
        if n is None:
            n = self._count(text)
            self._whole.add(text, n)
        return n

    def count_many(self, texts: Sequence[str]) -> list[int]:
        line, count = _LINE, self.count
        return [LINE_TOKENS if t == line else count(t) for t in texts]

    def _count(self, text: str) -> int:
        if START not in text:
            return self._inner.count(text)
        if text[0] == "<":
            return self._framed(text)
        n = self._synthetic(text, 0, len(text))
        if text[0] not in (START, "\n"):
            n += self._other(text)  # a chat template around synthetic text: rare
        return n

    def _framed(self, text: str) -> int:
        """The control strings of the format with the names after them (`_FRAME`; synthetic
        text holds no `<`, so a search for it finds them: the same matches as `findall`), and
        the synthetic text between them."""
        n = pos = 0
        at = text.find("<")
        while at >= 0:
            m = _FRAME.match(text, at)
            if m is None:
                at = text.find("<", at + 1)
                continue
            if at > pos:
                n += self._synthetic(text, pos, at)
            piece = m.group()
            cost = self._frames.get(piece)
            if cost is None:
                cost = self._frame(piece)
                if len(self._frames) < _MAX_FRAMES:
                    self._frames[piece] = cost
            n += cost
            pos = m.end()
            at = text.find("<", pos)
        if pos < len(text):
            n += self._synthetic(text, pos, len(text))
        return n

    def _synthetic(self, text: str, lo: int, hi: int) -> int:
        """How many `START`s and newlines `text[lo:hi]` holds."""
        if hi - lo >= _REMEMBER_FROM:
            n = self._parts.find(text, lo, hi)
            if n is not None:
                return n
            if text[lo] == "\n":  # the newline after a file's path, then the file
                n = self._parts.find(text, lo + 1, hi)
                if n is not None:
                    return n + 1
        return text.count(START, lo, hi) + text.count("\n", lo, hi)

    def _frame(self, piece: str) -> int:
        end = piece.index(">") + 1
        special, rest = piece[:end], piece[end:]
        head = 1 if special in _SPECIALS else self._inner.count(special)
        return head + (self._inner.count(rest) if rest else 0)

    def _other(self, text: str) -> int:
        rest = text.replace(START, "").replace(FILL, "").replace("\n", "")
        return self._inner.count(rest) if rest else 0

    def __repr__(self) -> str:
        return f"SyntheticCounter(inner={self._inner!r})"

    def with_pieces(self) -> PiecesCounter | None:
        """This counter, reporting the pieces of a synthetic fill-in-the-middle prompt as
        `TokenizerCounter.costs` does, so that trimming one reads its lines' counts off blocks
        of them instead of counting every line. None if `inner` counts a newline as other
        than one token: a lone newline line would then count apart from its place in a
        prompt."""
        return PiecesCounter(self) if self._inner.count("\n") == 1 else None

    def pieces(self, text: str, *, fine: bool) -> tuple[list[int], list[int]]:
        """Where the pieces of `text` start and their counts, which add up to `count(text)`.

        Pieces start where the router's trimming cuts a FIM prompt into regions: at every
        control string (the newline after a path goes with it) and at line starts. With `fine`
        every line is a piece, else runs of `_BLOCK_LINES` lines. A piece's count is what
        counting it alone gives, so blocks cut into lines add up the same, and the cuts the
        router chooses over these pieces are the ones it chooses counting line by line."""
        cuts: list[int] = []
        costs: list[int] = []
        if fine:
            self._lines(text, 0, len(text), cuts, costs)
            return cuts, costs
        if START not in text or text[0] != "<":  # nothing the router trims: one piece
            return [0], [self.count(text)]
        pos = 0
        at = text.find("<")
        while at >= 0:
            m = _FRAME.match(text, at)
            if m is None:
                at = text.find("<", at + 1)
                continue
            if at > pos:
                self._blocks(text, pos, at, cuts, costs)
            piece = m.group()
            cost = self._frames.get(piece)
            if cost is None:
                cost = self._frame(piece)
            pos = m.end()
            if pos < len(text) and text[pos] == "\n" and not piece.endswith(">"):
                cost += 1  # the newline ending a path line: the prefix or a file starts after it
                pos += 1
            cuts.append(at)
            costs.append(cost)
            at = text.find("<", pos)
        if pos < len(text):
            self._blocks(text, pos, len(text), cuts, costs)
        return cuts, costs

    def _blocks(self, text: str, lo: int, hi: int, cuts: list[int], costs: list[int]) -> None:
        """`text[lo:hi]`, which starts a line, in pieces: `_BLOCK`s of whole synthetic lines,
        a partial line alone, and the lines left over at the end together."""
        if hi - lo >= _REMEMBER_FROM:
            n = self._parts.find(text, lo, hi)
            if n is not None:
                _known_blocks(n, text[hi - 1] == "\n", lo, cuts, costs)
                return
        pos = lo
        while pos < hi:
            cuts.append(pos)
            if pos + len(_BLOCK) <= hi and text.startswith(_BLOCK, pos):
                costs.append(_BLOCK_TOKENS)
                pos += len(_BLOCK)
                continue
            end = hi if text.startswith(_LINE, pos) else text.find("\n", pos, hi) + 1 or hi
            # Each synthetic line counts its `START`s and its newline: so does a run of them.
            costs.append(text.count(START, pos, end) + text.count("\n", pos, end))
            pos = end

    def _lines(self, text: str, lo: int, hi: int, cuts: list[int], costs: list[int]) -> None:
        pos = lo
        line, count = _LINE, self.count
        for part in text[lo:hi].splitlines(True):
            cuts.append(pos)
            costs.append(LINE_TOKENS if part == line else count(part))
            pos += len(part)


def _known_blocks(tokens: int, partial_first: bool, lo: int, cuts: list[int],
                  costs: list[int]) -> None:
    """The pieces `_blocks` finds in `synthetic_lines(tokens)` (`partial_first`) or in
    `synthetic_text(tokens)` starting at `lo`, worked out from `tokens` alone: the partial line
    (when it comes first), `_BLOCK`s, then the lines left over (and the partial line, when it
    comes last) together."""
    full, rest = divmod(tokens, LINE_TOKENS)
    pos = lo
    tail = rest
    if rest and partial_first:
        cuts.append(pos)
        costs.append(rest)
        pos += _PARTIAL_CHARS[rest]
        tail = 0
    blocks, left = divmod(full, _BLOCK_LINES)
    end = pos + blocks * len(_BLOCK)
    cuts.extend(range(pos, end, len(_BLOCK)))
    costs.extend([_BLOCK_TOKENS] * blocks)
    if left or tail:
        cuts.append(end)
        costs.append(left * LINE_TOKENS + tail)


class PiecesCounter:
    """A `SyntheticCounter` (`with_pieces`) that also reports pieces (`costs`)."""

    exact = True

    def __init__(self, counter: SyntheticCounter):
        self.count = counter.count
        self.count_many = counter.count_many
        self.costs = counter.pieces


class _Recent:
    """Up to `size` texts and a number for each, found by length and comparison: one text
    per length (the last added), all forgotten at once when full."""

    def __init__(self, size: int):
        self._size = size
        self._by_length: dict[int, tuple[str, int]] = {}

    def find(self, text: str, lo: int, hi: int) -> int | None:
        """The number of the text equal to `text[lo:hi]` (compared in place, not copied)."""
        found = self._by_length.get(hi - lo)
        if found is not None and text.startswith(found[0], lo):
            return found[1]
        return None

    def add(self, text: str, n: int) -> None:
        if len(self._by_length) >= self._size:
            self._by_length.clear()
        self._by_length[len(text)] = (text, n)


# Pieces of this many synthetic lines (see `pieces`).
_BLOCK_LINES = 64
_BLOCK = _LINE * _BLOCK_LINES
_BLOCK_TOKENS = LINE_TOKENS * _BLOCK_LINES
# The characters of the partial line of `rest` tokens that `synthetic_lines` puts first.
_PARTIAL_CHARS = [len("".join(_TOKENS[:rest - 1])) + 1 if rest else 0
                  for rest in range(LINE_TOKENS)]
# Texts shorter than this are counted again: a lookup would cost about as much.
_REMEMBER_FROM = 256
# Enough for the prompts of the requests being prepared and routed at once (see `runner`).
_RECENT = 512
_MAX_FRAMES = 4096
