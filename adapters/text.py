"""Text helpers shared by the chat adapters.

`split_markdown` cuts a long Markdown reply into pieces a platform accepts
(Telegram: 4096 characters, Slack ``markdown_text``: 12,000), preferring
paragraph, then line, then word boundaries. A fenced code block cut in two is
closed at the end of one piece and reopened, with its language, at the start
of the next, so that each piece renders on its own.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")


def _open_fence(text: str) -> tuple[str, str] | None:
    """The (marker, info) of the code fence still open at the end of ``text``."""
    current: tuple[str, str] | None = None
    for line in text.split("\n"):
        match = _FENCE.match(line)
        if not match:
            continue
        marker, info = match.group(1), match.group(2).strip()
        if current is None:
            current = (marker, info)
        elif marker[0] == current[0][0] and len(marker) >= len(current[0]) and not info:
            current = None
    return current


def split_markdown(text: str, limit: int, *, length: Callable[[str], int] = len) -> list[str]:
    """Split ``text`` into pieces of at most ``limit`` (as measured by ``length``).

    ``length`` lets a platform count its own way (Telegram counts UTF-16 code
    units: ``lambda s: len(s.encode("utf-16-le")) // 2``). Nothing is lost: the
    pieces are the text in order, less the whitespace where it was cut, plus the
    fence lines that close and reopen a code block cut in two. A reopened block
    keeps its info string unless that line would take more than a quarter of a
    piece; a fence marker that long is not closed and reopened at all.
    """
    if limit < 16:
        raise ValueError("limit too small to split Markdown sensibly")
    pieces: list[str] = []
    rest = text.strip("\n")
    skip = 0  # a reopened piece must not be cut right after its reopening line
    while length(rest) > limit:
        # Leave room for closing a fence ("\n" and its marker): 16 is plenty for
        # ordinary fences, a longer marker asks for more.
        reserve = 16
        while True:
            cut = _cut_point(rest, limit - reserve, length, skip)
            head, tail = rest[:cut].rstrip(), rest[cut:]
            fence = _open_fence(head)
            if fence is not None and length(fence[0]) + 1 > limit // 4:
                fence = None
            needed = 0 if fence is None else length(fence[0]) + 1
            if needed <= reserve:
                break
            reserve = needed
        tail = tail[1:] if tail.startswith(("\n", " ")) else tail
        skip = 0
        if fence is not None:
            marker, info = fence
            reopen = f"{marker}{info}" if length(marker + info) < limit // 4 else marker
            head = f"{head}\n{marker}"
            tail = f"{reopen}\n{tail.lstrip(chr(10))}"
            skip = len(reopen) + 1
        if head.strip():
            pieces.append(head)
        rest = tail.strip("\n") if fence is None else tail.rstrip("\n")
    if rest.strip():
        pieces.append(rest)
    return pieces


def _cut_point(text: str, budget: int, length: Callable[[str], int], skip: int = 0) -> int:
    """Where to cut: the last paragraph, line or word break within ``budget`` and
    after ``skip``, else a hard cut at the budget."""
    hi = _prefix_within(text, budget, length)
    window = text[:hi]
    floor = max(hi // 3, skip)  # a cut earlier than this wastes too much of the piece
    for sep in ("\n\n", "\n", " "):
        at = window.rfind(sep)
        if at > floor:
            return at
    return max(hi, skip + 1, 1)


def _prefix_within(text: str, budget: int, length: Callable[[str], int]) -> int:
    """The longest prefix length of ``text`` whose ``length`` is <= budget."""
    if length is len:
        return min(len(text), budget)
    lo, hi = 0, min(len(text), budget)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if length(text[:mid]) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo
