import pytest

from adapters.text import split_markdown


def utf16(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def fences_balanced(piece: str) -> bool:
    return sum(1 for line in piece.splitlines() if line.lstrip().startswith("```")) % 2 == 0


def test_short_text_is_one_piece() -> None:
    assert split_markdown("hello\n\nworld", 100) == ["hello\n\nworld"]


def test_prefers_paragraph_boundaries() -> None:
    text = "a" * 60 + "\n\n" + "b" * 60
    assert split_markdown(text, 100) == ["a" * 60, "b" * 60]


def test_falls_back_to_lines_then_words_then_a_hard_cut() -> None:
    lines = "\n".join(["x" * 30] * 6)
    assert all(p == "\n".join(["x" * 30] * len(p.split("\n"))) for p in split_markdown(lines, 100))
    words = " ".join(["word"] * 60)
    pieces = split_markdown(words, 100)
    assert all(len(p) <= 100 and not p.startswith(" ") and not p.endswith(" ") for p in pieces)
    assert " ".join(pieces) == words
    solid = "z" * 250
    assert "".join(split_markdown(solid, 100)) == solid


def test_code_block_split_is_closed_and_reopened_with_its_language() -> None:
    code = "\n".join(f"print({i})" for i in range(200))
    text = f"Here is the code:\n\n```python\n{code}\n```\n\nDone."
    pieces = split_markdown(text, 500)
    assert len(pieces) > 3
    assert all(len(p) <= 500 and fences_balanced(p) for p in pieces)
    assert all(p.startswith("```python\n") for p in pieces[1:-1])
    # Nothing lost: the code lines all survive, in order.
    body = [line for p in pieces for line in p.splitlines() if line.startswith("print(")]
    assert body == code.splitlines()
    assert pieces[-1].endswith("Done.")


def test_a_12000_character_reply_with_code() -> None:
    prose = ("A sentence of prose that goes on. " * 20 + "\n\n") * 10
    code = "```sql\n" + "\n".join(f"SELECT {i} FROM t;" for i in range(400)) + "\n```\n\n"
    text = (prose + code) * 2
    pieces = split_markdown(text, 4096)
    assert all(len(p) <= 4096 and fences_balanced(p) for p in pieces)
    assert sum(len(p) for p in pieces) >= len(text.strip()) - 10 * len(pieces)


def test_custom_length_counts_utf16_units() -> None:
    text = "😀" * 3000  # 2 UTF-16 units each
    pieces = split_markdown(text, 4096, length=utf16)
    assert all(utf16(p) <= 4096 for p in pieces)
    assert "".join(pieces) == text


def test_limit_too_small_is_refused() -> None:
    with pytest.raises(ValueError, match="too small"):
        split_markdown("x" * 100, 8)


def test_a_long_fence_marker_still_fits_the_limit() -> None:
    text = "0" * 65 + "\n" + "`" * 17 + "\n" + "0" * 17
    pieces = split_markdown(text, 100)
    assert all(len(p) <= 100 for p in pieces)
    assert "".join(pieces).replace("`", "").replace("\n", "") == "0" * 82


def test_a_long_info_string_is_not_copied_into_every_piece() -> None:
    # This used to loop forever: the reopened block's first line alone filled a piece.
    text = "```" + "x" * 200 + "\n" + "code line\n" * 50
    pieces = split_markdown(text, 100)
    assert all(len(p) <= 100 for p in pieces)
    assert sum(p.count("code line") for p in pieces) == 50
