"""Approving people on Slack, end to end: ``agent-bridge run`` (a real subprocess)
against the fake Slack (Web API + Socket Mode) and a fake agent. A refused user's
note carries a pairing code; a non-admin's ``/agent approve CODE`` is refused, an
admin's approves them (they are told in their DM), and their next message is
answered without a restart."""

from __future__ import annotations

import re
from pathlib import Path

from bridge.access import APPROVED_TEXT, CODE_ALPHABET, CODE_LENGTH
from tests.daemon.conftest import BridgeProcess, subprocess_env
from tests.fakes.agents import FakeAgentServer, thinnest_config_toml
from tests.fakes.slack import FakeSlack

CODE = re.compile(rf"`([{CODE_ALPHABET}]{{{CODE_LENGTH}}})`")
ADMIN, STRANGER, OTHER = "U0ADMIN", "U0666", "U0777"


def write_config(tmp_path: Path, slack: FakeSlack, agents: FakeAgentServer) -> Path:
    path = tmp_path / "agent-bridge.toml"
    path.write_text(
        "[storage]\n"
        f'url = "sqlite+aiosqlite:///{tmp_path}/bridge.db"\n\n'
        f"{thinnest_config_toml(agents.url)}\n"
        "[slack]\n"
        f'bot_token = "{slack.bot_token}"\n'
        f'app_token = "{slack.app_token}"\n'
        f'api_url = "{slack.api_url}"\n'
        f'allowed_users = ["{ADMIN}"]\n'
        f'admins = ["{ADMIN}"]\n',
        encoding="utf-8",
    )
    return path


async def test_slack_agent_approve_by_an_admin_lets_the_user_in(tmp_path: Path) -> None:
    async with FakeSlack() as slack, FakeAgentServer() as agents:
        bridge = BridgeProcess(write_config(tmp_path, slack, agents), subprocess_env())
        try:
            await bridge.start()
            try:
                await slack.wait_connected(1, within=30)
            except AssertionError:
                raise AssertionError(bridge.stderr) from None
            dm = {"channel": "D666", "channel_type": "im", "user": STRANGER}
            await slack.wait_ack(await slack.send_event(slack.message("hello?", **dm)))
            note = await slack.wait_call("chat.postEphemeral", 1, within=15)
            assert note.args["user"] == STRANGER
            match = CODE.search(note.args["text"])
            assert match is not None, note.args["text"]
            code = match.group(1)
            # Asking again (here with the command) within the hour: the same code.
            again = await slack.wait_ack(
                await slack.send_command("status", user=STRANGER, channel="D666"), within=15
            )
            assert f"`{code}`" in again["payload"]["text"]

            refused = await slack.wait_ack(
                await slack.send_command(f"approve {code}", user=OTHER, channel="D777"), within=15
            )
            assert "only the bridge's administrators" in refused["payload"]["text"]

            approved = await slack.wait_ack(
                await slack.send_command(f"approve {code}", user=ADMIN, channel="D1"), within=15
            )
            assert approved["payload"]["text"].startswith(f"Approved <@{STRANGER}>")
            told = await slack.wait_call("chat.postMessage", 1, within=15)
            assert told.args["channel"] == "D666" and told.markdown == APPROVED_TEXT

            await slack.wait_ack(await slack.send_event(slack.message("now?", **dm)))
            answer = await slack.wait_call("chat.postMessage", 2, within=15)
            assert answer.args["channel"] == "D666" and answer.markdown == "echo: now?"

            reused = await slack.wait_ack(
                await slack.send_command(f"approve {code}", user=ADMIN, channel="D1"), within=15
            )
            assert "unknown or already used" in reused["payload"]["text"]
            await bridge.wait_log(lambda line: f"approved by slack:{ADMIN}" in line)
            bridge.signal()
            assert await bridge.wait() == 0, bridge.stderr
        finally:
            await bridge.kill()
        assert [c.json["message"] for c in agents.chat_calls] == ["now?"]
        assert len(slack.calls_to("chat.postEphemeral")) == 1
