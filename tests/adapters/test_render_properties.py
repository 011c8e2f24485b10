"""Properties of both renderers: nothing the agent wrote is lost, every piece fits.

Telegram. The *visible text* of an agent's Markdown is what CommonMark (with the
extensions telegramify-markdown enables) reads as content once raw HTML and entity
references count as text: the text of paragraphs, headings, list items, link and
image labels, code spans and code blocks, with backslash escapes resolved. The
Markdown syntax that becomes formatting (emphasis markers, backticks, fences,
``#``, ``>``, list markers, link destinations) is not visible. `visible_text`
computes it from pyromark's event stream (the parser telegramify-markdown itself
uses, so that the reference and the renderer never disagree about the grammar),
adding the marks the renderer puts in their place (list bullets and numbers,
heading, image and task symbols, the rule line). The rendered chunks, joined, must
show exactly that, compared without whitespace: the renderer re-spaces blocks and
the splitter trims at chunk edges, and neither is text the agent could lose.

Left out, as telegramify-markdown's own extensions that it re-reads before parsing
(and unit-tested in test_telegram_render.py): ``$`` math, ``~`` strikethrough,
``||`` spoilers, and tables (laid out again as a monospace grid).

Slack. `split_markdown`'s pieces, without the fence lines it adds to close and
reopen a code block cut in two, must be the input in order, with only whitespace
left out where it split, and each within its limit.
"""

from __future__ import annotations

import re

import pyromark
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from telegramify_markdown.converter import STANDARD_OPTIONS

from adapters.telegram_render import _RENDER_CONFIG, render, utf16_len
from adapters.text import _open_fence, split_markdown

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- inputs ------------------------------------------------------------------------

WORDS = st.sampled_from(
    [
        "word",
        "answer",
        "List<String>",
        "<your-token>",
        '<div class="note">',
        "</div>",
        "<b>",
        "<!-- note -->",
        "&amp;",
        "&lt;",
        "&#65;",
        "&copy;",
        "&nosuch;",
        "a < b > c",
        "<https://example.com>",
        "😀",
        "é",
        "中文",
        "\\*",
        "\\<",
    ]
)
SYNTAX = st.sampled_from(
    [*"<>&*_`[]()#-!=:.", " ", "  ", "\n", "\n\n", "**", "- ", "# ", "> ", "1. ", "    "]
)
CODE_TEXT = st.text(
    st.characters(blacklist_characters="`~$|", blacklist_categories=["Cs"]), max_size=80
)
FENCED = st.builds(
    lambda fence, lang, lines: f"\n{fence}{lang}\n" + "\n".join(lines) + f"\n{fence}\n",
    st.one_of(st.just("```"), st.integers(3, 40).map(lambda n: "`" * n)),
    st.one_of(st.sampled_from(["", "python", "html", "c++"]), st.text("abc-+ ", max_size=150)),
    st.lists(CODE_TEXT.map(lambda s: s.replace("\n", " ")), max_size=30),
)
INLINE_CODE = CODE_TEXT.map(lambda s: "`" + s.replace("\n", " ") + "`")
# Any Unicode, less the characters of the extensions left out above.
ANY_TEXT = st.text(
    st.characters(blacklist_characters="$~|", blacklist_categories=["Cs"]), max_size=300
)
ATOMS = st.one_of(WORDS, WORDS, SYNTAX, SYNTAX, SYNTAX, FENCED, INLINE_CODE, ANY_TEXT)
DOCS = st.lists(ATOMS, max_size=120).map("".join)
# Long answers (up to about 20,000 characters): a generated document repeated.
LONG_DOCS = st.builds(lambda doc, n: "\n\n".join([doc] * n)[:20_000], DOCS, st.integers(5, 1000))
MARKDOWN = st.one_of(DOCS, LONG_DOCS, LONG_DOCS, ANY_TEXT)

# --- the reference -----------------------------------------------------------------

_ENTITY = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")


def _events(text: str) -> list[tuple[object, dict[str, int]]]:
    return list(pyromark.events_with_range(text, options=STANDARD_OPTIONS))


def _without_html(markdown: str) -> str:
    """The input as CommonMark with raw HTML switched off would read it: each ``<``
    that opens HTML is backslash-escaped, until no HTML is left."""
    text = markdown
    while True:
        data = text.encode("utf-8")
        opens = sorted(
            {
                data.index(b"<", span["start"])
                for event, span in _events(text)
                if event == {"Start": "HtmlBlock"}
                or (isinstance(event, dict) and "InlineHtml" in event)
            }
        )
        if not opens:
            return text
        for at in reversed(opens):
            data = data[:at] + b"\\" + data[at:]
        text = data.decode("utf-8")


