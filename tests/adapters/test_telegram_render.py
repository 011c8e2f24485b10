"""Rendering agent Markdown for Telegram: entities instead of parse_mode, and splitting
that respects Telegram's UTF-16 limit, word boundaries and code blocks."""

from __future__ import annotations

import random

from adapters.telegram_render import EMPTY_REPLY, Chunk, render, render_plain, utf16_len


def check_chunks(chunks: list[Chunk]) -> None:
    """What Telegram itself would check."""
    for chunk in chunks:
        size = utf16_len(chunk.text)
        assert 0 < size <= 4096
        assert chunk.text == chunk.text.strip()
        for entity in chunk.entities:
            assert entity.length > 0 and entity.offset >= 0
            assert entity.offset + entity.length <= size


def test_markdown_becomes_text_and_entities() -> None:
    [chunk] = render("**Hi** there, `code` and [a link](https://example.com)")
    assert chunk.text == "Hi there, code and a link"
    kinds = {(e.type, e.offset, e.length) for e in chunk.entities}
    assert ("bold", 0, 2) in kinds and ("code", 10, 4) in kinds
    link = next(e for e in chunk.entities if e.type == "text_link")
    assert link.url == "https://example.com"


def test_characters_reserved_in_markdownv2_need_no_escaping() -> None:
    text = "1.5 (approx.) - [x] #tag + a=b! {c|d} > e_f_g"
    [chunk] = render(text)
    assert "1.5 (approx.)" in chunk.text and "{c|d}" in chunk.text and "\\" not in chunk.text
    check_chunks([chunk])


def test_offsets_count_utf16_units() -> None:
    [chunk] = render("😀😀 **bold**")
    [bold] = chunk.entities
    assert (bold.offset, bold.length) == (5, 4)  # each emoji is two UTF-16 units


def test_long_text_splits_on_paragraphs_first() -> None:
    para = ("word " * 150).strip()  # 749 characters
    chunks = render("\n\n".join([para] * 12))
    check_chunks(chunks)
    assert len(chunks) == 3
    assert all(c.text.split("\n\n")[-1] == para for c in chunks)


def test_a_single_long_line_splits_between_words() -> None:
    text = " ".join(f"w{i:05d}" for i in range(1500))  # one 10,499-character line
    chunks = render(text)
    check_chunks(chunks)
    words = [w for c in chunks for w in c.text.split(" ")]
    assert words == text.split(" ")


def test_the_limit_is_utf16_not_characters() -> None:
    chunks = render("😀" * 3000)  # 3000 characters, 6000 UTF-16 units
    check_chunks(chunks)
    assert len(chunks) == 2
    assert "".join(c.text for c in chunks) == "😀" * 3000


def test_a_split_code_block_is_reopened_with_its_language() -> None:
    code = "\n".join(f"x_{i} = {i}" for i in range(900))
    chunks = render(f"Intro.\n\n```python\n{code}\n```\n\nOutro.")
    check_chunks(chunks)
    assert len(chunks) >= 3
    pres = [[e for e in c.entities if e.type == "pre"] for c in chunks]
    assert all(p and p[0].language == "python" for p in pres[1:-1])
    assert all(p and p[0].language == "python" for p in pres if p)
    # no line is cut in two
    lines = [line for c in chunks for line in c.text.split("\n")]
    assert [line for line in lines if line.startswith("x_")] == code.split("\n")


def test_a_code_block_is_kept_whole_when_a_break_before_it_works() -> None:
    para = ("text " * 100).strip()
    code = "\n\n".join(f"y = {i}" for i in range(150))  # a code block with blank lines
    chunks = render("\n\n".join([para] * 7) + f"\n\n```\n{code}\n```")
    check_chunks(chunks)
    assert len(chunks) == 2
    assert chunks[0].entities == ()
    assert [e.type for e in chunks[1].entities] == ["pre"]
    assert chunks[1].text == code


def test_random_markdown_always_gives_valid_chunks() -> None:
    rng = random.Random(7)
    pieces = [
        "**b**",
        "_i_",
        "`c`",
        "😀",
        "é",
        "\n",
        "\n\n",
        "```\ncode\n```\n",
        "- item\n",
        " ",
        "word",
    ]
    for _ in range(30):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 3000)))
        check_chunks(render(text, limit=rng.choice([50, 300, 4096])))


def test_empty_and_plain_fallback() -> None:
    assert [c.text for c in render("   \n ")] == [EMPTY_REPLY]
    [plain] = render_plain("**not bold**")
    assert plain.text == "**not bold**" and plain.entities == ()


def test_html_like_text_and_entities_are_shown_literally() -> None:
    # Issue 9: CommonMark reads these as raw HTML (which the renderer dropped) and
    # as entity references (``&amp;`` became ``&``); the agent meant the characters.
    cases = {
        '<div class="note">\n\nSee the note.': '<div class="note">\n\nSee the note.',
        "Return a List<String> here.": "Return a List<String> here.",
        "Call it with <your-token> and <!-- this -->.": (
            "Call it with <your-token> and <!-- this -->."
        ),
        "Fish &amp; chips, &copy; &#65; &lt;b&gt;": "Fish &amp; chips, &copy; &#65; &lt;b&gt;",
        "a < b > c": "a < b > c",
        "<div>\n**x** in <b>bold</b>\n</div>": "<div>\nx in <b>bold</b>\n</div>",
        "an escaped \\&amp; and \\<b>": "an escaped &amp; and <b>",
    }
    for markdown, expected in cases.items():
        [chunk] = render(markdown)
        assert chunk.text == expected, markdown
        check_chunks([chunk])


def test_markdown_around_html_like_text_still_formats() -> None:
    [chunk] = render("**List<String>** and `<b>&amp;</b>` and [<x>](https://e.com?a=1&amp;b=2)")
    assert chunk.text == "List<String> and <b>&amp;</b> and <x>"
    kinds = {(e.type, e.offset, e.length) for e in chunk.entities}
    assert ("bold", 0, 12) in kinds and ("code", 17, 12) in kinds
    link = next(e for e in chunk.entities if e.type == "text_link")
    assert (link.offset, link.length) == (34, 3)


def test_autolinks_stay_links() -> None:
    [chunk] = render("see <https://example.com> or <me@example.com>")
    assert chunk.text == "see https://example.com or me@example.com"
    assert [e.url for e in chunk.entities] == ["https://example.com", "me@example.com"]


def test_a_long_answer_with_html_like_lines_loses_no_line() -> None:
    lines = [
        f"{i}. Use `x{i}` with List<Item{i}> &amp; <option-{i}> &#x{i + 65:x};"
        for i in range(1, 152)
    ]
    chunks = render("\n".join(lines), limit=1000)
    check_chunks(chunks)
    shown = "\n".join(c.text for c in chunks).split("\n")
    assert shown == [line.replace("`", "") for line in lines]
