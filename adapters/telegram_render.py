"""Agent Markdown -> Telegram messages that Telegram always accepts.

LLM bots fail most often on "can't parse entities": MarkdownV2 wants a dozen
characters escaped, and agents write whatever they like. So nothing here uses
``parse_mode``. telegramify-markdown turns the Markdown into plain text plus a
list of `MessageEntity` (bold, code, pre with its language, links...), whose
offsets are UTF-16 code units, as Telegram counts them. The text needs no
escaping at all; if Telegram still refuses the entities, the adapter sends the
same text without them.

Raw HTML and entity references are text: agents write ``List<String>``,
``<your-token>`` or ``&amp;`` and mean those characters, but CommonMark reads
them as HTML (which telegramify-markdown drops: it renders Markdown, not HTML)
and as entities (``&amp;`` -> ``&``). Neither the library nor its parser,
pulldown-cmark via pyromark, can switch raw HTML off (pulldown-cmark declined the
option, pulldown-cmark#103 and #608), so `_html_as_text` asks the same parser
where it sees HTML and entities and backslash-escapes their first character, the
CommonMark way of saying "this is a literal character". Markdown around and
inside that text still formats; code spans and blocks are never touched.

Long replies are split on the rendered text, so that every piece is at most
4096 UTF-16 code units however much the rendering grew or shrank the Markdown:
on a paragraph break, else a line break, else a space, preferring breaks
outside code blocks. An entity cut by a split is clipped into both pieces, so a
code block cut in two is closed at the end of one message and reopened, with its
language, at the start of the next.

Example::

    for chunk in render("**Hi** `x`"):
        chunk.text       # "Hi x"
        chunk.entities   # (bold 0+2, code 3+1)
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pyromark
import telegramify_markdown
from telegram import MessageEntity
from telegram.constants import MessageLimit
from telegramify_markdown.converter import STANDARD_OPTIONS

log = logging.getLogger("adapters.telegram")

#: Telegram's limit for one message, in UTF-16 code units.
MAX_MESSAGE_UTF16 = MessageLimit.MAX_TEXT_LENGTH
EMPTY_REPLY = "(The agent sent an empty reply.)"

_RENDER_CONFIG = telegramify_markdown.RenderConfig.isolated()


@dataclass(frozen=True, slots=True)
class Chunk:
    """One Telegram message: plain text and its entities (UTF-16 offsets)."""

    text: str
    entities: tuple[MessageEntity, ...] = ()


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def render(markdown: str, *, limit: int = MAX_MESSAGE_UTF16) -> list[Chunk]:
    """Render agent Markdown into one or more messages of at most ``limit`` UTF-16 units."""
    try:
        text, raw_entities = telegramify_markdown.convert(
            _html_as_text(markdown), config=_RENDER_CONFIG
        )
        entities = [
            _Span(e.type, e.offset, e.offset + e.length, e.url, e.language, e.custom_emoji_id)
            for e in raw_entities
            if e.length > 0 and e.type != "text_mention"
        ]
    except Exception:  # a renderer bug must not cost the user their answer
        log.warning("could not render the reply as Markdown; sending it as plain text")
        text, entities = markdown, []
    chunks = split_text(text, entities, limit)
    return chunks or [Chunk(EMPTY_REPLY)]


def render_plain(markdown: str, *, limit: int = MAX_MESSAGE_UTF16) -> list[Chunk]:
    """The reply as raw text, no formatting at all: the last resort."""
    return split_text(markdown, [], limit) or [Chunk(EMPTY_REPLY)]


# An HTML5 entity reference as CommonMark recognises one (spec 6.2); a named one
# that is not an entity (``&foo;``) is text to the parser anyway.
_ENTITY = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")


def _html_as_text(markdown: str) -> str:
    """``markdown`` with every raw HTML construct and entity reference escaped.

    Parses with the options telegramify-markdown parses with, so both agree on what
    is HTML. Escaping the ``<`` of an HTML block turns the block into a paragraph,
    whose lines may hold inline HTML of their own: hence the loop, which ends because
    every pass escapes at least one ``<`` that stays escaped. Entities come last, on
    the final reading (escaping an ``&`` changes no structure).
    """
    text = markdown
    while "<" in text:
        starts: list[int] = []
        for event, span in pyromark.events_with_range(text, options=STANDARD_OPTIONS):
            if event == {"Start": "HtmlBlock"} or (
                isinstance(event, dict) and "InlineHtml" in event
            ):
                starts.append(span["start"])
        if not starts:
            break
        text = _escape_at(text, starts, b"<")
    if "&" not in text:
        return text
    source = text.encode("utf-8")
    amps: list[int] = []
    for event, span in pyromark.events_with_range(text, options=STANDARD_OPTIONS):
        # pulldown-cmark gives each entity reference a Text event of its own
        if isinstance(event, dict) and "Text" in event:
            raw = source[span["start"] : span["end"]].decode("utf-8")
            if raw != event["Text"] and _ENTITY.fullmatch(raw):  # not code: it was decoded
                amps.append(span["start"])
    return _escape_at(text, amps, b"&") if amps else text


def _escape_at(text: str, starts: list[int], char: bytes) -> str:
    """A backslash before the first ``char`` at or after each UTF-8 offset."""
    source = text.encode("utf-8")
    cuts = sorted({source.index(char, start) for start in starts})
    pieces: list[bytes] = []
    last = 0
    for cut in cuts:
        pieces += (source[last:cut], b"\\")
        last = cut
    pieces.append(source[last:])
    return b"".join(pieces).decode("utf-8")


@dataclass(frozen=True, slots=True)
class _Span:
    """An entity as a [start, end) range in UTF-16 units of the whole text."""

    type: str
    start: int
    end: int
    url: str | None = None
    language: str | None = None
    custom_emoji_id: str | None = None

    def clipped(self, start: int, end: int) -> MessageEntity | None:
        lo, hi = max(self.start, start), min(self.end, end)
        if hi <= lo:
            return None
        return MessageEntity(
            type=self.type,
            offset=lo - start,
            length=hi - lo,
            url=self.url,
            language=self.language,
            custom_emoji_id=self.custom_emoji_id,
        )


def split_text(text: str, entities: Sequence[_Span], limit: int) -> list[Chunk]:
    """Cut ``text`` into chunks of at most ``limit`` UTF-16 units, clipping entities.

    Whitespace at the edges of a chunk is dropped (Telegram trims it anyway, which
    would shift the entity offsets); whitespace-only chunks are left out.
    """
    # units[i] = UTF-16 offset of text[i]; units[len(text)] = total length
    units = [0] * (len(text) + 1)
    total = 0
    for i, ch in enumerate(text):
        units[i] = total
        total += 2 if ord(ch) > 0xFFFF else 1
    units[len(text)] = total
    pres = [(e.start, e.end) for e in entities if e.type == "pre"]

    def in_pre(index: int) -> bool:
        u = units[index]
        return any(s < u < e for s, e in pres)

    chunks: list[Chunk] = []
    start = 0
    while start < len(text):
        # skip whitespace between chunks
        while start < len(text) and text[start].isspace():
            start += 1
        if start >= len(text):
            break
        # the furthest index whose text[start:end] fits
        budget = units[start] + limit
        if units[len(text)] <= budget:
            end = cut = len(text)
        else:
            end = _furthest_fit(units, start, budget)
            cut = _best_break(text, start, end, in_pre)
        piece_start, piece_end = start, cut
        while piece_end > piece_start and text[piece_end - 1].isspace():
            piece_end -= 1
        if piece_end > piece_start:
            u0, u1 = units[piece_start], units[piece_end]
            clipped = (e.clipped(u0, u1) for e in entities)
            chunks.append(
                Chunk(text[piece_start:piece_end], tuple(c for c in clipped if c is not None))
            )
        start = max(cut, start + 1)
    return chunks


def _furthest_fit(units: list[int], start: int, budget: int) -> int:
    lo, hi = start + 1, len(units) - 1  # text[start:hi] fits if units[hi] <= budget
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if units[mid] <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _best_break(text: str, start: int, end: int, in_pre: Callable[[int], bool]) -> int:
    """Where to cut text[start:end]: after a paragraph break, a line break, a space
    (in that order), in the second half of the window if possible, and outside a code
    block if possible; else a hard cut at ``end``."""
    half = start + (end - start) // 2
    candidates: list[tuple[str, bool, int]] = [
        ("\n\n", False, half),
        ("\n", False, half),
        ("\n", True, half),
        (" ", True, half),
        ("\n\n", False, start),
        ("\n", True, start),
        (" ", True, start),
    ]
    for sep, allow_pre, floor in candidates:
        pos = text.rfind(sep, floor + 1, end)
        while pos > floor:
            if allow_pre or not in_pre(pos):
                return pos + len(sep)
            pos = text.rfind(sep, floor + 1, pos)
    return end
