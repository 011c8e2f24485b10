"""`agent-bridge run` with a ``[slack]`` section, as a real subprocess (``python -m bridge
run``) against `FakeSlack` and `FakeAgentServer` in this process: mentions are answered in
their thread with one agent session per thread, DMs top-level; a bridge killed (SIGKILL)
while the agent works answers the message after its restart, once; a click on an
answer's feedback buttons is stored, counted in /metrics and listed by ``agent-bridge
feedback list``."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import httpx

from tests.daemon.conftest import BridgeProcess, subprocess_env
from tests.fakes.agents import FakeAgentServer, thinnest_config_toml
from tests.fakes.slack import FakeSlack
from tests.ports import free_port


def write_config(tmp_path: Path, slack: FakeSlack, agents: FakeAgentServer) -> Path:
    path = tmp_path / "agent-bridge.toml"
    path.write_text(
        "[storage]\n"
        f'url = "sqlite+aiosqlite:///{tmp_path}/bridge.db"\n\n'
        f"{thinnest_config_toml(agents.url)}\n"
        "[slack]\n"
        'bot_token = "${SLACK_BOT_TOKEN}"\n'
        'app_token = "${SLACK_APP_TOKEN}"\n'
        f'api_url = "{slack.api_url}"\n',
        encoding="utf-8",
    )
    return path


def env_for(slack: FakeSlack) -> dict[str, str]:
    return subprocess_env(SLACK_BOT_TOKEN=slack.bot_token, SLACK_APP_TOKEN=slack.app_token)


async def test_run_answers_threads_and_dms_and_survives_a_kill(tmp_path: Path) -> None:
    async with FakeSlack() as slack, FakeAgentServer() as agents:
        config = write_config(tmp_path, slack, agents)
        first = BridgeProcess(config, env_for(slack))
        second = BridgeProcess(config, env_for(slack))
        try:
            await first.start()
            try:
                await slack.wait_connected(1, within=30)
            except AssertionError:
                raise AssertionError(first.stderr) from None

            root = slack.mention("first question")
            await slack.wait_ack(await slack.send_event(root))
            await slack.wait_call("chat.postMessage", 1, within=15)
            await slack.send_event(slack.message("follow-up", thread_ts=root["ts"]))
            await slack.wait_call("chat.postMessage", 2, within=15)
            await slack.send_event(slack.message("in a dm", channel="D1", channel_type="im"))
            await slack.wait_call("chat.postMessage", 3, within=15)

            # Killed while the agent works on an acked message: only the store has it.
            agents.hold()
            pending = slack.mention("survive this")
            await slack.wait_ack(await slack.send_event(pending), within=15)
            await agents.wait_for_calls(4, within=15)
            first.signal(signal.SIGKILL)
            assert await first.wait() == -signal.SIGKILL
            assert len(slack.calls_to("chat.postMessage")) == 3

            await second.start()
            await slack.wait_connected(2, within=30)
            await agents.wait_for_calls(5, within=15)  # resumed from the store
            agents.release()
            await slack.wait_call("chat.postMessage", 4, within=15)
            second.signal(signal.SIGTERM)
            assert await second.wait() == 0, second.stderr
        finally:
            await first.kill()
            await second.kill()

    posts = slack.calls_to("chat.postMessage")
    assert [(p.args.get("thread_ts"), p.markdown) for p in posts] == [
        (root["ts"], "echo: first question"),
        (root["ts"], "echo: follow-up"),
        (None, "echo: in a dm"),
        (pending["ts"], "echo: survive this"),
    ]
    sessions = [c.json.get("session_id") for c in agents.chat_calls]
    assert sessions[:3] == [None, "sess-1", None]  # the thread kept its session
    assert [c.json["message"] for c in agents.chat_calls][3:] == ["survive this"] * 2
    for secret in (slack.bot_token, slack.app_token):
        assert secret not in first.stderr + second.stderr


async def test_a_feedback_click_is_stored_counted_and_listed(tmp_path: Path) -> None:
    async with FakeSlack() as slack, FakeAgentServer() as agents:
        config = write_config(tmp_path, slack, agents)
        port = free_port()
        with config.open("a", encoding="utf-8") as file:
            file.write(f'\n[daemon]\nhttp_listen = "127.0.0.1:{port}"\n')
        bridge = BridgeProcess(config, env_for(slack))
        try:
            await bridge.start()
            await slack.wait_connected(1, within=30)
            await slack.send_event(slack.mention("rate me", channel="C9"))
            post = await slack.wait_call("chat.postMessage", 1, within=15)
            good, bad = post.feedback_values
            # The user changes their mind: the second click replaces the first.
            await slack.wait_ack(await slack.send_action(good, user="U7", channel="C9"))
            await slack.wait_ack(await slack.send_action(bad, user="U7", channel="C9"))
            async with httpx.AsyncClient() as http:
                metrics = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
            bridge.signal(signal.SIGTERM)
            assert await bridge.wait() == 0, bridge.stderr
        finally:
            await bridge.kill()

    counted = {
        line.split("{")[1].split("}")[0]: float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("agent_bridge_feedback_total{")
    }
    assert counted == {'agent="default",value="good"': 1.0, 'agent="default",value="bad"': 1.0}

    listing = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "bridge", "feedback", "list", "--format", "json"),
        *("--config", str(config)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env_for(slack),
    )
    out, err = await asyncio.wait_for(listing.communicate(), 60)
    assert listing.returncode == 0, err.decode()
    [entry] = json.loads(out)
    assert (entry["user"], entry["value"], entry["chat"]) == ("U7", "bad", "C9")
    assert entry["agent"] == "default" and entry["message_id"] == int(bad.split(":")[1])
