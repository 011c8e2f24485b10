"""`bridge.files`, `bridge.documents`, `bridge.attachments`: the download to a private
temp file, the limits, the readers (real files made by the libraries that write
them), and property tests of the parsers written here (HTML text, Markdown tables)."""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from collections.abc import AsyncGenerator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.attachments import AgentText, Attachment, AttachmentKind, attachments_of
from bridge.chat import ChatAdapter
from bridge.config import FilesConfig
from bridge.documents import Unreadable, html_to_text, kind_of, markdown_table, to_text
from bridge.errors import AttachmentError
from bridge.file_limits import FileLimits, MemoryFileUses
from bridge.files import FileReader, Prepared, downloaded, human_size
from bridge.metrics import Metrics
from bridge.model import ConversationKey, InboxMessage, MessageStatus, Reply
from tests.fakes import documents


async def chunks(*parts: bytes, seen: list[str] | None = None) -> AsyncGenerator[bytes, None]:
    try:
        for part in parts:
            yield part
    finally:
        if seen is not None:
            seen.append("closed")


async def test_a_download_goes_to_a_private_file_that_is_deleted_after_use() -> None:
    async with downloaded(chunks(b"abc", b"def"), 100, name="a.txt", suffix=".txt") as (path, n):
        assert n == 6 and path.read_bytes() == b"abcdef"
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600  # no one else may read it
        assert path.suffix == ".txt"
    assert not path.exists()


async def test_a_download_over_the_cap_stops_reading_and_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    seen: list[str] = []
    made: list[Path] = []

    async def endless() -> AsyncGenerator[bytes, None]:
        try:
            while True:
                yield b"x" * 1000
        finally:
            seen.append("closed")

    with pytest.raises(AttachmentError) as caught:
        async with downloaded(endless(), 2500, name="big.bin") as (path, _):
            made.append(path)
    assert caught.value.kind == "too_large"
    assert caught.value.user_message == (
        "Sorry, big.bin is too big for me (more than 2.44 KB; the limit is 2.44 KB)."
    )
    assert seen == ["closed"] and made == []
    assert os.listdir(tmp_path) == []


async def test_limits_count_files_a_minute_and_bytes_a_day_per_user() -> None:
    clock = [datetime(2026, 12, 3, 10, 0, 0, tzinfo=UTC)]
    uses = Clocked(clock)
    limits = FileLimits(
        FilesConfig(max_per_minute=2, max_bytes_per_day=100), uses, now=lambda: clock[0]
    )
    assert await limits.admit("alice", 10) is None
    assert await limits.admit("alice", None) is None
    assert await limits.admit("alice", 1) == "per_minute"
    assert await limits.admit("bob", 1) is None  # per user
    clock[0] += timedelta(seconds=61)
    assert await limits.admit("alice", 95) == "per_day"  # 10 + 95 > 100, not counted
    await limits.downloaded("alice", None, 80)  # the undeclared one weighed 80
    assert await limits.admit("alice", 20) == "per_day"
    assert await limits.admit("alice", 10) is None
    clock[0] += timedelta(days=1)  # a new UTC day
    assert await limits.admit("alice", 100) is None
    off = FileLimits(FilesConfig(max_per_minute=0, max_bytes_per_day=0))
    assert [await off.admit("x", 10**12) for _ in range(5)] == [None] * 5


class Clocked(MemoryFileUses):
    """`MemoryFileUses` on the test's clock."""

    def __init__(self, clock: list[datetime]) -> None:
        super().__init__()
        self.clock = clock

    async def record_file_use(self, user: str, *, files: int, size: int) -> None:
        self._uses[user].append((self.clock[0], files, size))


def test_attachments_round_trip_through_meta_and_junk_is_skipped() -> None:
    doc = Attachment(AttachmentKind.DOCUMENT, "a.pdf", "application/pdf", 12, "F1")
    meta = {"attachments": [doc.to_meta(), {"kind": "hologram"}, "junk", {"kind": "voice"}]}
    found = attachments_of(meta)
    assert found[0] == doc
    assert found[1] == Attachment(AttachmentKind.VOICE, "file", None, None, "")
    assert len(found) == 2
    assert attachments_of({}) == [] and attachments_of({"attachments": "x"}) == []


