"""`agent-bridge run` rides out what may pass at start, stops on what will not, and
reloads its allowlists and ``[messages]`` on SIGHUP: a subprocess with a real notify
socket, against the fakes on 127.0.0.1.

The start backoff is shortened with ``AGENT_BRIDGE_TEST_START_BACKOFF`` (a test-only
variable `bridge.daemon` reads; not a config key), so that no test waits 30 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from tests.daemon.conftest import BridgeProcess, NotifyListener
from tests.daemon.test_run import Spawn, start, stopped, write_config
from tests.fakes.agents import FakeAgentServer, FakeResponse
from tests.fakes.slack import FakeSlack
from tests.fakes.telegram import ALICE, BOB, FakeError, FakeTelegram, private_text
from tests.ports import free_port

FAST = {"AGENT_BRIDGE_TEST_START_BACKOFF": "0.2,0.5"}


@contextlib.asynccontextmanager
async def forwarder(port: int, target: int) -> AsyncIterator[None]:
    """From now on, 127.0.0.1:``port`` answers: every connection is piped to
    ``target`` (before, nothing listened there: connections were refused)."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    tasks: set[asyncio.Task[None]] = set()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target)
        for task in (
            asyncio.create_task(pipe(reader, up_writer)),
            asyncio.create_task(pipe(up_reader, writer)),
        ):
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    server = await asyncio.start_server(accept, "127.0.0.1", port)
    try:
        yield
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


def statuses(notify: NotifyListener) -> list[str]:
    return [n.fields["STATUS"] for n in notify.with_key("STATUS")]


async def wait_status(notify: NotifyListener, *parts: str, within: float = 15.0) -> str:
    def found() -> str | None:
        return next((s for s in statuses(notify) if all(p in s for p in parts)), None)

    with contextlib.suppress(TimeoutError):  # the assertion below shows what came
        async with asyncio.timeout(within):
            while found() is None:  # noqa: ASYNC110 -- they come from another process
                await asyncio.sleep(0.05)
    line = found()
    assert line is not None, statuses(notify)
    return line


async def launch(spawn: Spawn, config: Path, notify: NotifyListener) -> BridgeProcess:
    bridge = spawn(config, NOTIFY_SOCKET=notify.path, **FAST)
    await bridge.start()
    return bridge


async def test_telegram_not_listening_at_start_is_waited_for(
    tmp_path: Path, spawn: Spawn, notify_socket: NotifyListener
) -> None:
    port = free_port()
    async with FakeAgentServer() as agents, FakeTelegram() as telegram:
        config = write_config(tmp_path, agents=agents, telegram=telegram)
        config.write_text(
            config.read_text().replace(telegram.api_url, f"http://127.0.0.1:{port}/bot")
        )
        bridge = await launch(spawn, config, notify_socket)
        status = await wait_status(notify_socket, "Starting: telegram unavailable", "retrying in")
        assert "ConnectError" in status, status
        # It keeps trying (0.2 s, then every 0.5 s) and stays up, not ready.
        await bridge.wait_log(lambda line: "attempt 3" in line)
        assert bridge.proc is not None and bridge.proc.returncode is None
        assert notify_socket.with_key("READY") == []
        assert notify_socket.with_key("EXTEND_TIMEOUT_USEC")  # systemd gives it time

        async with forwarder(port, int(telegram.url.rsplit(":", 1)[1])):
            [ready] = await notify_socket.wait_for("READY", "1", within=15)
            assert ready.fields["STATUS"] == "Ready: telegram; 0 resumed"
            telegram.push(private_text(ALICE, "are you there?"))
            [reply] = await telegram.wait_sent(chat_id=ALICE.id, within=10)
            assert reply.params["text"] == "echo: are you there?"
            assert await stopped(bridge) == 0, bridge.stderr
    assert "telegram started after" in bridge.stderr
    assert "Traceback" not in bridge.stderr


