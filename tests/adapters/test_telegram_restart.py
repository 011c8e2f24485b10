"""`agent-bridge run` killed (SIGKILL) while the agent works on a Telegram message, then
started again: the message is answered, once. The bridge runs as a real subprocess
(``python -m bridge run``) against `FakeTelegram` and `FakeAgentServer` in this process."""

from __future__ import annotations

import signal
from pathlib import Path

from tests.daemon.conftest import BridgeProcess, subprocess_env
from tests.fakes.agents import FakeAgentServer, thinnest_config_toml
from tests.fakes.telegram import ALICE, FakeTelegram, private_text


def write_config(tmp_path: Path, tg: FakeTelegram, agents: FakeAgentServer) -> Path:
    path = tmp_path / "agent-bridge.toml"
    path.write_text(
        "[storage]\n"
        f'url = "sqlite+aiosqlite:///{tmp_path}/bridge.db"\n\n'
        f"{thinnest_config_toml(agents.url)}\n"
        "[telegram]\n"
        f'bot_token = "{tg.token}"\n'
        f'api_url = "{tg.api_url}"\n'
        f"allowed_users = [{ALICE.id}]\n",
        encoding="utf-8",
    )
    return path


def bridge_env() -> dict[str, str]:
    return subprocess_env()


async def test_killed_while_the_agent_works_then_restarted_answers_once(tmp_path: Path) -> None:
    async with FakeTelegram() as tg, FakeAgentServer() as agents:
        config = write_config(tmp_path, tg, agents)
        first = BridgeProcess(config, bridge_env())
        second = BridgeProcess(config, bridge_env())
        try:
            await first.start()
            try:
                await tg.wait_calls("getUpdates", within=30)
            except TimeoutError:
                raise AssertionError(first.stderr) from None
            agents.hold()
            pushed = tg.push(private_text(ALICE, "survive this"))
            await agents.wait_for_calls(1, within=15)
            # Committed and confirmed to Telegram: from now on only the store has it.
            await tg.wait_confirmed(pushed["update_id"], within=15)
            first.signal(signal.SIGKILL)
            assert await first.wait() == -signal.SIGKILL
            assert tg.sent() == []

            polls = len(tg.calls_of("getUpdates"))
            await second.start()
            await tg.wait_calls("getUpdates", count=polls + 1, within=30)
            await agents.wait_for_calls(2, within=15)  # resumed from the store
            agents.release()
            [reply] = await tg.wait_sent(ALICE.id, within=15)
            assert reply.params["text"] == "echo: survive this"
            second.signal(signal.SIGTERM)
            assert await second.wait() == 0, second.stderr
        finally:
            await first.kill()
            await second.kill()
        # Answered once: one reply, and the update was never handed out again.
        assert len(tg.sent(ALICE.id)) == 1
        assert [c.json["message"] for c in agents.chat_calls] == ["survive this"] * 2
        assert tg.token not in first.stderr + second.stderr
