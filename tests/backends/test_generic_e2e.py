"""``backend = "http"`` end to end: ``agent-bridge chat`` and ``agent-bridge run``
(Telegram) as real subprocesses, through the dispatcher and the store, against
the fake platforms in this process."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from bridge.backends.generic import split_session
from tests.backends.http_support import fake_fixture  # noqa: F401 - a fixture
from tests.daemon.conftest import BridgeProcess, subprocess_env
from tests.fakes.agent_platforms import SECRETS, FakePlatforms, Platform, http_config_toml
from tests.fakes.telegram import ALICE, BOB, FakeTelegram, private_text
from tests.test_cli import run_cli, write_config

# --- agent-bridge chat ----------------------------------------------------------------------


@pytest.mark.parametrize("platform", ["dify", "n8n", "flowise", "langflow"])
async def test_chat_keeps_one_memory_per_thread_and_reset_starts_another(
    tmp_path: Path, fake: FakePlatforms, platform: Platform
) -> None:
    config = write_config(tmp_path, http_config_toml(platform, fake))

    code, out, err = await run_cli(
        "chat", "--config", str(config), stdin="one\ntwo\n/reset\nthree\n", cwd=tmp_path
    )

    assert code == 0, err
    for word in ("one", "two", "three"):
        assert f"default> echo: {word}" in out
    first, second = fake.memory[platform].values()
    assert first == ["one", "two"] and second == ["three"]
    assert not any(secret in out + err for secret in SECRETS)


async def test_chat_dify_gone_conversation_starts_over_once(
    tmp_path: Path, fake: FakePlatforms
) -> None:
    fake.expire("conv-1")  # the first conversation is gone by the second turn
    config = write_config(tmp_path, http_config_toml("dify", fake))

    code, out, err = await run_cli(
        "chat", "--config", str(config), stdin="one\ntwo\nthree\n", cwd=tmp_path
    )

    assert code == 0, err
    assert "this one started over" in out
    assert out.count("started over") == 1
    sent = [(c.json["query"], c.json["conversation_id"]) for c in fake.chat_calls("dify")]
    # two: refused on conv-1, retried once with a fresh conversation; three: on conv-2.
    assert sent == [("one", ""), ("two", "conv-1"), ("two", ""), ("three", "conv-2")]
    assert fake.memory["dify"] == {"conv-1": ["one"], "conv-2": ["two", "three"]}
    # The fresh conversation has its own user (a conversation belongs to its user).
    users = [c.json["user"] for c in fake.chat_calls("dify")]
    assert users[0] == users[1] != users[2] == users[3]


async def test_chat_shows_the_friendly_text_of_a_mapped_error(
    tmp_path: Path, fake: FakePlatforms
) -> None:
    fake.dify_quota = "stream"
    config = write_config(tmp_path, http_config_toml("dify", fake))

    code, out, err = await run_cli("chat", "--config", str(config), stdin="hi\n", cwd=tmp_path)

    assert code == 0, err
    assert "out of credit" in out
    assert "Traceback" not in out + err


# --- agent-bridge run (Telegram) ------------------------------------------------------------


def run_config(tmp_path: Path, tg: FakeTelegram, agent_section: str) -> Path:
    path = tmp_path / "agent-bridge.toml"
    path.write_text(
        "[storage]\n"
        f'url = "sqlite+aiosqlite:///{tmp_path}/bridge.db"\n\n'
        f"{agent_section}\n"
        "[telegram]\n"
        f'bot_token = "{tg.token}"\n'
        f'api_url = "{tg.api_url}"\n'
        f"allowed_users = [{ALICE.id}, {BOB.id}]\n",
        encoding="utf-8",
    )
    return path


def bridge_env() -> dict[str, str]:
    return subprocess_env()


@pytest.mark.parametrize("platform", ["dify", "n8n"])
async def test_run_two_chats_never_share_memory(
    tmp_path: Path, fake: FakePlatforms, platform: Platform
) -> None:
    async with FakeTelegram() as tg:
        bridge = BridgeProcess(
            run_config(tmp_path, tg, http_config_toml(platform, fake)), bridge_env()
        )
        try:
            await bridge.start()
            try:
                await tg.wait_calls("getUpdates", within=30)
            except TimeoutError:
                raise AssertionError(bridge.stderr) from None
            tg.push(private_text(ALICE, "alice one"))
            tg.push(private_text(BOB, "bob one"))
            await tg.wait_sent(ALICE.id, within=15)
            await tg.wait_sent(BOB.id, within=15)
            tg.push(private_text(ALICE, "alice two"))
            replies = await tg.wait_sent(ALICE.id, count=2, within=15)
            bridge.signal(signal.SIGTERM)
            assert await bridge.wait() == 0, bridge.stderr
        finally:
            await bridge.kill()
        assert [r.params["text"] for r in replies] == ["echo: alice one", "echo: alice two"]
        assert tg.sent(BOB.id)[0].params["text"] == "echo: bob one"
        memories = sorted(fake.memory[platform].values())
        assert memories == [["alice one", "alice two"], ["bob one"]]
        if platform == "dify":
            users = {c.json["user"] for c in fake.chat_calls("dify")}
            assert len(users) == 2  # one per chat, never per message
        assert not any(secret in bridge.stderr for secret in SECRETS)


async def test_run_dify_stores_the_servers_conversation(
    tmp_path: Path, fake: FakePlatforms
) -> None:
    async with FakeTelegram() as tg:
        config = run_config(tmp_path, tg, http_config_toml("dify", fake))
        bridge = BridgeProcess(config, bridge_env())
        try:
            await bridge.start()
            await tg.wait_calls("getUpdates", within=30)
            tg.push(private_text(ALICE, "remember me"))
            await tg.wait_sent(ALICE.id, within=15)
            bridge.signal(signal.SIGTERM)
            assert await bridge.wait() == 0, bridge.stderr
        finally:
            await bridge.kill()
    code, out, err = await run_cli("sessions", "list", "--config", str(config), cwd=tmp_path)
    assert code == 0, err
    [stored] = [word for word in out.split() if word.startswith("t") and ":conv-1" in word]
    assert split_session(stored)[1] == "conv-1"


async def test_run_sends_who_asks_where_the_body_asks_for_it(
    tmp_path: Path, fake: FakePlatforms
) -> None:
    # n8n's preset body, plus the speaker: the dispatcher passes the sender and the
    # Telegram username on to the backend as the turn's context.
    section = http_config_toml("n8n", fake) + 'body = { speaker = "{user_id}/{user_name}" }\n'
    async with FakeTelegram() as tg:
        bridge = BridgeProcess(run_config(tmp_path, tg, section), bridge_env())
        try:
            await bridge.start()
            await tg.wait_calls("getUpdates", within=30)
            tg.push(private_text(ALICE, "who am I?"))
            await tg.wait_sent(ALICE.id, within=15)
            bridge.signal(signal.SIGTERM)
            assert await bridge.wait() == 0, bridge.stderr
        finally:
            await bridge.kill()
    [call] = fake.chat_calls("n8n")
    assert call.json["speaker"] == f"{ALICE.id}/{ALICE.username}"
    assert call.json["chatInput"] == "who am I?"  # the preset's keys are still there
