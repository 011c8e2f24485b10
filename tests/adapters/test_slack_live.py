"""Streamed answers on Slack: ``chat.startStream`` / ``appendStream`` / ``stopStream`` in
the question's thread, finished by the reply itself. The real slack-bolt and slack_sdk
stack against `FakeSlack` (Web API + Socket Mode), the real dispatcher and SQLite store,
a `ScriptedAgent` held by events; the test waits for the fake's calls, never sleeps."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import bridge.stream
from adapters.slack import SlackAdapter
from adapters.text import split_markdown
from bridge.app import Core
from bridge.chat import LIVE_REF
from bridge.config import Config, parse_config
from tests.fakes.scripted_agent import ScriptedAgent, open_scripted_core, out_of_credit
from tests.fakes.slack import BOT_USER_ID, TEAM_ID, FakeSlack

LIMIT = 12_000


@pytest.fixture(autouse=True)
def quick_live(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bridge.stream, "LIVE_INTERVAL", 0.05)


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as server:
        yield server


def make_config(tmp_path: Path, slack: FakeSlack) -> Config:
    return parse_config(
        {
            "storage": {"url": f"sqlite+aiosqlite:///{tmp_path}/bridge.db"},
            "agents": {"default": {"backend": "echo"}},
            "slack": {
                "bot_token": slack.bot_token,
                "app_token": slack.app_token,
                "api_url": slack.api_url,
            },
        },
        base_dir=tmp_path,
        environ={},
    )


@dataclass
class Bridge:
    core: Core
    adapter: SlackAdapter
    slack: FakeSlack

    async def ask(self, text: str, channel: str = "C1") -> dict[str, Any]:
        """A mention in ``channel``, acknowledged (committed); not yet answered."""
        mention = self.slack.mention(text, channel=channel)
        await self.slack.wait_ack(await self.slack.send_event(mention))
        return mention

    def bot_messages(self, channel: str = "C1") -> list[dict[str, Any]]:
        return [m for m in self.slack.messages.get(channel, []) if m.get("user") == BOT_USER_ID]


@contextlib.asynccontextmanager
async def running(config: Config, slack: FakeSlack, agent: ScriptedAgent) -> AsyncIterator[Bridge]:
    assert config.slack is not None
    async with open_scripted_core(config, agent) as core:
        adapter = SlackAdapter(
            core.dispatcher, config.slack, ping_interval=2.0, watch_interval=0.02
        )
        core.dispatcher.register(adapter)
        connections = slack.connection_count
        async with adapter:
            await slack.wait_connected(connections + 1)
            await core.dispatcher.resume()
            yield Bridge(core, adapter, slack)


def stored(tmp_path: Path) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(tmp_path / "bridge.db")) as db:
        return db.execute("SELECT status, error_kind, reply_text, meta FROM messages").fetchall()


async def test_a_streamed_answer_is_one_message_ending_as_the_reply(
    tmp_path: Path, slack: FakeSlack
) -> None:
    first, second = asyncio.Event(), asyncio.Event()
    agent = ScriptedAgent()
    agent.play("Hello", first, " wor", "ld", second, " **again**!")
    async with running(make_config(tmp_path, slack), slack, agent) as bridge:
        mention = await bridge.ask("hi")
        start = await slack.wait_call("chat.startStream")
        assert start.args["channel"] == "C1"
        assert start.args["thread_ts"] == mention["ts"]
        assert start.args["markdown_text"] == "Hello"
        # In a channel Slack wants the recipient: the workspace and the asker.
        assert (start.args["recipient_team_id"], start.args["recipient_user_id"]) == (TEAM_ID, "U1")
        first.set()
        append = await slack.wait_call("chat.appendStream")
        assert append.args["markdown_text"] == " world"  # only what is new
        assert bridge.bot_messages()[0]["text"] == "Hello world"
        assert slack.calls_to("chat.stopStream") == []
        second.set()
        await bridge.core.dispatcher.wait_idle()
    [message] = bridge.bot_messages()
    assert message["text"] == "Hello world **again**!"
    assert message["thread_ts"] == mention["ts"]
    [stop] = slack.calls_to("chat.stopStream")
    # The last text was appended before the end (the dispatcher shows it): the stop
    # only finishes the message.
    assert slack.calls_to("chat.appendStream")[-1].args["markdown_text"] == " **again**!"
    assert "markdown_text" not in stop.args
    # The reply's metadata is on the streamed message: a later read-back finds it.
    assert stop.args["metadata"]["event_payload"]["piece"] == 0
    assert slack.calls_to("chat.postMessage") == []
    assert slack.streaming == set()
    [(status, error_kind, reply_text, meta)] = stored(tmp_path)
    assert (status, error_kind, reply_text) == ("done", None, message["text"])
    assert json.loads(meta)[LIVE_REF] == message["ts"]


async def test_a_long_streamed_answer_continues_in_new_messages(
    tmp_path: Path, slack: FakeSlack
) -> None:
    paragraphs = [f"Paragraph {i}. " + "word " * 180 + "\n\n" for i in range(30)]  # ~28k chars
    agent = ScriptedAgent()
    agent.play(*paragraphs)
    async with running(make_config(tmp_path, slack), slack, agent) as bridge:
        await bridge.ask("tell me everything")
        await slack.wait_call("chat.stopStream")
        await bridge.core.dispatcher.wait_idle()
    [(_, _, final, _)] = stored(tmp_path)
    assert final.startswith("Paragraph 0.") and len(final) > 2 * LIMIT
    pieces = split_markdown(final, LIMIT)
    assert len(pieces) == 3
    texts = [m["text"] for m in bridge.bot_messages()]
    assert texts == pieces
    assert len(slack.calls_to("chat.startStream")) == 1
    assert [c.markdown for c in slack.calls_to("chat.postMessage")] == pieces[1:]


async def test_a_stream_that_does_not_start_falls_back_to_one_post(
    tmp_path: Path, slack: FakeSlack
) -> None:
    slack.fail("chat.startStream", error="not_allowed_token_type")
    held = asyncio.Event()
    agent = ScriptedAgent()
    agent.play("Hello", held, " world")
    async with running(make_config(tmp_path, slack), slack, agent) as bridge:
        await bridge.ask("hi")
        await slack.wait_call("chat.startStream")
        held.set()
        await slack.wait_call("chat.postMessage")
        await bridge.core.dispatcher.wait_idle()
    assert [m["text"] for m in bridge.bot_messages()] == ["Hello world"]
    assert len(slack.calls_to("chat.startStream")) == 1  # not tried again for each text
    assert slack.calls_to("chat.appendStream") == []


async def test_an_error_mid_stream_ends_the_streamed_message_with_its_text(
    tmp_path: Path, slack: FakeSlack
) -> None:
    held = asyncio.Event()
    agent = ScriptedAgent()
    agent.play("Half an answer", held, out_of_credit())
    async with running(make_config(tmp_path, slack), slack, agent) as bridge:
        await bridge.ask("hi")
        await slack.wait_call("chat.startStream")
        held.set()
        await slack.wait_call("chat.stopStream")
        await bridge.core.dispatcher.wait_idle()
    expected = "Half an answer\n\nThe agent is out of credit."
    assert [m["text"] for m in bridge.bot_messages()] == [expected]
    assert slack.calls_to("chat.postMessage") == []
    [(status, error_kind, reply_text, _)] = stored(tmp_path)
    assert (status, error_kind, reply_text) == ("failed", "insufficient_balance", expected)


async def test_a_final_text_that_differs_from_the_stream_replaces_it(
    tmp_path: Path, slack: FakeSlack
) -> None:
    held = asyncio.Event()
    agent = ScriptedAgent()
    agent.play("Draft words", held, " more", final="The agent's own final text")
    async with running(make_config(tmp_path, slack), slack, agent) as bridge:
        await bridge.ask("hi")
        await slack.wait_call("chat.startStream")
        held.set()
        await slack.wait_call("chat.update")
        await bridge.core.dispatcher.wait_idle()
    assert [m["text"] for m in bridge.bot_messages()] == ["The agent's own final text"]
    assert slack.streaming == set()
    assert slack.calls_to("chat.postMessage") == []


async def test_after_a_crash_mid_stream_the_answer_replaces_the_dangling_message(
    tmp_path: Path, slack: FakeSlack
) -> None:
    config = make_config(tmp_path, slack)
    first, never = asyncio.Event(), asyncio.Event()
    agent = ScriptedAgent()
    agent.play("Half a", first, " thought", never)
    # The stop at shutdown is lost, as in a crash: the stream stays open.
    slack.fail("chat.stopStream", error="internal_error")
    async with running(config, slack, agent) as bridge:
        await bridge.ask("hi")
        await slack.wait_call("chat.startStream")
        first.set()
        # The append comes after the ts was stored (both in one `show`, in order).
        await slack.wait_call("chat.appendStream")
    [(status, _, _, meta)] = stored(tmp_path)
    [dangling] = bridge.bot_messages()
    assert status == "running" and json.loads(meta)[LIVE_REF] == dangling["ts"]
    assert (
        slack.messages["C1"][0]["channel"] if False else "C1",
        dangling["ts"],
    ) in slack.streaming

    again = ScriptedAgent()
    again.play("A whole", " new answer")
    async with running(config, slack, again) as bridge:
        await bridge.core.dispatcher.wait_idle()
        await slack.wait_call("chat.update")
    # One message in the thread: the dangling one, now the complete answer.
    assert [m["text"] for m in bridge.bot_messages()] == ["A whole new answer"]
    assert bridge.bot_messages()[0]["ts"] == dangling["ts"]
    assert slack.calls_to("chat.postMessage") == []
    assert len(slack.calls_to("chat.startStream")) == 1  # no second stream beside it
    assert slack.streaming == set()
    assert [row[0] for row in stored(tmp_path)] == ["done"]