async def test_telegram_answering_502_at_start_is_retried_until_it_answers(
    tmp_path: Path, spawn: Spawn, notify_socket: NotifyListener
) -> None:
    async with FakeAgentServer() as agents, FakeTelegram() as telegram:
        telegram.fail_always("getMe", FakeError(502, "Bad Gateway"))
        config = write_config(tmp_path, agents=agents, telegram=telegram)
        bridge = await launch(spawn, config, notify_socket)
        await wait_status(notify_socket, "telegram unavailable (Bad Gateway)", "retrying in")
        await telegram.wait_for(lambda: len(telegram.calls_of("getMe")) >= 3, within=10)
        assert notify_socket.with_key("READY") == []

        telegram.clear_failures()
        [ready] = await notify_socket.wait_for("READY", "1", within=15)
        get_me = telegram.calls_of("getMe")
        assert get_me[-1].ok and get_me[-1].at < ready.at
        telegram.push(private_text(ALICE, "hello after the outage"))
        [reply] = await telegram.wait_sent(chat_id=ALICE.id, within=10)
        assert reply.params["text"] == "echo: hello after the outage"
        assert await stopped(bridge) == 0, bridge.stderr
    assert telegram.token not in bridge.stderr


async def test_sigterm_while_waiting_to_connect_exits_0(
    tmp_path: Path, spawn: Spawn, notify_socket: NotifyListener
) -> None:
    async with FakeAgentServer() as agents, FakeTelegram() as telegram:
        telegram.fail_always("getMe", FakeError(502, "Bad Gateway"))
        config = write_config(tmp_path, agents=agents, telegram=telegram)
        bridge = await launch(spawn, config, notify_socket)
        await wait_status(notify_socket, "telegram unavailable", "retrying in")
        bridge.signal(signal.SIGTERM)
        assert await bridge.wait(within=5) == 0, bridge.stderr
    assert notify_socket.with_key("READY") == []
    assert "start interrupted by SIGTERM" in bridge.stderr
    assert "Traceback" not in bridge.stderr


async def test_a_database_that_cannot_be_opened_yet_is_waited_for(
    tmp_path: Path, spawn: Spawn, notify_socket: NotifyListener
) -> None:
    async with FakeAgentServer() as agents, FakeTelegram() as telegram:
        config = write_config(tmp_path, agents=agents, telegram=telegram)
        blocker = tmp_path / "bridge.db"
        blocker.mkdir()  # SQLite cannot open a folder: "unable to open database file"
        bridge = await launch(spawn, config, notify_socket)
        status = await wait_status(notify_socket, "Starting: database unavailable", "retrying in")
        assert "unable to open database file" in status
        assert telegram.calls == []  # the store opens first

        blocker.rmdir()
        await notify_socket.wait_for("READY", "1", within=15)
        telegram.push(private_text(ALICE, "stored at last"))
        [reply] = await telegram.wait_sent(chat_id=ALICE.id, within=10)
        assert reply.params["text"] == "echo: stored at last"
        assert await stopped(bridge) == 0, bridge.stderr


async def test_a_refused_slack_token_exits_3_naming_the_key(
    tmp_path: Path, spawn: Spawn, notify_socket: NotifyListener
) -> None:
    async with FakeAgentServer() as agents, FakeSlack() as slack:
        config = write_config(tmp_path, agents=agents, telegram=None, slack=slack)
        config.write_text(config.read_text().replace(slack.bot_token, "xoxb-not-the-right-one"))
        bridge = await launch(spawn, config, notify_socket)
        assert await bridge.wait(within=10) == 3, bridge.stderr
    [line] = [line for line in bridge.stderr_lines if "cannot start" in line]
    assert line.endswith("cannot start: slack: invalid_auth: check slack.bot_token"), line
    assert "xoxb-not-the-right-one" not in bridge.stderr
    assert notify_socket.with_key("READY") == []


