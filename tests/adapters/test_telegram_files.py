"""Files through the Telegram adapter: the real python-telegram-bot stack and the
adapter's downloads against `FakeTelegram` (getFile and the file route), the real
dispatcher, store and thinnest backend against `FakeAgentServer`."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from adapters.telegram import TelegramAdapter
from bridge.app import Core, open_core
from bridge.config import TELEGRAM_API_URL, Config, TranscriptionConfig, parse_config
from bridge.config.fields import telegram_file_url
from bridge.logs import NOISY_LOGGERS
from tests.adapters.test_telegram import answered, make_config, running
from tests.fakes import documents
from tests.fakes.agents import FakeAgentServer, FakeResponse
from tests.fakes.openai_api import FAKE_OPENAI_KEY, FakeOpenAI, openai_config
from tests.fakes.telegram import ALICE, FakeTelegram, document, photo, voice_note
from tests.fakes.transcription import FakeTranscription


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as server:
        yield server


@pytest.fixture
async def agents() -> AsyncIterator[FakeAgentServer]:
    async with FakeAgentServer() as server:
        yield server


@pytest.fixture
async def bridge(
    tmp_path: Path, tg: FakeTelegram, agents: FakeAgentServer
) -> AsyncIterator[tuple[Core, TelegramAdapter]]:
    async with running(make_config(tmp_path, tg, agents)) as pair:
        yield pair


@pytest.mark.parametrize(
    ("api_url", "file_url"),
    [
        (TELEGRAM_API_URL, "https://api.telegram.org/file/bot"),
        ("http://127.0.0.1:8081/bot", "http://127.0.0.1:8081/file/bot"),
        ("https://tg.example.com/proxy/bot", "https://tg.example.com/proxy/file/bot"),
        ("https://tg.example.com/tg/", "https://tg.example.com/tg/file/bot"),
        ("https://tg.example.com", "https://tg.example.com/file/bot"),
        ("http://[::1]:8081/custombot", "http://[::1]:8081/custom/file/bot"),
    ],
)
def test_the_file_url_follows_every_bot_api_address(api_url: str, file_url: str) -> None:
    assert telegram_file_url(api_url) == file_url
    config = parse_config(
        {
            "agents": {"default": {"backend": "echo"}},
            "telegram": {"bot_token": "1:x", "allowed_users": [1], "api_url": api_url},
        },
        base_dir=Path("."),
    )
    assert config.telegram is not None
    assert config.telegram.effective_file_url == file_url


def test_file_url_may_be_set_apart_from_api_url() -> None:
    config = parse_config(
        {
            "agents": {"default": {"backend": "echo"}},
            "telegram": {
                "bot_token": "1:x",
                "allowed_users": [1],
                "api_url": "https://proxy.example.com/api/bot",
                "file_url": "https://files.example.com/file/bot",
            },
        },
        base_dir=Path("."),
    )
    assert config.telegram is not None
    assert config.telegram.effective_file_url == "https://files.example.com/file/bot"


async def test_the_bot_downloads_from_the_configured_address_with_the_token(
    tg: FakeTelegram, agents: FakeAgentServer, bridge: tuple[Core, TelegramAdapter]
) -> None:
    _core, adapter = bridge
    # PTB's own download helpers (File.download_*) would use this base too.
    assert adapter._bot.base_file_url == f"{tg.url}/file/bot{tg.token}"
    file_id = tg.add_file(b"notes: ship on Friday\n", path="documents/file_7.txt")
    update = document(ALICE, file_id, "notes.txt", mime_type="text/plain", size=22)
    reply = await answered(tg, update, ALICE.id)
    assert [c.params["file_id"] for c in tg.calls_of("getFile")] == [file_id]
    [download] = tg.downloads
    assert (download.token, download.path, download.whole) == (
        tg.token,
        "documents/file_7.txt",
        True,
    )
    sent = agents.chat_calls[-1].json["message"]
    assert sent == 'File "notes.txt":\n<<<\nnotes: ship on Friday\n>>>'
    assert reply["text"].startswith('echo: File "notes.txt"')


async def test_check_builds_its_bot_on_the_configured_file_address(
    tmp_path: Path, tg: FakeTelegram, agents: FakeAgentServer
) -> None:
    config = make_config(tmp_path, tg, agents)
    async with open_core(config) as core:
        assert config.telegram is not None
        adapter = TelegramAdapter(core.dispatcher, config.telegram)
        assert await adapter.check() == "@bridge_test_bot (id 123456789)"


async def test_documents_reach_the_agent_as_text_with_their_names(
    tg: FakeTelegram, agents: FakeAgentServer, bridge: tuple[Core, TelegramAdapter]
) -> None:
    files = [
        ("report.pdf", documents.pdf("Revenue grew 12% in Q3."), "Revenue grew 12% in Q3."),
        ("plan.docx", documents.docx("Ship on Friday.", heading="Plan"), "# Plan\n\nShip on"),
        ("budget.xlsx", documents.xlsx([["item", "cost"], ["rent", 1200]]), "| rent | 1200 |"),
        ("deck.pptx", documents.pptx(("Roadmap", "Q4: files")), "## Slide 1\n\nRoadmap"),
        ("page.html", b"<h1>Hi</h1><script>x()</script><p>there</p>", "# Hi\n\nthere"),
        ("data.csv", b"a,b\n1,2\n", "| a | b |\n| --- | --- |\n| 1 | 2 |"),
    ]
    for name, content, expected in files:
        file_id = tg.add_file(content, path=f"documents/{name}")
        update = document(ALICE, file_id, name, size=len(content), caption="summarize")
        reply = await answered(tg, update, ALICE.id)
        sent = agents.chat_calls[-1].json["message"]
        assert sent.startswith(f'File "{name}":\n<<<\n'), sent
        assert expected in sent
        assert sent.endswith(">>>\n\nsummarize")
        assert reply["text"].startswith("echo: ")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (documents.pdf(""), "has no text I can read"),
        (documents.pdf("top secret", password="pw"), "protected with a password"),
        (b"\x00\x01\x02binary", "I don't know that type of file"),
    ],
    ids=["scanned", "encrypted", "unknown"],
)
async def test_an_unreadable_file_gets_a_friendly_reply_and_the_caption_is_answered(
    tg: FakeTelegram,
    agents: FakeAgentServer,
    bridge: tuple[Core, TelegramAdapter],
    content: bytes,
    expected: str,
) -> None:
    file_id = tg.add_file(content, path="documents/x.bin")
    update = document(
        ALICE,
        file_id,
        "scan.pdf" if content[:4] == b"%PDF" else "x.bin",
        size=len(content),
        caption="what does it say?",
    )
    reply = await answered(tg, update, ALICE.id)
    assert expected in reply["text"]
    assert reply["text"].endswith("echo: what does it say?")
    assert agents.chat_calls[-1].json["message"] == "what does it say?"


async def test_an_unreadable_file_without_a_caption_gets_only_the_friendly_reply(
    tg: FakeTelegram, agents: FakeAgentServer, bridge: tuple[Core, TelegramAdapter]
) -> None:
    file_id = tg.add_file(documents.pdf(""), path="documents/scan.pdf")
    reply = await answered(tg, document(ALICE, file_id, "scan.pdf"), ALICE.id)
    assert "scan.pdf has no text I can read" in reply["text"]
    assert agents.chat_calls == []


async def test_a_file_declared_over_the_cap_is_refused_without_a_download(
    tmp_path: Path, tg: FakeTelegram, agents: FakeAgentServer
) -> None:
    config = make_config(tmp_path, tg, agents)
    config = config.model_copy(
        update={"files": config.files.model_copy(update={"max_bytes": 1000})}
    )
    async with running(config) as (core, _):
        file_id = tg.add_file(b"x" * 5000, path="documents/big.txt")
        reply = await answered(tg, document(ALICE, file_id, "big.txt", size=5000), ALICE.id)
        assert (
            reply["text"] == "Sorry, big.txt is too big for me (4.88 KB; the limit is 1000 bytes)."
        )
        assert tg.calls_of("getFile") == [] and tg.downloads == []
        labels = {"platform": "telegram", "kind": "document", "outcome": "too_large"}
        sample = core.metrics.registry.get_sample_value("agent_bridge_attachments_total", labels)
        assert sample == 1


async def test_a_download_stops_at_the_cap_when_the_size_was_not_declared(
    tmp_path: Path, tg: FakeTelegram, agents: FakeAgentServer
) -> None:
    config = make_config(tmp_path, tg, agents)
    cap = 64 * 1024
    files = config.files.model_copy(update={"max_bytes": cap})
    async with running(config.model_copy(update={"files": files})):
        # getFile (like the message) understates the size: only the stream tells.
        huge = 16 * 1024 * 1024
        file_id = tg.add_file(b"y" * huge, path="documents/huge.txt", size=1000)
        reply = await answered(tg, document(ALICE, file_id, "huge.txt", caption="hi"), ALICE.id)
        assert "huge.txt is too big for me (more than 64 KB" in reply["text"]
        assert reply["text"].endswith("echo: hi")
        [download] = tg.downloads
        assert not download.whole and download.sent < huge


async def test_telegrams_20_mb_refusal_is_a_friendly_reply(
    tmp_path: Path, tg: FakeTelegram, agents: FakeAgentServer
) -> None:
    config = make_config(tmp_path, tg, agents)
    big = 30 * 1024 * 1024
    files = config.files.model_copy(update={"max_bytes": 50 * 1024 * 1024})
    async with running(config.model_copy(update={"files": files})):
        file_id = tg.add_file(b"z", path="documents/big.zip", size=big)
        reply = await answered(tg, document(ALICE, file_id, "big.zip"), ALICE.id)
        assert reply["text"] == (
            "Sorry, big.zip is too big: Telegram lets bots download files up to 20 MB."
        )
        assert tg.downloads == []


async def test_a_long_document_is_cut_with_a_note(
    tmp_path: Path, tg: FakeTelegram, agents: FakeAgentServer
) -> None:
    config = make_config(tmp_path, tg, agents)
    files = config.files.model_copy(update={"max_chars": 100})
    async with running(config.model_copy(update={"files": files})):
        file_id = tg.add_file(b"word " * 1000, path="documents/long.txt")
        reply = await answered(tg, document(ALICE, file_id, "long.txt"), ALICE.id)
        sent = agents.chat_calls[-1].json["message"]
        body = sent.split("<<<\n", 1)[1].split("\n>>>", 1)[0]
        assert body.startswith("word word")
        assert body.endswith("[The file's text is cut here: it is longer than 100 characters.]")
        assert len(body.split("\n")[0]) <= 100
        # Markdown italics: an entity on Telegram.
        assert reply["text"].startswith(
            "(Only the first 100 characters of long.txt reached the agent.)\n\necho: "
        )


async def test_a_photo_to_a_text_only_agent_sends_the_caption_with_a_note(
    tg: FakeTelegram, agents: FakeAgentServer, bridge: tuple[Core, TelegramAdapter]
) -> None:
    file_id = tg.add_file(b"\xff\xd8\xff jpeg", path="photos/file_1.jpg")
    reply = await answered(tg, photo(ALICE, file_id, size=9, caption="what is this?"), ALICE.id)
    assert agents.chat_calls[-1].json["message"] == "what is this?"
    assert reply["text"] == (
        "(This agent reads text only: it got your caption, not the image.)\n\necho: what is this?"
    )
    assert tg.downloads == []  # nothing the agent could use was fetched


async def test_a_voice_note_without_transcription_gets_a_friendly_reply(
    tg: FakeTelegram, agents: FakeAgentServer, bridge: tuple[Core, TelegramAdapter]
) -> None:
    file_id = tg.add_file(documents.OGG, path="voice/file_3.oga")
    reply = await answered(tg, voice_note(ALICE, file_id, size=len(documents.OGG)), ALICE.id)
    assert "voice is not set up" in reply["text"]
    assert agents.chat_calls == []


async def test_per_user_file_limits_give_friendly_texts(
    tmp_path: Path, tg: FakeTelegram, agents: FakeAgentServer
) -> None:
    config = make_config(tmp_path, tg, agents)
    files = config.files.model_copy(update={"max_per_minute": 2, "max_bytes_per_day": 100})
    async with running(config.model_copy(update={"files": files})):
        for n in (1, 2):
            file_id = tg.add_file(b"a" * 40, path=f"documents/{n}.txt")
            reply = await answered(tg, document(ALICE, file_id, f"{n}.txt", size=40), ALICE.id)
            assert reply["text"].startswith("echo: ")
        file_id = tg.add_file(b"a", path="documents/3.txt")
        reply = await answered(tg, document(ALICE, file_id, "3.txt", size=1), ALICE.id)
        assert "faster than I can take them (at most 2 a minute): I skipped 3.txt" in reply["text"]


async def test_file_contents_never_reach_the_log(
    tg: FakeTelegram,
    agents: FakeAgentServer,
    bridge: tuple[Core, TelegramAdapter],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The bridge's own loggers at DEBUG, the libraries' as the daemon sets them.
    # (The last set_level also sets the capturing handler's level.)
    for name in NOISY_LOGGERS:
        caplog.set_level(logging.WARNING, logger=name)
    for name in ("bridge", "adapters", "storage"):
        caplog.set_level(logging.DEBUG, logger=name)
    secret = "the launch code is 0000"
    agents.script(FakeResponse(json={"response": "done", "session_id": "s1"}))
    file_id = tg.add_file(documents.pdf(secret), path="documents/secret.pdf")
    update = document(ALICE, file_id, "secret.pdf", size=1234, caption="read it")
    reply = await answered(tg, update, ALICE.id)
    assert secret in agents.chat_calls[-1].json["message"]
    assert reply["text"] == "done"
    core, _ = bridge
    read = {"platform": "telegram", "kind": "document", "outcome": "read"}
    assert core.metrics.registry.get_sample_value("agent_bridge_attachments_total", read) == 1
    downloaded = core.metrics.registry.get_sample_value(
        "agent_bridge_attachment_bytes_total", {"platform": "telegram"}
    )
    assert downloaded == len(documents.pdf(secret))
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "'read it' + <" in logged  # the backend's DEBUG line of what it sends
    assert "secret.pdf" in logged  # the name, at DEBUG
    assert all(r.levelno == logging.DEBUG for r in caplog.records if "secret.pdf" in r.getMessage())
    assert secret not in logged


@pytest.fixture
async def stt() -> AsyncIterator[FakeTranscription]:
    async with FakeTranscription() as server:
        yield server


def with_voice(config: Config, stt: FakeTranscription, *, key: str | None = None) -> Config:
    voice = TranscriptionConfig(base_url=stt.base_url, api_key=SecretStr(key or stt.api_key))
    return config.model_copy(update={"transcription": voice})


async def test_a_voice_note_reaches_the_agent_as_its_transcript_and_the_user_sees_it(
    tmp_path: Path, tg: FakeTelegram, agents: FakeAgentServer, stt: FakeTranscription
) -> None:
    stt.text = "what's the weather in Lisbon?"
    async with running(with_voice(make_config(tmp_path, tg, agents), stt)):
        file_id = tg.add_file(documents.OGG, path="voice/file_3.oga")
        update = voice_note(ALICE, file_id, size=len(documents.OGG))
        reply = await answered(tg, update, ALICE.id)
    [call] = stt.calls
    # Telegram's .oga is uploaded as .ogg, which every such endpoint accepts.
    assert (call.filename, call.content_type, call.model) == ("voice.ogg", "audio/ogg", "whisper-1")
    assert call.content == documents.OGG
    assert agents.chat_calls[-1].json["message"] == "what's the weather in Lisbon?"
    # "> 🎤 {text}" is a Markdown quote: a blockquote entity on Telegram.
    assert (
        reply["text"] == "🎤 what's the weather in Lisbon?\n\necho: what's the weather in Lisbon?"
    )
    assert any(e["type"] == "blockquote" for e in reply["entities"])


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (401, "not authorized to use its transcription service"),
        (413, "too long for me to listen to"),
        (429, "too many recordings at once"),
        (503, "can't listen to recordings right now"),
    ],
)
async def test_transcription_errors_get_friendly_texts(
    tmp_path: Path,
    tg: FakeTelegram,
    agents: FakeAgentServer,
    stt: FakeTranscription,
    status: int,
    expected: str,
) -> None:
    config = with_voice(make_config(tmp_path, tg, agents), stt)
    if status == 401:
        config = with_voice(config, stt, key="sk-wrong")
    else:
        stt.fail_next(status)
    async with running(config):
        file_id = tg.add_file(documents.OGG, path="voice/file_4.oga")
        reply = await answered(tg, voice_note(ALICE, file_id, size=len(documents.OGG)), ALICE.id)
    assert expected in reply["text"]
    assert agents.chat_calls == []


@pytest.mark.parametrize("api", ["responses", "chat"])
async def test_a_photo_reaches_an_openai_agent_as_an_image_part_with_the_caption(
    tmp_path: Path, tg: FakeTelegram, agents: FakeAgentServer, api: str
) -> None:
    jpeg = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4
    async with FakeOpenAI(api_key=FAKE_OPENAI_KEY) as openai:
        config = make_config(tmp_path, tg, agents)
        vision = openai_config(openai.url, api=api)
        config = config.model_copy(update={"agents": {**config.agents, "default": vision}})
        async with running(config):
            file_id = tg.add_file(jpeg, path="photos/file_5.jpg")
            update = photo(ALICE, file_id, size=len(jpeg), caption="what is this?")
            reply = await answered(tg, update, ALICE.id)
    assert openai.images == [("image/jpeg", jpeg)]
    assert reply["text"] == "echo: what is this?"
    # The largest of Telegram's sizes was fetched, once.
    assert [c.params["file_id"] for c in tg.calls_of("getFile")] == [file_id]


async def test_a_silent_recording_says_nothing_was_heard(
    tmp_path: Path, tg: FakeTelegram, agents: FakeAgentServer, stt: FakeTranscription
) -> None:
    stt.text = "  "
    async with running(with_voice(make_config(tmp_path, tg, agents), stt)):
        file_id = tg.add_file(documents.OGG, path="voice/file_6.oga")
        reply = await answered(tg, voice_note(ALICE, file_id, size=len(documents.OGG)), ALICE.id)
    assert reply["text"] == "I couldn't hear any words in that recording."
    assert agents.chat_calls == []
