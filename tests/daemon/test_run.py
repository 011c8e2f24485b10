"""`agent-bridge run` as systemd runs it: a subprocess with a real notify socket,
against the fake Telegram Bot API and the fake agent API."""

from __future__ import annotations

import asyncio
import itertools
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

from bridge import __version__
from bridge.model import MessageStatus
from storage.store import Store
from tests.daemon.conftest import BridgeProcess, NotifyListener
from tests.fakes.agents import FAKE_API_KEY, FakeAgentServer, thinnest_config_toml
from tests.fakes.slack import FakeSlack
from tests.fakes.telegram import ALICE, FakeError, FakeTelegram, private_text
from tests.ports import free_port

Spawn = Callable[..., BridgeProcess]
BAD_TOKEN = "111111111:AAthisTokenIsNotTheOneTheFakeKnows_1"


def write_config(
    tmp_path: Path,
    *,
    agents: FakeAgentServer,
    telegram: FakeTelegram | None,
    token: str | None = None,
    http_port: int | None = None,
    grace: float = 10,
    slack: FakeSlack | None = None,
) -> Path:
    text = f'[storage]\nurl = "sqlite+aiosqlite:///{tmp_path / "bridge.db"}"\n\n'
    text += thinnest_config_toml(agents.url) + "\n"
    if telegram is not None:
        text += (
            "[telegram]\n"
            f'bot_token = "{token or telegram.token}"\n'
            f'api_url = "{telegram.api_url}"\n'
            'allowed_users = ["*"]\n\n'
        )
    if slack is not None:
        text += (
            "[slack]\n"
            f'bot_token = "{slack.bot_token}"\n'
            f'app_token = "{slack.app_token}"\n'
            f'api_url = "{slack.api_url}"\n\n'
        )
    text += f"[daemon]\nshutdown_grace = {grace}\n"
    if http_port is not None:
        text += f'http_listen = "127.0.0.1:{http_port}"\n'
    path = tmp_path / "agent-bridge.toml"
    path.write_text(text)
    return path


async def start(spawn: Spawn, config: Path, notify: NotifyListener, **env: str) -> BridgeProcess:
    bridge = spawn(config, NOTIFY_SOCKET=notify.path, **env)
    ready_before = len(notify.with_key("READY", "1"))
    await bridge.start()
    try:
        await notify.wait_for("READY", "1", count=ready_before + 1, within=30)
    except TimeoutError:
        raise AssertionError(f"no READY=1; stderr:\n{bridge.stderr}") from None
    return bridge


async def stopped(bridge: BridgeProcess, sig: int = signal.SIGTERM) -> int:
    bridge.signal(sig)
    return await bridge.wait()


async def eventually(check: Callable[[], Awaitable[bool]], *, within: float = 10.0) -> None:
    """Wait until ``check()`` holds, asking again every 50 ms, at most ``within`` seconds."""
    async with asyncio.timeout(within):
        while not await check():  # noqa: ASYNC110 -- the state is in another process
            await asyncio.sleep(0.05)


async def unfinished(tmp_path: Path) -> list[tuple[str, MessageStatus]]:
    async with Store(f"sqlite+aiosqlite:///{tmp_path / 'bridge.db'}") as store:
        return [(m.text, m.status) for m in await store.unfinished()]