async def test_sighup_reloads_the_allowlist_without_reconnecting(
    tmp_path: Path, spawn: Spawn, notify_socket: NotifyListener
) -> None:
    async with FakeAgentServer() as agents, FakeTelegram() as telegram:
        config = write_config(tmp_path, agents=agents, telegram=telegram)
        original = config.read_text()
        only_alice = original.replace('allowed_users = ["*"]', f"allowed_users = [{ALICE.id}]")
        config.write_text(only_alice)
        bridge = await start(spawn, config, notify_socket, **FAST)

        telegram.push(private_text(BOB, "let me in"))
        [refusal] = await telegram.wait_sent(chat_id=BOB.id, within=10)
        assert "this bot is private" in refusal.params["text"]

        config.write_text(
            only_alice.replace(
                f"allowed_users = [{ALICE.id}]", f"allowed_users = [{ALICE.id}, {BOB.id}]"
            )
        )
        bridge.signal(signal.SIGHUP)
        [reloading] = await notify_socket.wait_for("RELOADING", "1", within=10)
        assert int(reloading.fields["MONOTONIC_USEC"]) > 0
        ready = await notify_socket.wait_for("READY", "1", count=2, within=10)
        assert ready[-1].at > reloading.at
        assert ready[-1].fields["STATUS"].startswith("Running: telegram connected")
        await bridge.wait_log(lambda line: "config reloaded: telegram.allowed_users" in line)

        telegram.push(private_text(BOB, "now?"))
        sent = await telegram.wait_sent(chat_id=BOB.id, count=2, within=10)
        assert sent[1].params["text"] == "echo: now?"
        # The same connection: no second getMe, no second deleteWebhook.
        assert len(telegram.calls_of("getMe")) == 1
        assert len(telegram.calls_of("deleteWebhook")) == 1

        # An invalid edit is logged, naming the key, and ignored.
        config.write_text(original.replace('allowed_users = ["*"]', 'allowed_users = ["bob"]'))
        bridge.signal(signal.SIGHUP)
        await notify_socket.wait_for("READY", "1", count=3, within=10)
        await bridge.wait_log(lambda line: "reload refused" in line)
        assert any(
            "reload: config: telegram.allowed_users" in line for line in bridge.stderr_lines
        ), bridge.stderr
        telegram.push(private_text(BOB, "still in?"))
        sent = await telegram.wait_sent(chat_id=BOB.id, count=3, within=10)
        assert sent[2].params["text"] == "echo: still in?"
        assert len(telegram.calls_of("getMe")) == 1
        assert await stopped(bridge) == 0, bridge.stderr


async def test_sighup_reloads_messages_and_names_what_needs_a_restart(
    tmp_path: Path, spawn: Spawn, notify_socket: NotifyListener
) -> None:
    async with FakeAgentServer() as agents, FakeSlack() as slack:
        config = write_config(tmp_path, agents=agents, telegram=None, slack=slack, grace=10)
        original = config.read_text()
        bridge = await start(spawn, config, notify_socket, **FAST)
        config.write_text(
            original.replace("shutdown_grace = 10", "shutdown_grace = 11")
            + '\n[messages]\ninsufficient_balance = "Out of credit: top it up, please."\n'
        )
        bridge.signal(signal.SIGHUP)
        await notify_socket.wait_for("READY", "1", count=2, within=10)
        await bridge.wait_log(lambda line: "config reloaded: messages changed" in line)
        await bridge.wait_log(lambda line: "restart is needed" in line and "[daemon]" in line)
        # The new text is what the user reads when the agent fails.
        agents.script(FakeResponse(status=402, json={"detail": "Insufficient balance"}))
        envelope = await slack.send_event(slack.mention("anyone there?"))
        await slack.wait_ack(envelope)
        post = await slack.wait_call("chat.postMessage", within=10)
        assert "Out of credit: top it up, please." in str(post.args)
        assert slack.connection_count == 1
        assert len(slack.calls_to("auth.test")) == 1
        assert await stopped(bridge) == 0, bridge.stderr


async def test_another_poller_of_the_bot_token_exits_3_saying_what_to_do(
    tmp_path: Path, spawn: Spawn, notify_socket: NotifyListener
) -> None:
    async with FakeAgentServer() as agents, FakeTelegram() as telegram:
        # Another program (or a bridge on another database) polls the same token.
        async def rogue() -> None:
            async with httpx.AsyncClient() as client:
                while True:
                    await client.post(
                        f"{telegram.api_url}{telegram.token}/getUpdates", data={"timeout": "1"}
                    )

        poller = asyncio.create_task(rogue())
        try:
            await telegram.wait_calls("getUpdates")
            config = write_config(tmp_path, agents=agents, telegram=telegram)
            bridge = await launch(spawn, config, notify_socket)
            assert await bridge.wait(within=20) == 3, bridge.stderr
        finally:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
    [line] = [line for line in bridge.stderr_lines if "cannot start" in line]
    assert "another process is polling this bot token (409 Conflict)" in line, line
    assert telegram.token not in bridge.stderr
    assert notify_socket.with_key("READY") == []
