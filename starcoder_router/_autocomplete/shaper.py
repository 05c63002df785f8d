"""Post-processing of a completion, written once for whole answers and for streams.

`Shaper.push(delta)` takes the text as it arrives and returns what may be passed on; `stopped`
turns true once the completion is known to end (the caller's stream can then end and the
upstream call be closed). Whatever is passed on is a prefix of the final text, which is the
model's text

1. cut where the block opened at the cursor closes (`block` mode, `block.py`), or at the first
   newline (`line` mode, unless the caller chose its own stops);
2. cut before a line that repeats the suffix's next non-blank line: models often write the code
   after the cursor again (Tabby's removeDuplicateSuffixLines,
   https://github.com/TabbyML/tabby/pull/3392; Cody removes the same overlap);
3. without what the cursor's line already ends with (`foo(x)` before a suffix `)` gives
   `foo(x`), when the completion stays on that line;
4. without trailing whitespace.

A stream holds back only what the rules may still drop: trailing whitespace, a line that so far
matches the suffix's next line, a tail that may begin the cursor line's remainder, a line
whose first word decides whether a block goes on. Example::

    shape(plan, "return a + b\\n\\ndef other():\\n")     # "return a + b" (the block closed)
"""

from __future__ import annotations

from typing import NamedTuple

from .block import BlockEnd
from .cursor import Cursor
from .modes import Applied

__all__ = ["Plan", "Shaper", "shape"]


class Plan(NamedTuple):
    """What to do to one request's completions: the mode that applied, the cursor, and
    whether the completion ends at its first newline."""

    mode: Applied
    cursor: Cursor
    newline_ends: bool


class Shaper:
    """Shapes one completion as its text arrives (see the module docstring)."""

    __slots__ = ("_block", "_dup", "_line0_start", "_newline_ends", "_out", "_overlap",
                 "_text", "stopped")

    def __init__(self, plan: Plan):
        cursor = plan.cursor
        self._block = BlockEnd(cursor) if plan.mode == "block" else None
        self._newline_ends = plan.newline_ends
        suffix_lines = cursor.suffix.split("\n")[1:]
        # The line that would duplicate the suffix: the first non-blank one after the cursor's.
        self._dup = next((ln.rstrip() for ln in suffix_lines if ln.strip()), "")
        self._overlap = cursor.after.strip()
        # A completion's first line continues the cursor's line: compare it with `before`.
        self._line0_start = cursor.before if not cursor.before.strip() else None
        self._text = ""
        self._out = 0
        self.stopped = False

    @property
    def text(self) -> str:
        """Everything passed on so far."""
        return self._text[:self._out]

    def push(self, delta: str | None, *, end: bool = False) -> str | None:
        """The text that may go to the caller after `delta` (None when nothing may yet);
        `end` says the completion is over and releases what was held back."""
        if self.stopped:
            return None
        if delta:
            self._text += delta
        text = self._text
        cut = self._find_cut(text, end)
        if cut is not None:
            self.stopped = True
            final = self._trim_overlap(text[:cut]).rstrip()
            return self._release(len(final))
        if end:
            self.stopped = True
            return self._release(len(self._trim_overlap(text).rstrip()))
        safe = min(len(text), self._held_from(text))
        out = self._out
        return self._release(out + len(text[out:safe].rstrip())) if safe > out else None

    def _release(self, upto: int) -> str | None:
        out = self._out
        if upto <= out:
            return None
        self._out = upto
        return self._text[out:upto]

    def _find_cut(self, text: str, end: bool) -> int | None:
        cuts: list[int] = []
        if self._newline_ends and (nl := text.find("\n")) >= 0:
            cuts.append(nl)
        if self._block is not None:
            if end:
                self._block.end(text)
            else:
                self._block.feed(text)
            if self._block.cut is not None:
                cuts.append(self._block.cut)
        dup = self._duplicate_at(text, end)
        if dup is not None:
            cuts.append(dup)
        return min(cuts) if cuts else None

    def _duplicate_at(self, text: str, end: bool) -> int | None:
        """Where the first complete line that repeats the suffix's next line starts."""
        want = self._dup
        if not want:
            return None
        start = 0
        while True:
            nl = text.find("\n", start)
            if nl < 0 and not end:
                return None
            line = text[start:] if nl < 0 else text[start:nl]
            if start == 0:
                if self._line0_start is not None and \
                        (self._line0_start + line).rstrip() == want:
                    return 0
            elif line.rstrip() == want:
                return start
            if nl < 0:
                return None
            start = nl + 1

    def _held_from(self, text: str) -> int:
        """Where the text that a later rule may still drop begins."""
        held = len(text)
        block = self._block
        if block is not None and block.undecided is not None:
            held = block.undecided
        line_start = text.rfind("\n") + 1
        line = text[line_start:]
        if self._dup and line_start and self._dup.startswith(line.rstrip()):
            held = min(held, line_start)
        elif self._dup and not line_start and self._line0_start is not None and \
                self._dup.startswith((self._line0_start + line).rstrip()):
            held = 0
        if self._overlap:
            # While nothing past the first line may go out, the completion may still end on
            # it, and then without the cursor line's remainder.
            first = text.find("\n")
            first = len(text) if first < 0 else first
            if not text[first:held].strip():
                held = min(held, first - _open_tail(text[:first], self._overlap))
        return held

    def _trim_overlap(self, text: str) -> str:
        """`text` without the cursor line's remainder at its end, if it is a single line."""
        overlap = self._overlap
        if overlap and "\n" not in text.rstrip():
            body = text.rstrip()
            if body.endswith(overlap):
                return body[:len(body) - len(overlap)]
        return text


def _open_tail(text: str, target: str) -> int:
    """The length of the longest tail of `text` that begins `target` (whitespace aside)."""
    body = text.rstrip()
    for n in range(min(len(body), len(target)), 0, -1):
        if target.startswith(body[-n:]):
            return n + len(text) - len(body)
    return 0


def shape(plan: Plan, text: str) -> tuple[str, bool]:
    """The whole completion `text` shaped, and whether a rule cut it short."""
    shaper = Shaper(plan)
    shaper.push(text)
    cut = shaper.stopped
    shaper.push(None, end=True)
    return shaper.text, cut