def test_the_agents_text_delimits_documents_and_its_repr_hides_them() -> None:
    prepared = Prepared(documents=[("a.txt", "SECRET CONTENT")], transcripts=["heard words"])
    text = prepared.agent_text("my question")
    assert text == 'File "a.txt":\n<<<\nSECRET CONTENT\n>>>\n\nmy question\n\nheard words'
    assert isinstance(text, AgentText)
    assert "SECRET" not in repr(text) and "heard" not in repr(text)
    assert repr(text).startswith("'my question' + <")
    assert "SECRET" not in f"{text!r}" and "SECRET" in f"{text}"


def test_human_sizes() -> None:
    assert [human_size(n) for n in (10, 2048, 10 * 1024 * 1024)] == ["10 bytes", "2 KB", "10 MB"]


@pytest.mark.parametrize(
    ("name", "mime", "kind"),
    [
        ("a.PDF", None, "pdf"),
        ("notes", "text/plain", "txt"),
        ("main.rs", None, "txt"),
        ("Dockerfile", None, "txt"),
        ("x", "application/vnd.openxmlformats-officedocument.wordprocessingml.document", "docx"),
        ("data.json", "application/octet-stream", "json"),
        ("blob.bin", "application/octet-stream", ""),
    ],
)
def test_the_format_comes_from_the_name_then_the_mime_type(
    name: str, mime: str | None, kind: str
) -> None:
    assert kind_of(name, mime) == kind


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_readers_of_each_format(tmp_path: Path) -> None:
    table = [["name", "role"], ["Ada", "eng | lead"]]
    docx = to_text(
        write(tmp_path, "a.docx", documents.docx("Body.", heading="Top", table=table)),
        "a.docx",
        None,
    )
    assert docx == "# Top\n\nBody.\n\n| name | role |\n| --- | --- |\n| Ada | eng \\| lead |"
    assert to_text(write(tmp_path, "j.json", b'{"a":[1,2]}'), "j.json", None) == (
        '{\n  "a": [\n    1,\n    2\n  ]\n}'
    )
    assert to_text(write(tmp_path, "c.txt", "caf\xe9".encode("cp1252")), "c.txt", None) == "café"
    assert to_text(write(tmp_path, "t.tsv", b"a\tb\n1\t2\n"), "t.tsv", None).endswith("| 1 | 2 |")
    pages = to_text(write(tmp_path, "p.pdf", documents.pdf("one", "", "three")), "p.pdf", None)
    assert pages == "## Page 1\n\none\n\n## Page 3\n\nthree"
    unknown = write(tmp_path, "blob", b"plain words, no type")
    assert to_text(unknown, "blob", "application/octet-stream") == "plain words, no type"


@pytest.mark.parametrize(
    ("data", "name", "kind"),
    [
        (documents.pdf("x", password="pw"), "a.pdf", "encrypted"),
        (documents.pdf(""), "a.pdf", "no_text"),
        (b"%PDF-1.4 garbage", "a.pdf", "damaged"),
        (b"PK\x03\x04 not a zip", "a.docx", "damaged"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "a.bin", "unsupported"),
    ],
)
def test_unreadable_files_say_why(tmp_path: Path, data: bytes, name: str, kind: str) -> None:
    with pytest.raises(Unreadable) as caught:
        to_text(write(tmp_path, name, data), name, None)
    assert caught.value.kind == kind


def test_without_the_files_extra_a_pdf_is_unreadable_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pypdf", None)  # what `import pypdf` sees uninstalled
    with pytest.raises(Unreadable) as caught:
        to_text(write(tmp_path, "a.pdf", documents.pdf("x")), "a.pdf", None)
    assert caught.value.kind == "no_extra"
    assert "agent-bridge[files]" in str(caught.value)


def test_html_drops_scripts_and_styles_and_keeps_structure() -> None:
    html = (
        "<html><head><title>T</title><style>p{}</style></head><body><h2>Plan</h2>"
        "<script>alert(1)</script><ul><li>one</li><li>two &amp; three</li></ul></body></html>"
    )
    assert html_to_text(html) == "## Plan\n\n- one\n- two & three"