def visible_text(markdown: str) -> str:
    text = _without_html(markdown)
    data = text.encode("utf-8")
    symbols = _RENDER_CONFIG.markdown_symbol
    headings = {
        "H1": symbols.heading_level_1,
        "H2": symbols.heading_level_2,
        "H3": symbols.heading_level_3,
        "H4": symbols.heading_level_4,
        "H5": symbols.heading_level_5,
        "H6": symbols.heading_level_6,
    }
    out: list[str] = []
    lists: list[int | None] = []
    for event, span in _events(text):
        if event == "Rule":
            out.append(symbols.horizontal_rule)
        if not isinstance(event, dict):
            continue  # soft and hard breaks are whitespace
        if "Text" in event:
            raw = data[span["start"] : span["end"]].decode("utf-8")
            # an entity reference is text: show what the agent wrote
            out.append(raw if _ENTITY.fullmatch(raw) else event["Text"])
        elif "Code" in event:
            out.append(event["Code"])
        elif "InlineMath" in event or "DisplayMath" in event:
            out.append(event.get("InlineMath") or event["DisplayMath"])
        elif "InlineHtml" in event or "Html" in event:
            out.append(event.get("InlineHtml") or event["Html"])
        elif "TaskListMarker" in event:
            out[-1] = (
                symbols.task_completed if event["TaskListMarker"] else symbols.task_uncompleted
            )
        elif "Start" in event:
            tag = event["Start"]
            if tag == "Item":
                number = lists[-1]
                if number is None:
                    out.append(symbols.unordered_list_item)
                else:
                    out.append(f"{number}{symbols.ordered_list_suffix}")
                    lists[-1] = number + 1
            elif isinstance(tag, dict) and "List" in tag:
                lists.append(tag["List"])
            elif isinstance(tag, dict) and "Heading" in tag:
                out.append(headings[tag["Heading"]["level"]])
            elif isinstance(tag, dict) and "Image" in tag:
                out.append(symbols.image)
            elif isinstance(tag, dict) and "Table" in tag:
                assume(False)  # laid out as a grid: see the module docstring
        elif "End" in event and isinstance(event["End"], dict) and "List" in event["End"]:
            lists.pop()
    return "".join(out)


def no_space(text: str) -> str:
    return "".join(text.split())


# --- Telegram ------------------------------------------------------------------------


@SETTINGS
@given(MARKDOWN, st.sampled_from([64, 500, 4096]))
def test_telegram_chunks_show_all_visible_text_and_fit(markdown: str, limit: int) -> None:
    expected = visible_text(markdown)
    assume(expected.strip())  # an empty answer becomes a fixed note instead
    chunks = render(markdown, limit=limit)
    for chunk in chunks:
        size = utf16_len(chunk.text)
        assert 0 < size <= limit
        for entity in chunk.entities:
            assert entity.offset >= 0 and entity.length > 0
            assert entity.offset + entity.length <= size
    assert no_space("".join(c.text for c in chunks)) == no_space(expected)


# --- Slack ---------------------------------------------------------------------------


def assert_pieces_are_the_text(text: str, pieces: list[str]) -> None:
    """``pieces`` are ``text`` in order, less whitespace where it was cut, plus the
    fence lines split_markdown adds where it cut a code block: a closing line at the
    end of a piece whose body leaves a fence open, and a reopening line at the start
    of the next. A piece may also end with a fence of the text's own, so both
    readings of such a boundary are tried."""

    states = {(0, False)}  # (where the text goes on, whether a fence was reopened)
    for index, piece in enumerate(pieces):
        body, _, last = piece.rpartition("\n")
        closed = _open_fence(body) is not None and re.fullmatch(r"`{3,}|~{3,}", last)
        after: set[tuple[int, bool]] = set()
        for at, reopened in states:
            shown = piece
            if reopened:
                first, _, shown = piece.partition("\n")
                if not re.fullmatch(r"(`{3,}|~{3,}).*", first):
                    continue
            readings = [(shown, False)]
            if index + 1 < len(pieces) and closed and "\n" in shown:
                readings.append((shown.rpartition("\n")[0], True))
            for reading, added in readings:
                start = at
                while True:
                    if text.startswith(reading, start):
                        after.add((start + len(reading), added))
                    if start >= len(text) or not text[start].isspace():
                        break
                    start += 1
        assert after, (index, pieces)
        states = after
    assert any(not text[at:].strip() for at, _ in states), pieces


@SETTINGS
@given(MARKDOWN, st.sampled_from([16, 100, 1000, 12_000]), st.booleans())
def test_slack_pieces_are_the_input_and_fit(markdown: str, limit: int, utf16: bool) -> None:
    length = utf16_len if utf16 else len
    pieces = split_markdown(markdown, limit, length=length)
    assert all(0 < length(p) <= limit for p in pieces)
    assert_pieces_are_the_text(markdown, pieces)