async def test_ready_watchdog_and_stopping_over_the_notify_socket(
    tmp_path: Path, spawn: Spawn, notify_socket: NotifyListener
) -> None:
    async with FakeAgentServer() as agents, FakeTelegram() as telegram:
        config = write_config(tmp_path, agents=agents, telegram=telegram)
        bridge = await start(spawn, config, notify_socket, WATCHDOG_USEC="400000")
        [ready] = notify_socket.with_key("READY", "1")
        # READY only once the store is migrated and Telegram is connected.
        [get_me] = telegram.calls_of("getMe")
        assert get_me.ok and get_me.at < ready.at
        statuses = [n.fields["STATUS"] for n in notify_socket.with_key("STATUS")]
        assert "Starting: opening the store" in statuses
        assert "Starting: connecting to telegram" in statuses
        assert ready.fields["STATUS"] == "Ready: telegram; 0 resumed"

        before = [p for p in notify_socket.with_key("WATCHDOG", "1") if p.at <= ready.at]
        pings = await notify_socket.wait_for("WATCHDOG", "1", count=len(before) + 4, within=10)
        # Every WATCHDOG_USEC/2 once running. (While it starts, the imports of the
        # store and the adapters hold the loop for a few tenths of a second: nothing
        # next to a real watchdog's tens of seconds.)
        running = [p for p in pings if p.at > ready.at]
        gaps = [b.at - a.at for a, b in itertools.pairwise(running)]
        assert len(gaps) >= 3 and all(gap < 0.4 for gap in gaps), gaps

        code = await stopped(bridge)
        assert code == 0, bridge.stderr
        [stopping] = notify_socket.with_key("STOPPING", "1")
        assert stopping.fields["STATUS"].startswith("Stopping: ")
        assert stopping.at > ready.at
        assert "Traceback" not in bridge.stderr
        assert f"agent-bridge {__version__} starting: telegram" in bridge.stderr


async def test_sigterm_lets_the_call_in_flight_finish_and_keeps_the_rest(
    tmp_path: Path, spawn: Spawn, notify_socket: NotifyListener
) -> None:
    async with FakeAgentServer() as agents, FakeTelegram() as telegram:
        config = write_config(tmp_path, agents=agents, telegram=telegram, grace=20)
        bridge = await start(spawn, config, notify_socket)

        agents.hold()  # a slow agent
        telegram.push(private_text(ALICE, "first"))
        await agents.wait_for_calls(1, within=10)
        queued = telegram.push(private_text(ALICE, "second"))  # same chat: waits its turn
        await telegram.wait_confirmed(queued["update_id"], within=10)  # committed

        bridge.signal(signal.SIGTERM)
        await notify_socket.wait_for("STOPPING", "1", within=10)
        agents.release()  # the call in flight finishes within the grace period
        assert await bridge.wait() == 0, bridge.stderr

        [reply] = telegram.sent(chat_id=ALICE.id)
        assert reply.params["text"] == "echo: first"
        assert [c.json["message"] for c in agents.chat_calls] == ["first"]
        assert await unfinished(tmp_path) == [("second", MessageStatus.PENDING)]

        # The next start answers what was left.
        bridge = await start(spawn, config, notify_socket)
        try:
            sent = await telegram.wait_sent(chat_id=ALICE.id, count=2, within=15)
        except TimeoutError:
            print(bridge.stderr)
            print(await unfinished(tmp_path))
            print([(c.method, c.ok, c.params) for c in telegram.calls if c.method != "getUpdates"])
            raise
        assert sent[1].params["text"] == "echo: second"
        assert await stopped(bridge) == 0, bridge.stderr
        assert await unfinished(tmp_path) == []


async def test_a_call_outlasting_the_grace_period_is_resumed_at_the_next_start(
    tmp_path: Path, spawn: Spawn, notify_socket: NotifyListener
) -> None:
    async with FakeAgentServer() as agents, FakeTelegram() as telegram:
        config = write_config(tmp_path, agents=agents, telegram=telegram, grace=0.5)
        bridge = await start(spawn, config, notify_socket)
        agents.hold()
        telegram.push(private_text(ALICE, "slow one"))
        await agents.wait_for_calls(1, within=10)

        assert await stopped(bridge) == 0, bridge.stderr  # after the 0.5 s grace
        assert telegram.sent(chat_id=ALICE.id) == []
        [(text, status)] = await unfinished(tmp_path)
        assert (text, status) == ("slow one", MessageStatus.RUNNING)

        agents.release()
        bridge = await start(spawn, config, notify_socket)
        [reply] = await telegram.wait_sent(chat_id=ALICE.id, within=15)
        assert reply.params["text"] == "echo: slow one"
        assert await stopped(bridge) == 0, bridge.stderr


async def test_a_second_signal_exits_at_once_losing_nothing(
    tmp_path: Path, spawn: Spawn, notify_socket: NotifyListener
) -> None:
    async with FakeAgentServer() as agents, FakeTelegram() as telegram:
        config = write_config(tmp_path, agents=agents, telegram=telegram, grace=60)
        bridge = await start(spawn, config, notify_socket)
        agents.hold()
        telegram.push(private_text(ALICE, "stuck"))
        await agents.wait_for_calls(1, within=10)

        bridge.signal(signal.SIGTERM)
        await notify_socket.wait_for("STOPPING", "1", within=10)
        code = await stopped(bridge, signal.SIGINT)  # long before the 60 s grace ends
        assert code == 128 + signal.SIGINT, bridge.stderr
        assert telegram.sent(chat_id=ALICE.id) == []
        [(text, status)] = await unfinished(tmp_path)
        assert text == "stuck"
        assert status in (MessageStatus.PENDING, MessageStatus.RUNNING)

        agents.release()
        bridge = await start(spawn, config, notify_socket)
        [reply] = await telegram.wait_sent(chat_id=ALICE.id, within=15)
        assert reply.params["text"] == "echo: stuck"
        assert await stopped(bridge) == 0, bridge.stderr


async def test_healthz_follows_the_telegram_connection_and_metrics_move(
    tmp_path: Path, spawn: Spawn, notify_socket: NotifyListener
) -> None:
    port = free_port()
    async with (
        FakeAgentServer() as agents,
        FakeTelegram() as telegram,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http,
    ):
        config = write_config(tmp_path, agents=agents, telegram=telegram, http_port=port)
        bridge = await start(spawn, config, notify_socket)

        health = await http.get("/healthz")
        assert health.status_code == 200, health.text
        assert health.json()["adapters"] == {"telegram": "connected"}

        telegram.push(private_text(ALICE, "count me"))
        await telegram.wait_sent(chat_id=ALICE.id, within=10)

        async def metrics_show(line: str) -> bool:
            return line in (await http.get("/metrics")).text

        # The counter moves once the delivery is recorded, just after the fake saw it.
        await eventually(
            lambda: metrics_show('agent_bridge_messages_answered_total{platform="telegram"} 1.0')
        )
        assert await metrics_show('agent_bridge_messages_received_total{platform="telegram"} 1.0')
        assert await metrics_show('agent_bridge_agent_call_seconds_count{agent="default"} 1.0')

        # Telegram fails the next two getUpdates: the adapter is disconnected, then
        # reconnects on its own (after 1 s and 2 s of backoff).
        polls = len(telegram.calls_of("getUpdates"))
        telegram.fail_next(
            "getUpdates", FakeError(502, "Bad Gateway"), FakeError(502, "Bad Gateway")
        )
        telegram.push(private_text(ALICE, "wake the long poll"))

        async def status_is(code: int) -> bool:
            return (await http.get("/healthz")).status_code == code

        await eventually(lambda: status_is(503))
        body = (await http.get("/healthz")).json()
        assert body["adapters"] == {"telegram": "disconnected"}
        assert body["problems"] == ["telegram: disconnected"]

        # The adapter learns it is back when a long poll returns: give it an update.
        # (once both scripted failures were answered; the next poll then returns at once)
        await telegram.wait_for(lambda: len(telegram.calls_of("getUpdates")) >= polls + 2)
        telegram.push(private_text(ALICE, "are you back?"))
        await eventually(lambda: status_is(200), within=15)
        assert await stopped(bridge) == 0, bridge.stderr


