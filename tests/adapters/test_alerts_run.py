"""Admin alerts through `agent-bridge run`, as a real subprocess against `FakeTelegram`,
`FakeSlack` and `FakeAgentServer`: the agent answering 402 sends one alert to the
admins' chat (channel), not a second one within ``alerts.repeat_after``, then a
recovery message once the agent answers again; counted in /metrics. Telegram polling
failing for longer than ``alerts.degraded_after`` announces the bridge degraded, and
its recovery once polling works again."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx

from tests.daemon.conftest import BridgeProcess, subprocess_env
from tests.fakes.agents import FAKE_API_KEY, FakeAgentServer, FakeResponse, thinnest_config_toml
from tests.fakes.slack import FakeSlack
from tests.fakes.telegram import ALICE, FakeError, FakeTelegram, private_text
from tests.ports import free_port

ADMINS = -1000777
OUT_OF_CREDIT = FakeResponse(status=402, json={"detail": "Insufficient balance"})


def telegram_config(tmp_path: Path, tg: FakeTelegram, agents: FakeAgentServer, port: int) -> Path:
    path = tmp_path / "agent-bridge.toml"
    path.write_text(
        "[storage]\n"
        f'url = "sqlite+aiosqlite:///{tmp_path}/bridge.db"\n\n'
        f"{thinnest_config_toml(agents.url)}\n"
        "[telegram]\n"
        f'bot_token = "{tg.token}"\n'
        f'api_url = "{tg.api_url}"\n'
        f"allowed_users = [{ALICE.id}]\n\n"
        "[alerts]\n"
        f"telegram_chat = {ADMINS}\n"
        "repeat_after = 3600\n\n"
        "[daemon]\n"
        f'http_listen = "127.0.0.1:{port}"\n',
        encoding="utf-8",
    )
    return path


async def test_a_402_alerts_the_admins_once_then_its_recovery(tmp_path: Path) -> None:
    port = free_port()
    async with FakeTelegram() as tg, FakeAgentServer() as agents:
        bridge = BridgeProcess(telegram_config(tmp_path, tg, agents, port), subprocess_env())
        try:
            await bridge.start()
            try:
                await tg.wait_calls("getUpdates", within=30)
            except TimeoutError:
                raise AssertionError(bridge.stderr) from None
            agents.script(OUT_OF_CREDIT, OUT_OF_CREDIT)
            tg.push(private_text(ALICE, "one"))
            await tg.wait_sent(ALICE.id, within=15)
            [alert] = await tg.wait_sent(ADMINS, within=15)
            tg.push(private_text(ALICE, "two"))
            await tg.wait_sent(ALICE.id, count=2, within=15)
            # Topped up: the agent answers again.
            tg.push(private_text(ALICE, "three"))
            answers = await tg.wait_sent(ALICE.id, count=3, within=15)
            admin = await tg.wait_sent(ADMINS, count=2, within=15)
            async with httpx.AsyncClient() as http:
                metrics = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
            bridge.signal(signal.SIGTERM)
            assert await bridge.wait() == 0, bridge.stderr
        finally:
            await bridge.kill()

    assert answers[2].params["text"] == "echo: three"
    # One alert for the two 402s (the second came within repeat_after), then the recovery:
    # the worker sends in order, so a second alert would have come before it.
    assert len(admin) == 2 == len(tg.sent(ADMINS))
    text = alert.params["text"]
    assert "default" in text and "out of credit" in text and "402" in text
    assert "top up the balance" in text and "since" in text
    recovery = admin[1].params["text"]
    assert "default" in recovery and "answers again" in recovery
    assert 'agent_bridge_alerts_sent_total{kind="insufficient_balance"} 1.0' in metrics
    assert 'agent_bridge_alerts_sent_total{kind="recovery"} 1.0' in metrics
    for secret in (FAKE_API_KEY, tg.token):
        assert secret not in text + recovery + bridge.stderr


def slack_config(tmp_path: Path, slack: FakeSlack, agents: FakeAgentServer) -> Path:
    path = tmp_path / "agent-bridge.toml"
    path.write_text(
        "[storage]\n"
        f'url = "sqlite+aiosqlite:///{tmp_path}/bridge.db"\n\n'
        f"{thinnest_config_toml(agents.url)}\n"
        "[slack]\n"
        'bot_token = "${SLACK_BOT_TOKEN}"\n'
        'app_token = "${SLACK_APP_TOKEN}"\n'
        f'api_url = "{slack.api_url}"\n\n'
        "[alerts]\n"
        'slack_channel = "C0ADMINS"\n',
        encoding="utf-8",
    )
    return path


async def test_a_401_alerts_the_slack_channel_with_the_key_to_check(tmp_path: Path) -> None:
    async with FakeSlack() as slack, FakeAgentServer() as agents:
        env = subprocess_env(SLACK_BOT_TOKEN=slack.bot_token, SLACK_APP_TOKEN=slack.app_token)
        bridge = BridgeProcess(slack_config(tmp_path, slack, agents), env)
        try:
            await bridge.start()
            try:
                await slack.wait_connected(1, within=30)
            except AssertionError:
                raise AssertionError(bridge.stderr) from None
            agents.script(FakeResponse(status=401, json={"detail": "Invalid API key"}))
            await slack.send_event(slack.mention("one", channel="C1"))
            await slack.wait_call("chat.postMessage", 2, within=15)  # the reply and the alert
            await slack.send_event(slack.mention("two", channel="C1"))
            await slack.wait_call("chat.postMessage", 4, within=15)  # the answer and recovery
            bridge.signal(signal.SIGTERM)
            assert await bridge.wait() == 0, bridge.stderr
        finally:
            await bridge.kill()

    posts = slack.calls_to("chat.postMessage")
    admins = [p.markdown for p in posts if p.args.get("channel") == "C0ADMINS"]
    assert len(admins) == 2, [p.args for p in posts]
    assert "agents.default.api_key" in admins[0] and "401" in admins[0]
    assert "answers again" in admins[1]
    assert [p.markdown for p in posts if p.args.get("channel") == "C1"][-1] == "echo: two"


async def test_telegram_unreachable_past_degraded_after_alerts_then_recovers(
    tmp_path: Path,
) -> None:
    async with FakeTelegram() as tg, FakeAgentServer() as agents:
        config = telegram_config(tmp_path, tg, agents, free_port())
        text = config.read_text(encoding="utf-8").replace(
            "repeat_after = 3600\n", "repeat_after = 3600\ndegraded_after = 1\n"
        )
        config.write_text(text, encoding="utf-8")
        bridge = BridgeProcess(config, subprocess_env())
        try:
            await bridge.start()
            try:
                await tg.wait_calls("getUpdates", within=30)
            except TimeoutError:
                raise AssertionError(bridge.stderr) from None
            # Polling fails (sendMessage still works): the adapter is disconnected.
            tg.fail_always("getUpdates", FakeError(502, "Bad Gateway"))
            try:
                [alert] = await tg.wait_sent(ADMINS, within=20)
            except TimeoutError:
                raise AssertionError(bridge.stderr) from None
            tg.clear_failures()
            # An update ends the next long poll at once: polling works again.
            tg.push(private_text(ALICE, "are you back?"))
            try:
                admin = await tg.wait_sent(ADMINS, count=2, within=30)
            except TimeoutError:
                raise AssertionError(bridge.stderr) from None
            bridge.signal(signal.SIGTERM)
            assert await bridge.wait() == 0, bridge.stderr
        finally:
            await bridge.kill()

    assert "degraded" in alert.params["text"] and "telegram: disconnected" in alert.params["text"]
    assert "healthy again" in admin[1].params["text"]
    assert len(tg.sent(ADMINS)) == 2


async def test_an_agents_budget_cap_reached_alerts_the_admins(tmp_path: Path) -> None:
    """The budgets and the alerts together: the agent's overall daily cap refusing a
    message (``error_kind = "budget_agent_cap"``) is announced once to the admins'
    chat, naming the agent and what to do, and the agent is not called for it."""
    async with FakeTelegram() as tg, FakeAgentServer() as agents:
        config = telegram_config(tmp_path, tg, agents, free_port())
        text = config.read_text(encoding="utf-8") + "\n[budgets]\nagent_daily_messages = 1\n"
        config.write_text(text, encoding="utf-8")
        bridge = BridgeProcess(config, subprocess_env())
        try:
            await bridge.start()
            try:
                await tg.wait_calls("getUpdates", within=30)
            except TimeoutError:
                raise AssertionError(bridge.stderr) from None
            tg.push(private_text(ALICE, "one"))
            await tg.wait_sent(ALICE.id, within=15)
            tg.push(private_text(ALICE, "two"))
            answers = await tg.wait_sent(ALICE.id, count=2, within=15)
            [alert] = await tg.wait_sent(ADMINS, within=15)
            bridge.signal(signal.SIGTERM)
            assert await bridge.wait() == 0, bridge.stderr
        finally:
            await bridge.kill()

    assert answers[0].params["text"] == "echo: one"
    assert "for everyone today" in answers[1].params["text"]  # budgets.agent_cap_text
    assert len(agents.calls) == 1, "the capped message reached the agent"
    assert "default" in alert.params["text"] and "budget cap" in alert.params["text"]
