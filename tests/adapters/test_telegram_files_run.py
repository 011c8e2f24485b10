"""Files through `agent-bridge run` (the daemon as a subprocess, ``python -m bridge run``)
against `FakeTelegram`, `FakeAgentServer` and `FakeTranscription` in this process: what a
user sees, and what the DEBUG log never shows."""

from __future__ import annotations

import signal
from pathlib import Path

from tests.daemon.conftest import BridgeProcess, subprocess_env
from tests.fakes import documents
from tests.fakes.agents import FakeAgentServer, FakeResponse, thinnest_config_toml
from tests.fakes.openai_api import FakeOpenAI, openai_config_toml
from tests.fakes.telegram import ALICE, BOB, FakeTelegram, document, photo, voice_note
from tests.fakes.transcription import FakeTranscription


def write_config(
    tmp_path: Path,
    tg: FakeTelegram,
    agents: FakeAgentServer,
    stt: FakeTranscription | None = None,
    *,
    log_level: str = "info",
) -> Path:
    voice = (
        f'[transcription]\nbase_url = "{stt.base_url}"\napi_key = "{stt.api_key}"\n\n'
        if stt is not None
        else ""
    )
    path = tmp_path / "agent-bridge.toml"
    path.write_text(
        "[storage]\n"
        f'url = "sqlite+aiosqlite:///{tmp_path}/bridge.db"\n\n'
        f"{thinnest_config_toml(agents.url)}\n"
        "[telegram]\n"
        f'bot_token = "{tg.token}"\n'
        f'api_url = "{tg.api_url}"\n'
        f"allowed_users = [{ALICE.id}]\n\n"
        f"{voice}"
        "[daemon]\n"
        f'log_level = "{log_level}"\n',
        encoding="utf-8",
    )
    return path


async def started(bridge: BridgeProcess, tg: FakeTelegram, polls: int = 1) -> None:
    await bridge.start()
    try:
        await tg.wait_calls("getUpdates", count=polls, within=30)
    except TimeoutError:
        raise AssertionError(bridge.stderr) from None


async def test_documents_and_a_voice_note_reach_the_agent_and_never_the_log(
    tmp_path: Path,
) -> None:
    secret_pdf = "Board minutes: the merger closes in March."
    secret_docx = "Salary bands for 2027 are attached."
    async with FakeTelegram() as tg, FakeAgentServer() as agents, FakeTranscription() as stt:
        stt.text = "remind me what the minutes say"
        # Not the echo: the agent's own answer is logged at DEBUG, and an echo would quote.
        agents.script(*(FakeResponse(json={"response": f"answer {n}"}) for n in (1, 2, 3)))
        bridge = BridgeProcess(
            write_config(tmp_path, tg, agents, stt, log_level="debug"), subprocess_env()
        )
        try:
            await started(bridge, tg)
            pdf = documents.pdf(secret_pdf)
            tg.push(
                document(
                    ALICE,
                    tg.add_file(pdf, path="documents/file_1.pdf"),
                    "minutes.pdf",
                    size=len(pdf),
                    caption="summarize",
                )
            )
            [first] = await tg.wait_sent(ALICE.id, within=20)
            docx = documents.docx(secret_docx, heading="HR")
            tg.push(
                document(
                    ALICE,
                    tg.add_file(docx, path="documents/file_2.docx"),
                    "bands.docx",
                    size=len(docx),
                )
            )
            await tg.wait_sent(ALICE.id, count=2, within=20)
            ogg = tg.add_file(documents.OGG, path="voice/file_3.oga")
            tg.push(voice_note(ALICE, ogg, size=len(documents.OGG)))
            sent = await tg.wait_sent(ALICE.id, count=3, within=20)
            bridge.signal(signal.SIGTERM)
            assert await bridge.wait() == 0, bridge.stderr
        finally:
            await bridge.kill()
    messages = [c.json["message"] for c in agents.chat_calls]
    assert messages[0] == f'File "minutes.pdf":\n<<<\n## Page 1\n\n{secret_pdf}\n>>>\n\nsummarize'
    assert messages[1] == f'File "bands.docx":\n<<<\n# HR\n\n{secret_docx}\n>>>'
    assert messages[2] == "remind me what the minutes say"
    assert first.params["text"] == "answer 1"
    assert sent[2].params["text"] == "🎤 remind me what the minutes say\n\nanswer 3"
    assert [c.filename for c in stt.calls] == ["voice.ogg"]
    log = bridge.stderr
    assert "minutes.pdf" in log and "DEBUG" in log  # names and sizes at DEBUG
    for secret in (secret_pdf, secret_docx, "Board minutes", "Salary bands", "remind me"):
        assert secret not in log, secret
    assert tg.token not in log and stt.api_key not in log


