"""``backend = "openai"`` end to end: `agent-bridge chat` (the console, a real
subprocess on pipes) in each memory mode, and `agent-bridge run` against the fake
Telegram, both talking to `FakeOpenAI`. The second message of a thread reaches
the same memory; ``/reset`` starts afresh (in chat mode: an empty history)."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import pytest

from tests.daemon.conftest import BridgeProcess, subprocess_env
from tests.fakes.openai_api import (
    FAKE_OPENAI_KEY,
    INSUFFICIENT_QUOTA,
    FakeOpenAI,
    openai_config_toml,
)
from tests.fakes.telegram import ALICE, BOB, FakeTelegram, User, private_text

MODES = {
    "conversation": {"api": "responses", "memory": "conversation"},
    "previous_response_id": {"api": "responses", "memory": "previous_response_id"},
    "chat": {"api": "chat"},
}


def bridge_env() -> dict[str, str]:
    env = subprocess_env(OPENAI_API_KEY=FAKE_OPENAI_KEY)
    return {k: v for k, v in env.items() if not k.startswith("AGENT_BRIDGE")}


def write_config(tmp_path: Path, agent: str, telegram: FakeTelegram | None = None) -> Path:
    path = tmp_path / "agent-bridge.toml"
    text = f'[storage]\nurl = "sqlite+aiosqlite:///{tmp_path}/bridge.db"\n\n{agent}'
    # The key comes from the environment, as a user's config has it.
    text += 'api_key = "${OPENAI_API_KEY}"\n'
    if telegram is not None:
        text += (
            "\n[telegram]\n"
            f'bot_token = "{telegram.token}"\n'
            f'api_url = "{telegram.api_url}"\n'
            f"allowed_users = [{ALICE.id}, {BOB.id}]\n"
        )
    path.write_text(text, encoding="utf-8")
    return path


async def agent_bridge_chat(config: Path, stdin: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        "chat",
        "--config",
        str(config),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=config.parent,
        env=bridge_env(),
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.parametrize("mode", list(MODES))
async def test_chat_console_keeps_the_memory_and_reset_starts_afresh(
    tmp_path: Path, mode: str
) -> None:
    async with FakeOpenAI(api_key=FAKE_OPENAI_KEY) as api:
        agent = openai_config_toml(api.url, system_prompt="Be brief.", **MODES[mode])
        config = write_config(tmp_path, agent)
        code, out, err = await agent_bridge_chat(config, "one\ntwo\n/reset\nthree\nfour\n")

    assert code == 0, err
    assert "default> echo: one\n" in out
    assert "default> echo: two [remembers: one]" in out
    assert "started a new conversation" in out
    assert "default> echo: three\n" in out  # nothing from before the reset
    assert "default> echo: four [remembers: three]" in out
    assert FAKE_OPENAI_KEY not in out + err
    turns = api.calls_to("/chat/completions" if mode == "chat" else "/responses")
    assert len(turns) == 4
    assert all(c.headers["Authorization"] == f"Bearer {FAKE_OPENAI_KEY}" for c in api.calls)
    if mode == "conversation":
        first, second = sorted(api.conversations)
        assert api.conversations[first] == ["one", "two"]
        assert api.conversations[second] == ["three", "four"]
        assert [c.json["instructions"] for c in turns] == ["Be brief."] * 4
    elif mode == "previous_response_id":
        assert "previous_response_id" not in turns[0].json
        assert "previous_response_id" not in turns[2].json  # after the reset
        assert [c.json["instructions"] for c in turns] == ["Be brief."] * 4
    else:
        # The history after /reset is empty: the system prompt and the message only.
        assert turns[2].json["messages"] == [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "three"},
        ]
        assert len(turns[3].json["messages"]) == 4


async def test_chat_console_shows_the_balance_text_when_out_of_quota(tmp_path: Path) -> None:
    async with FakeOpenAI(api_key=FAKE_OPENAI_KEY) as api:
        api.script("/chat/completions", INSUFFICIENT_QUOTA, INSUFFICIENT_QUOTA)
        config = write_config(tmp_path, openai_config_toml(api.url, api="chat"))
        code, out, err = await agent_bridge_chat(config, "hi\n")

    assert code == 0, err
    assert "out of credit" in out
    assert len(api.calls_to("/chat/completions")) == 1  # not retried


@pytest.mark.parametrize("mode", ["chat", "conversation"])
async def test_run_with_telegram_keeps_each_chats_memory_and_reset_starts_afresh(
    tmp_path: Path, mode: str
) -> None:
    async with FakeTelegram() as tg, FakeOpenAI(api_key=FAKE_OPENAI_KEY) as api:
        config = write_config(tmp_path, openai_config_toml(api.url, **MODES[mode]), tg)
        bridge = BridgeProcess(config, bridge_env())
        try:
            await bridge.start()
            try:
                await tg.wait_calls("getUpdates", within=30)
            except TimeoutError:
                raise AssertionError(bridge.stderr) from None

            async def say(user: User, text: str, count: int) -> str:
                """Send ``text``; the chat's ``count``-th reply (the one to it)."""
                tg.push(private_text(user, text))
                sent = await tg.wait_sent(user.id, count=count, within=15)
                reply: str = sent[-1].params["text"]
                return reply

            assert await say(ALICE, "one", 1) == "echo: one"
            assert await say(BOB, "hello", 1) == "echo: hello"  # another chat, another memory
            assert await say(ALICE, "two", 2) == "echo: two [remembers: one]"
            assert await say(BOB, "again", 2) == "echo: again [remembers: hello]"
            await say(ALICE, "/reset", 3)
            assert await say(ALICE, "three", 4) == "echo: three"
            bridge.signal(signal.SIGTERM)
            assert await bridge.wait() == 0, bridge.stderr
        finally:
            await bridge.kill()
    assert FAKE_OPENAI_KEY not in bridge.stderr
    assert tg.token not in bridge.stderr
    if mode == "chat":
        [after_reset] = [
            c
            for c in api.calls_to("/chat/completions")
            if c.json["messages"][-1]["content"] == "three"
        ]
        assert after_reset.json["messages"] == [{"role": "user", "content": "three"}]
    else:
        assert len(api.calls_to("/conversations")) == 3  # Alice twice (reset), Bob once