# --- properties of the parsers written here -------------------------------------------

words = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)


@given(st.lists(st.lists(words, max_size=5), max_size=8))
def test_a_markdown_table_has_one_row_per_nonempty_row_and_equal_columns(
    rows: list[list[str]],
) -> None:
    table = markdown_table(rows)
    kept = [r for r in rows if any(" ".join(c.split()) for c in r)]
    if not kept:
        assert table == ""
        return
    lines = table.split("\n")
    assert len(lines) == len(kept) + 1  # the header's separator
    # Escaped pipes aside, every line has the same number of cells.
    counts = {line.replace("\\\\", "").replace("\\|", "").count("|") for line in lines}
    assert len(counts) == 1


@given(st.text(max_size=300))
def test_html_to_text_never_fails_and_drops_script_bodies(text: str) -> None:
    html = f"<p>{text}</p><script>SCRIPT_BODY_{len(text)}</script>"
    out = html_to_text(html)
    assert f"SCRIPT_BODY_{len(text)}" not in out
    assert "\n\n\n" not in out


@given(st.text(alphabet=st.characters(blacklist_characters="<>&"), max_size=200))
def test_html_to_text_keeps_plain_words(text: str) -> None:
    assert html_to_text(f"<div>{text}</div>").split() == text.split()


def test_a_file_sent_in_reply_keeps_the_message_replied_to_as_context() -> None:
    prepared = Prepared(documents=[("a.txt", "BODY")])
    text = prepared.agent_text("", "Bob: can you check the budget?")
    assert text == (
        'File "a.txt":\n<<<\nBODY\n>>>\n\n'
        "Earlier messages, for context:\n<<<\nBob: can you check the budget?\n>>>"
    )
    assert "BODY" not in repr(text) and "Bob: can you check" in repr(text)


class _Adapter(ChatAdapter):
    """Serves ``files`` by file id; raises ``broken`` for any other."""

    platform = "test"

    def __init__(self, files: dict[str, bytes], broken: Exception | None = None) -> None:
        super().__init__(dispatcher=None)  # type: ignore[arg-type]
        self.files = files
        self.broken = broken

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def send_reply(self, message: InboxMessage, reply: Reply) -> None: ...

    async def attachment_chunks(
        self, message: InboxMessage, attachment: Attachment
    ) -> AsyncGenerator[bytes, None]:
        if attachment.file_id not in self.files:
            assert self.broken is not None
            raise self.broken
        yield self.files[attachment.file_id]


def inbox(*attachments: Attachment, text: str = "") -> InboxMessage:
    return InboxMessage(
        id=1,
        conversation_id=1,
        key=ConversationKey("test", "s", "c"),
        event_id="e",
        sender="u1",
        text=text,
        agent="default",
        status=MessageStatus.RUNNING,
        meta={"attachments": [a.to_meta() for a in attachments]},
    )


async def test_a_failure_reading_one_attachment_leaves_the_others_and_the_text() -> None:
    good = Attachment(AttachmentKind.DOCUMENT, "ok.txt", "text/plain", 5, "F1")
    bad = Attachment(AttachmentKind.DOCUMENT, "bad.txt", "text/plain", 5, "F2")
    metrics = Metrics()
    reader = FileReader(FilesConfig(), metrics=metrics)
    adapter = _Adapter({"F1": b"hello"}, broken=RuntimeError("SECRET detail"))
    prepared = await reader.prepare(adapter, inbox(bad, good, text="hi"), takes_images=False)
    assert prepared is not None
    assert prepared.documents == [("ok.txt", "hello")]
    assert prepared.notes == ["Sorry, something went wrong on my side while reading bad.txt."]
    sample = metrics.registry.get_sample_value(
        "agent_bridge_attachments_total",
        {"platform": "test", "kind": "document", "outcome": "internal"},
    )
    assert sample == 1
    assert await reader.prepare(adapter, inbox(), takes_images=False) is None
