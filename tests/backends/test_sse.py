"""The incremental SSE parser: spec cases, and any chunking gives the same events."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from bridge.backends.sse import SseEvent, SseParser


def parse(*chunks: str) -> list[SseEvent]:
    parser = SseParser()
    events: list[SseEvent] = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    events.extend(parser.close())
    return events


def test_fields_comments_and_multiline_data():
    text = (
        "\ufeff: a comment\n"
        "event: update\n"
        "id: 7\n"
        "data: first\n"
        "data:second\n"
        "retry: 100\n"
        "\n"
        "data: plain\n\n"
        "event: empty\n\n"  # no data: not dispatched
        "data\n\n"  # a field without a colon: empty data
    )
    assert parse(text) == [
        SseEvent(data="first\nsecond", event="update", id="7"),
        SseEvent(data="plain", event="message", id="7"),
        SseEvent(data="", event="message", id="7"),
    ]


def test_all_line_ends():
    assert parse("data: a\r\n\r\ndata: b\r\rdata: c\n\n") == [
        SseEvent("a"),
        SseEvent("b"),
        SseEvent("c"),
    ]


def test_a_crlf_split_across_chunks_is_one_line_end():
    assert parse("data: a\r", "\n", "\r", "\ndata: b\n\n") == [SseEvent("a"), SseEvent("b")]


def test_the_last_event_without_its_blank_line_comes_at_close():
    parser = SseParser()
    assert parser.feed("data: {}\n\ndata: last") == [SseEvent("{}")]
    assert parser.close() == [SseEvent("last")]


def test_only_one_leading_space_is_stripped():
    assert parse("data:  two\n\n") == [SseEvent(" two")]


_line_text = st.text(
    alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=["Cs"]), max_size=12
)
_field = st.sampled_from(["data", "event", "id", "retry", "", "x"])
_line = st.one_of(
    st.tuples(_field, st.sampled_from([":", ": ", ""]), _line_text).map("".join),
    st.just(""),
    _line_text.map(lambda t: ":" + t),
)
_newline = st.sampled_from(["\n", "\r\n", "\r"])


@st.composite
def streams(draw: st.DrawFn) -> str:
    lines = draw(st.lists(_line, max_size=30))
    return "".join(line + draw(_newline) for line in lines)


@st.composite
def splits(draw: st.DrawFn, text: str) -> list[str]:
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=10)))
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


@given(st.data())
def test_chunk_boundaries_never_change_the_events(data: st.DataObject):
    text = data.draw(streams())
    chunks = data.draw(splits(text))
    assert "".join(chunks) == text
    assert parse(*chunks) == parse(text)
    # One character at a time, the worst case.
    assert parse(*text) == parse(text)


@given(st.lists(st.text(alphabet=st.characters(blacklist_categories=["Cs"])), max_size=8))
def test_data_round_trips(payloads: list[str]):
    # Any payload, written as the spec says (one data line per line of it), comes back.
    text = ""
    for payload in payloads:
        lines = payload.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        text += "".join(f"data: {line}\n" for line in lines) + "\n"
    expected = [p.replace("\r\n", "\n").replace("\r", "\n") for p in payloads]
    assert [e.data for e in parse(text)] == expected