async def test_killed_during_a_download_then_restarted_answers_once(tmp_path: Path) -> None:
    async with FakeTelegram() as tg, FakeAgentServer() as agents:
        config = write_config(tmp_path, tg, agents)
        first = BridgeProcess(config, subprocess_env())
        second = BridgeProcess(config, subprocess_env())
        try:
            await started(first, tg)
            tg.hold_downloads()
            pdf = documents.pdf("Quarterly numbers: up 12%.")
            file_id = tg.add_file(pdf, path="documents/file_9.pdf")
            pushed = tg.push(document(ALICE, file_id, "q3.pdf", size=len(pdf), caption="and?"))
            await tg.wait_for(
                lambda: len(tg.downloads) == 1 and tg.downloads[0].sent > 0, within=20
            )
            # Accepted and confirmed to Telegram: from now on only the store has it.
            await tg.wait_confirmed(pushed["update_id"], within=15)
            first.signal(signal.SIGKILL)
            assert await first.wait() == -signal.SIGKILL
            assert tg.sent() == [] and agents.chat_calls == []

            tg.release_downloads()
            await started(second, tg, polls=len(tg.calls_of("getUpdates")) + 1)
            [reply] = await tg.wait_sent(ALICE.id, within=20)
            second.signal(signal.SIGTERM)
            assert await second.wait() == 0, second.stderr
        finally:
            tg.release_downloads()
            await first.kill()
            await second.kill()
        # The turn ran again from the store: downloaded twice, asked and answered once.
        assert len(tg.downloads) == 2 and tg.downloads[1].whole
        assert [c.json["message"] for c in agents.chat_calls] == [
            'File "q3.pdf":\n<<<\n## Page 1\n\nQuarterly numbers: up 12%.\n>>>\n\nand?'
        ]
        assert reply.params["text"].startswith('echo: File "q3.pdf"')
        assert len(tg.sent(ALICE.id)) == 1


async def test_a_photo_reaches_an_openai_agent_as_an_image_and_thinnest_as_its_caption(
    tmp_path: Path,
) -> None:
    jpeg = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8
    async with FakeTelegram() as tg, FakeAgentServer() as agents, FakeOpenAI() as openai:
        path = tmp_path / "agent-bridge.toml"
        path.write_text(
            "[storage]\n"
            f'url = "sqlite+aiosqlite:///{tmp_path}/bridge.db"\n\n'
            f"{thinnest_config_toml(agents.url)}\n"
            f"{openai_config_toml(openai.url, 'vision', api_key='sk-none')}\n"
            "[telegram]\n"
            f'bot_token = "{tg.token}"\n'
            f'api_url = "{tg.api_url}"\n'
            f"allowed_users = [{ALICE.id}, {BOB.id}]\n"
            f'chat_agents = {{ "{ALICE.id}" = "vision" }}\n',
            encoding="utf-8",
        )
        bridge = BridgeProcess(path, subprocess_env())
        try:
            await started(bridge, tg)
            tg.push(
                photo(
                    ALICE,
                    tg.add_file(jpeg, path="photos/a.jpg"),
                    size=len(jpeg),
                    caption="what is in it?",
                )
            )
            [to_alice] = await tg.wait_sent(ALICE.id, within=20)
            tg.push(
                photo(
                    BOB, tg.add_file(jpeg, path="photos/b.jpg"), size=len(jpeg), caption="and here?"
                )
            )
            [to_bob] = await tg.wait_sent(BOB.id, within=20)
            bridge.signal(signal.SIGTERM)
            assert await bridge.wait() == 0, bridge.stderr
        finally:
            await bridge.kill()
    assert openai.images == [("image/jpeg", jpeg)]
    assert to_alice.params["text"] == "echo: what is in it?"
    assert [c.json["message"] for c in agents.chat_calls] == ["and here?"]
    assert to_bob.params["text"] == (
        "(This agent reads text only: it got your caption, not the image.)\n\necho: and here?"
    )
    assert [d.path for d in tg.downloads] == ["photos/a.jpg"]  # Bob's was never fetched