async def test_telegram_and_slack_in_one_loop(
    tmp_path: Path, spawn: Spawn, notify_socket: NotifyListener
) -> None:
    port = free_port()
    async with (
        FakeAgentServer() as agents,
        FakeTelegram() as telegram,
        FakeSlack() as slack,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http,
    ):
        config = write_config(
            tmp_path, agents=agents, telegram=telegram, slack=slack, http_port=port
        )
        notify_socket.probe = lambda: slack.connection_count
        bridge = await start(spawn, config, notify_socket)
        [ready] = notify_socket.with_key("READY", "1")
        assert ready.fields["STATUS"] == "Ready: telegram, slack; 0 resumed"
        assert ready.seen == 1  # the Socket Mode connection was up before READY
        assert telegram.calls_of("getMe")

        envelope = await slack.send_event(slack.mention("hello from slack"))
        await slack.wait_ack(envelope)
        post = await slack.wait_call("chat.postMessage", within=10)
        assert "echo: hello from slack" in str(post.args)
        telegram.push(private_text(ALICE, "hello from telegram"))
        [reply] = await telegram.wait_sent(chat_id=ALICE.id, within=10)
        assert reply.params["text"] == "echo: hello from telegram"

        health = (await http.get("/healthz")).json()
        assert health["adapters"] == {"telegram": "connected", "slack": "connected"}

        # Slack's socket closes and Slack refuses new ones: only slack is named.
        slack.refuse_connections = True
        await slack.drop_connections()

        async def slack_down() -> bool:
            response = await http.get("/healthz")
            return response.status_code == 503

        await eventually(slack_down)
        body = (await http.get("/healthz")).json()
        assert body["problems"] == ["slack: disconnected"]
        assert body["adapters"]["telegram"] == "connected"
        assert await stopped(bridge) == 0, bridge.stderr
    # At the default log level: no token, no message text.
    for secret in (telegram.token, slack.bot_token, slack.app_token, FAKE_API_KEY):
        assert secret not in bridge.stderr
    assert "hello from" not in bridge.stderr


async def test_a_bad_token_fails_the_start_in_one_line_with_exit_3(
    tmp_path: Path, spawn: Spawn, notify_socket: NotifyListener
) -> None:
    async with FakeAgentServer() as agents, FakeTelegram() as telegram:
        config = write_config(tmp_path, agents=agents, telegram=telegram, token=BAD_TOKEN)
        bridge = spawn(config, NOTIFY_SOCKET=notify_socket.path)
        await bridge.start()
        code = await bridge.wait(within=10)  # no retry: a refused token stays refused
        assert len(telegram.calls_of("getMe")) == 1
    assert code == 3  # the unit's RestartPreventExitStatus= does not restart it
    assert "Traceback" not in bridge.stderr
    [line] = [line for line in bridge.stderr_lines if "cannot start" in line]
    assert line.endswith("cannot start: telegram: Unauthorized: check telegram.bot_token")
    assert BAD_TOKEN not in bridge.stderr
    assert notify_socket.with_key("READY") == []


async def test_a_database_folder_that_does_not_exist_fails_the_start_with_exit_2(
    tmp_path: Path, spawn: Spawn
) -> None:
    async with FakeAgentServer() as agents, FakeTelegram() as telegram:
        config = write_config(tmp_path, agents=agents, telegram=telegram)
        text = config.read_text().replace(str(tmp_path / "bridge.db"), "/nonexistent/dir/bridge.db")
        config.write_text(text)
        bridge = spawn(config)
        await bridge.start()
        assert await bridge.wait() == 2  # storage.url is wrong: a config error, no retry
    assert "Traceback" not in bridge.stderr
    [line] = [line for line in bridge.stderr_lines if "cannot start" in line]
    assert "storage.url" in line and "/nonexistent/dir" in line
    assert telegram.calls == []  # the store opens first; nothing else was started


async def test_no_chat_platform_exits_2_naming_the_sections(tmp_path: Path, spawn: Spawn) -> None:
    async with FakeAgentServer() as agents:
        config = write_config(tmp_path, agents=agents, telegram=None)
    bridge = spawn(config)
    await bridge.start()
    assert await bridge.wait() == 2
    assert "[telegram]" in bridge.stderr and "[slack]" in bridge.stderr
