"""Approving people without a restart, end to end: ``agent-bridge run`` (a real
subprocess) against the fake Telegram Bot API and a fake agent; the approval made
by ``agent-bridge users approve`` (another subprocess, on the same database) or by
an admin's ``/approve CODE`` in Telegram."""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.access import APPROVED_TEXT, CODE_ALPHABET, CODE_LENGTH
from tests.daemon.conftest import REPO, BridgeProcess, subprocess_env
from tests.e2e.conftest import fresh_database
from tests.fakes.agents import FakeAgentServer, thinnest_config_toml
from tests.fakes.telegram import (
    ALICE,
    BOB,
    GROUP_ID,
    MALLORY,
    FakeTelegram,
    group_mention,
    private_text,
)

CODE = re.compile(rf"code: ([{CODE_ALPHABET}]{{{CODE_LENGTH}}})\n")


def write_config(
    tmp_path: Path, tg: FakeTelegram, agents: FakeAgentServer, url: str | None = None
) -> Path:
    path = tmp_path / "agent-bridge.toml"
    path.write_text(
        "[storage]\n"
        f'url = "{url or f"sqlite+aiosqlite:///{tmp_path}/bridge.db"}"\n\n'
        f"{thinnest_config_toml(agents.url)}\n"
        "[telegram]\n"
        f'bot_token = "{tg.token}"\n'
        f'api_url = "{tg.api_url}"\n'
        f'allowed_users = [{ALICE.id}, "@{BOB.username}"]\n'
        f"admins = [{ALICE.id}]\n",
        encoding="utf-8",
    )
    return path


async def cli(config: Path, *args: str) -> tuple[int, str, str]:
    """``agent-bridge users ARGS`` in a subprocess: (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        "users",
        *args,
        "--config",
        str(config),
        cwd=str(REPO),
        env=subprocess_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def refusal_code(tg: FakeTelegram, text: str) -> str:
    before = len(tg.sent(MALLORY.id))
    tg.push(private_text(MALLORY, text))
    sent = await tg.wait_sent(MALLORY.id, count=before + 1, within=15)
    match = CODE.search(sent[-1].params["text"])
    assert match is not None, sent[-1].params["text"]
    return match.group(1)


async def started(
    tmp_path: Path, tg: FakeTelegram, agents: FakeAgentServer, url: str | None = None
) -> BridgeProcess:
    bridge = BridgeProcess(write_config(tmp_path, tg, agents, url), subprocess_env())
    await bridge.start()
    try:
        await tg.wait_calls("getUpdates", within=30)
    except TimeoutError:
        raise AssertionError(bridge.stderr) from None
    return bridge


@pytest.fixture(params=["sqlite", "postgresql"])
async def storage_url(request: pytest.FixtureRequest) -> AsyncIterator[str | None]:
    """None: the default SQLite file; else a fresh PostgreSQL database (skipped
    unless AGENT_BRIDGE_TEST_DATABASE_URL names a server)."""
    if request.param == "sqlite":
        yield None
        return
    async with fresh_database("ab_access") as url:
        yield url.render_as_string(hide_password=False)


async def test_a_refused_user_approved_with_the_cli_is_answered_without_a_restart(
    tmp_path: Path, storage_url: str | None
) -> None:
    async with FakeTelegram() as tg, FakeAgentServer() as agents:
        bridge = await started(tmp_path, tg, agents, storage_url)
        try:
            code = await refusal_code(tg, "let me in")
            assert agents.chat_calls == []
            # Listed as waiting, with who asked.
            status, out, err = await cli(bridge.config, "list")
            assert status == 0, err
            assert code in out and f"telegram:{MALLORY.id} @{MALLORY.username}" in out

            status, out, err = await cli(bridge.config, "approve", code.lower())
            assert status == 0, err
            assert f"approved telegram:{MALLORY.id} (@mallory)" in out
            # Told in their private chat, by the CLI through the Bot API.
            told = await tg.wait_sent(MALLORY.id, count=2, within=15)
            assert told[-1].params["text"] == APPROVED_TEXT

            tg.push(private_text(MALLORY, "now may I?"))
            replies = await tg.wait_sent(MALLORY.id, count=3, within=15)
            assert replies[-1].params["text"] == "echo: now may I?"

            # Single use: the same code again is refused, and nothing changes.
            status, out, err = await cli(bridge.config, "approve", code)
            assert status == 1 and "unknown or already used" in err

            # A deny takes effect at the next message too: refused again, with a new code.
            status, out, err = await cli(bridge.config, "deny", f"telegram:{MALLORY.id}")
            assert status == 0 and "removed" in out, err
            assert await refusal_code(tg, "still there?") != code
            status, out, _ = await cli(bridge.config, "log")
            lines = [line.split() for line in out.splitlines()]
            assert [(w[2], w[3]) for w in lines] == [
                ("approve", f"telegram:{MALLORY.id}"),
                ("deny", f"telegram:{MALLORY.id}"),
            ]
            assert all(w[4].startswith("cli:") for w in lines)
            bridge.signal()
            assert await bridge.wait() == 0, bridge.stderr
        finally:
            await bridge.kill()
        assert [c.json["message"] for c in agents.chat_calls] == ["now may I?"]
        assert tg.token not in bridge.stderr


async def test_an_admins_approve_works_and_a_non_admins_is_refused(tmp_path: Path) -> None:
    async with FakeTelegram() as tg, FakeAgentServer() as agents:
        bridge = await started(tmp_path, tg, agents)
        try:
            # Refused in a group: silence, and no code for the group to read.
            tg.push(group_mention(MALLORY, "anyone?"))
            first = await refusal_code(tg, "hello?")
            assert tg.sent(GROUP_ID) == []
            # Asking again within the hour: the same code (told once, then silence).
            tg.push(private_text(MALLORY, "hello again?"))
            tg.push(private_text(BOB, f"/approve {first}"))  # Bob is allowed, not an admin
            [no] = await tg.wait_sent(BOB.id, within=15)
            assert "only the bot's administrators" in no.params["text"]
            assert len(tg.sent(MALLORY.id)) == 1

            tg.push(private_text(ALICE, f"/approve {first}"))
            [yes] = await tg.wait_sent(ALICE.id, within=15)
            assert yes.params["text"].startswith("Approved @mallory")
            told = await tg.wait_sent(MALLORY.id, count=2, within=15)
            assert told[-1].params["text"] == APPROVED_TEXT

            tg.push(private_text(MALLORY, "thanks"))
            replies = await tg.wait_sent(MALLORY.id, count=3, within=15)
            assert replies[-1].params["text"] == "echo: thanks"

            # Approved like a listed user: in groups too.
            tg.push(group_mention(MALLORY, "and here?"))
            [group] = await tg.wait_sent(GROUP_ID, within=15)
            assert group.params["text"] == "echo: and here?"

            tg.push(private_text(ALICE, f"/approve {first}"))  # reused
            again = await tg.wait_sent(ALICE.id, count=2, within=15)
            assert "Not approved: unknown or already used" in again[-1].params["text"]
            status, out, _ = await cli(bridge.config, "log")
            assert status == 0
            assert f"approve  telegram:{MALLORY.id}  telegram:{ALICE.id}" in out
        finally:
            await bridge.kill()
        assert [c.json["message"] for c in agents.chat_calls] == ["thanks", "and here?"]
