"""The Slack adapter end to end: the real slack-bolt and slack_sdk stack against the fake
Slack (Web API + Socket Mode), the real dispatcher and SQLite store, and the fake agent
API. Synchronisation is on Slack's own signals: the ack of an envelope (sent only after
the message is committed) and the dispatcher going idle (the reply is posted)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from adapters.base import AdapterState
from adapters.slack import MARKDOWN_LIMIT, TEXT_FILES, TEXT_REFUSED, TEXT_RESET, SlackAdapter
from bridge.app import Core, open_core
from bridge.config import Config, parse_config
from bridge.errors import AdapterError, CredentialsRejected
from bridge.model import ConversationKey, InboxMessage, MessageStatus, Reply
from tests.fakes.agents import FAKE_AGENT_ID, FAKE_API_KEY, FakeAgentServer, FakeResponse
from tests.fakes.slack import BOT_USER_ID, TEAM_ID, ApiCall, FakeSlack, signed_headers
from tests.ports import free_port


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as server:
        yield server


@pytest.fixture
async def agents() -> AsyncIterator[FakeAgentServer]:
    async with FakeAgentServer() as server:
        yield server


def make_config(
    tmp_path: Path, slack: FakeSlack, agents: FakeAgentServer, **overrides: Any
) -> Config:
    section: dict[str, Any] = {
        "bot_token": slack.bot_token,
        "app_token": slack.app_token,
        "api_url": slack.api_url,
    }
    section.update(overrides)
    return parse_config(
        {
            "storage": {"url": f"sqlite+aiosqlite:///{tmp_path}/bridge.db"},
            "agents": {
                "default": {
                    "backend": "thinnest",
                    "agent_id": FAKE_AGENT_ID,
                    "api_key": FAKE_API_KEY,
                    "base_url": agents.url,
                    "timeout": 5,
                    "max_retry_wait": 1,
                },
                "analytics": {"backend": "echo"},
            },
            "slack": section,
        },
        base_dir=tmp_path,
        environ={},
    )


@dataclass
class Bridge:
    core: Core
    adapter: SlackAdapter
    slack: FakeSlack

    async def deliver(self, event: dict[str, Any], **kwargs: Any) -> str:
        """Send an event; wait for its ack (the message is committed by then) and for
        the dispatcher to finish with it (the reply is posted by then)."""
        envelope = await self.slack.send_event(event, **kwargs)
        await self.slack.wait_ack(envelope)
        await self.core.dispatcher.wait_idle()
        return envelope

    def posts(self) -> list[ApiCall]:
        return self.slack.calls_to("chat.postMessage")

    def replies(self) -> list[str]:
        return [c.markdown for c in self.posts()]


@contextlib.asynccontextmanager
async def running(config: Config, slack: FakeSlack, **tuning: Any) -> AsyncIterator[Bridge]:
    assert config.slack is not None
    tuning = {"ping_interval": 2.0, "watch_interval": 0.02, "connect_timeout": 5.0, **tuning}
    async with open_core(config) as core:
        adapter = SlackAdapter(core.dispatcher, config.slack, **tuning)
        core.dispatcher.register(adapter)
        connections = slack.connection_count
        async with adapter:
            if config.slack.mode == "socket":
                await slack.wait_connected(connections + 1)
            yield Bridge(core, adapter, slack)
            await core.dispatcher.wait_idle()


# --- channels -------------------------------------------------------------------------


async def test_channel_mention_is_answered_in_its_thread(
    tmp_path: Path, slack: FakeSlack, agents: FakeAgentServer
) -> None:
    async with running(make_config(tmp_path, slack, agents), slack) as bridge:
        assert bridge.adapter.state is AdapterState.CONNECTED
        mention = slack.mention("what is <https://x.io|x> &amp; y?", channel="C1")
        await bridge.deliver(mention)
        conversation = await bridge.core.store.get_conversation(
            ConversationKey("slack", TEAM_ID, "C1", mention["ts"])
        )
        assert conversation is not None and conversation.turns == 1

    # The mention is stripped and Slack markup turned into text for the agent.
    assert [c.json["message"] for c in agents.chat_calls] == ["what is x (https://x.io) & y?"]
    [post] = bridge.posts()
    assert post.args["channel"] == "C1"
    assert post.args["thread_ts"] == mention["ts"]  # a top-level mention opens a thread
    assert post.markdown == "echo: what is x (https://x.io) & y?"
    # Under the answer, the feedback buttons: its Markdown is then a block (Slack
    # refuses markdown_text beside blocks) and ``text`` the notification fallback.
    assert "markdown_text" not in post.args
    assert post.args["text"] == post.markdown
    assert [v.split(":")[0] for v in post.feedback_values] == ["good", "bad"]
    assert post.token == slack.bot_token
    # Answered within dispatcher.working_after: no working indicator was needed.
    assert slack.calls_to("reactions.add") == []


async def test_a_slow_answer_shows_the_working_reaction_until_it_is_posted(
    tmp_path: Path, slack: FakeSlack, agents: FakeAgentServer
) -> None:
    config = make_config(tmp_path, slack, agents)
    config = config.model_copy(
        update={"dispatcher": config.dispatcher.model_copy(update={"working_after": 0.05})}
    )
    agents.hold()
    async with running(config, slack) as bridge:
        mention = slack.mention("think hard", channel="C1")
        envelope = await slack.send_event(mention)
        await slack.wait_ack(envelope)
        added = await slack.wait_call("reactions.add")
        assert slack.calls_to("reactions.remove") == []  # still working
        assert bridge.posts() == []
        agents.release()
        await bridge.core.dispatcher.wait_idle()
    # A reaction on the user's message, removed once the answer is there.
    [removed] = slack.calls_to("reactions.remove")
    assert added.args == removed.args
    assert added.args["timestamp"] == mention["ts"] and added.args["channel"] == "C1"
    assert bridge.replies() == ["echo: think hard"]
    # A channel thread is no assistant thread: no status there.
    assert slack.calls_to("assistant.threads.setStatus") == []


async def test_thread_followups_without_mention_keep_one_session(
    tmp_path: Path, slack: FakeSlack, agents: FakeAgentServer
) -> None:
    async with running(make_config(tmp_path, slack, agents), slack) as bridge:
        root = slack.mention("first")
        await bridge.deliver(root)
        await bridge.deliver(slack.message("second", thread_ts=root["ts"]))
        # A thread the bot is not part of, and a top-level message: not answered.
        other = slack.message("just people talking")
        await bridge.deliver(other)
        await bridge.deliver(slack.message("in their thread", thread_ts=other["ts"]))

    assert bridge.replies() == ["echo: first", "echo: second"]
    assert [p.args["thread_ts"] for p in bridge.posts()] == [root["ts"], root["ts"]]
    calls = agents.chat_calls
    assert len(calls) == 2
    assert "session_id" not in calls[0].json
    assert calls[1].json["session_id"] == "sess-1"  # the thread's session, continued


async def test_thread_followups_off_needs_a_mention(
    tmp_path: Path, slack: FakeSlack, agents: FakeAgentServer
) -> None:
    config = make_config(tmp_path, slack, agents, thread_followups=False)
    async with running(config, slack) as bridge:
        root = slack.mention("first")
        await bridge.deliver(root)
        await bridge.deliver(slack.message("no mention", thread_ts=root["ts"]))
        await bridge.deliver(slack.mention("with mention", thread_ts=root["ts"]))
    assert bridge.replies() == ["echo: first", "echo: with mention"]


async def test_mention_inside_an_existing_thread_joins_that_thread(
    tmp_path: Path, slack: FakeSlack, agents: FakeAgentServer
) -> None:
    # Without the thread's earlier messages (test_slack_context.py has them).
    config = make_config(tmp_path, slack, agents, context_chars=0)
    async with running(config, slack) as bridge:
        human_root = slack.message("people started this")
        await bridge.deliver(human_root)
        mention = slack.mention("help us", thread_ts=human_root["ts"])
        await bridge.deliver(mention)
        await bridge.deliver(slack.message("and then?", thread_ts=human_root["ts"]))

    assert bridge.replies() == ["echo: help us", "echo: and then?"]
    assert {p.args["thread_ts"] for p in bridge.posts()} == {human_root["ts"]}
    assert agents.chat_calls[1].json["session_id"] == "sess-1"


async def test_channel_agents_pick_the_agent_per_channel(
    tmp_path: Path, slack: FakeSlack, agents: FakeAgentServer
) -> None:
    config = make_config(tmp_path, slack, agents, channel_agents={"C9": "analytics"})
    async with running(config, slack) as bridge:
        mention = slack.mention("numbers please", channel="C9")
        await bridge.deliver(mention)
        conversation = await bridge.core.dispatcher.conversation(
            ConversationKey("slack", TEAM_ID, "C9", mention["ts"])
        )
    assert conversation is not None and conversation.agent == "analytics"
    assert bridge.replies() == ["numbers please"]  # the echo agent, not the thinnest one
    assert agents.chat_calls == []


# --- DMs ------------------------------------------------------------------------------


async def test_dm_top_level_is_one_conversation_and_a_dm_thread_is_its_own(
    tmp_path: Path, slack: FakeSlack, agents: FakeAgentServer
) -> None:
    async with running(make_config(tmp_path, slack, agents), slack) as bridge:
        first = slack.message("hi", channel="D1", channel_type="im")
        await bridge.deliver(first)
        await bridge.deliver(slack.message("again", channel="D1", channel_type="im"))
        await bridge.deliver(
            slack.message("side topic", channel="D1", channel_type="im", thread_ts=first["ts"])
        )

    posts = bridge.posts()
    assert bridge.replies() == ["echo: hi", "echo: again", "echo: side topic"]
    assert "thread_ts" not in posts[0].args and "thread_ts" not in posts[1].args
    assert posts[2].args["thread_ts"] == first["ts"]
    calls = agents.chat_calls
    assert calls[1].json["session_id"] == "sess-1"  # top-level DM: one conversation
    assert "session_id" not in calls[2].json  # the DM thread starts its own


# --- exactly once ---------------------------------------------------------------------


async def test_a_mention_delivered_as_app_mention_and_as_message_is_answered_once(
    tmp_path: Path, slack: FakeSlack, agents: FakeAgentServer
) -> None:
    async with running(make_config(tmp_path, slack, agents), slack) as bridge:
        root = slack.mention("start")
        await bridge.deliver(root)
        # In a thread with a conversation, the same follow-up arrives both ways.
        ts = slack.next_user_ts()
        as_message = slack.message(f"<@{BOT_USER_ID}> more", ts=ts, thread_ts=root["ts"])
        as_mention = slack.mention("more", ts=ts, thread_ts=root["ts"])
        await bridge.deliver(as_message)
        await bridge.deliver(as_mention)
        # In a DM (no app_mention there), the same message twice under two event ids.
        dm = slack.message("dm", channel="D1", channel_type="im")
        await bridge.deliver(dm)
        await bridge.deliver(dict(dm))

    assert bridge.replies() == ["echo: start", "echo: more", "echo: dm"]
    assert len(agents.chat_calls) == 3


async def test_a_retried_envelope_is_acked_and_answered_once(
    tmp_path: Path, slack: FakeSlack, agents: FakeAgentServer
) -> None:
    async with running(make_config(tmp_path, slack, agents), slack) as bridge:
        mention = slack.mention("once")
        await bridge.deliver(mention, event_id="Ev42")
        retry = await bridge.deliver(
            mention, event_id="Ev42", retry_attempt=1, retry_reason="timeout"
        )
        assert slack.acked(retry)
        # After a restart the in-memory memory is gone; the store still knows it.
    async with running(make_config(tmp_path, slack, agents), slack) as bridge:
        await bridge.deliver(mention, event_id="Ev42", retry_attempt=2, retry_reason="timeout")
    assert len(slack.calls_to("chat.postMessage")) == 1
    assert len(agents.chat_calls) == 1


async def test_the_ack_comes_after_the_commit_and_before_the_agent(
    tmp_path: Path, slack: FakeSlack, agents: FakeAgentServer
) -> None:
    async with running(make_config(tmp_path, slack, agents), slack) as bridge:
        agents.hold()
        mention = slack.mention("slow one")
        envelope = await slack.send_event(mention)
        await slack.wait_ack(envelope)
        # Acked while the agent has not answered, and the message is in the store.
        assert await bridge.core.store.is_known("slack", f"{TEAM_ID}:C1:{mention['ts']}")
        await agents.wait_for_calls(1)
        assert bridge.posts() == []
        agents.release()
    assert bridge.replies() == ["echo: slow one"]


def rename_table(path: Path, old: str, new: str) -> None:
    # BEGIN IMMEDIATE: take the write lock up front, so a concurrent write by the
    # store waits on the busy timeout instead of failing the upgrade at once.
    db = sqlite3.connect(path, timeout=10, isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        db.execute(f"ALTER TABLE {old} RENAME TO {new}")
        db.execute("COMMIT")
    finally:
        db.close()


async def test_a_store_failure_leaves_the_event_unacked(
    tmp_path: Path, slack: FakeSlack, agents: FakeAgentServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="adapters.slack")
    async with running(make_config(tmp_path, slack, agents), slack) as bridge:
        # The inbox becomes unwritable (as on a full disk or a broken database).
        # In a thread: the store's own transaction must be able to finish meanwhile.
        await asyncio.to_thread(rename_table, tmp_path / "bridge.db", "messages", "messages_away")
        envelope_event = slack.mention("lost?")
        envelope = await slack.send_event(envelope_event, event_id="EvLost")
        await wait_until(lambda: any("not acknowledging" in r.message for r in caplog.records))
        # An event sent after the failure was handled is acked: the socket works, and
        # the failed envelope never was.
        probe = await slack.send_event(slack.message("x", subtype="message_deleted"))
        await slack.wait_ack(probe)
        assert not slack.acked(envelope)  # Slack will deliver it again
        await asyncio.to_thread(rename_table, tmp_path / "bridge.db", "messages_away", "messages")
        # The redelivery, once the database is back, is accepted and answered.
        await bridge.deliver(
            envelope_event, event_id="EvLost", retry_attempt=1, retry_reason="timeout"
        )
    assert bridge.replies() == ["echo: lost?"]


# --- not answered ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "event",
    [
        {"bot_id": "B0OTHER", "user": "U0BOT2"},
        {"subtype": "bot_message", "bot_id": "B0OTHER", "user": None},
        {"user": BOT_USER_ID},
        {"subtype": "message_changed", "user": None, "message": {"text": "edited"}},
        {"subtype": "message_deleted", "user": None},
        {"subtype": "channel_join"},
    ],
    ids=["bot", "bot_message", "own", "message_changed", "message_deleted", "channel_join"],
)
async def test_messages_that_are_not_answered(
    tmp_path: Path, slack: FakeSlack, agents: FakeAgentServer, event: dict[str, Any]
) -> None:
    async with running(make_config(tmp_path, slack, agents), slack) as bridge:
        dm = slack.message("hello", channel="D1", channel_type="im", **event)
        if dm["user"] is None:
            del dm["user"]
        envelope = await bridge.deliver(dm)
        assert slack.acked(envelope)  # acked, so Slack does not redeliver it
        # The same kind of event in a thread the bot is in.
        root = slack.mention("root")
        await bridge.deliver(root)
        reply_event = slack.message("hello", thread_ts=root["ts"], **event)
        if reply_event["user"] is None:
            del reply_event["user"]
        await bridge.deliver(reply_event)
    assert bridge.replies() == ["echo: root"]
    assert [c.json["message"] for c in agents.chat_calls] == ["root"]


async def test_file_share_of_a_file_slack_does_not_have_answers_the_text_with_a_note(
    tmp_path: Path, slack: FakeSlack, agents: FakeAgentServer
) -> None:
    # F1 is unknown to files.info (deleted meanwhile): a note, and the text is answered.
    # Files that download are in tests/adapters/test_slack_files.py.
    files = [{"id": "F1", "name": "report.pdf", "mimetype": "application/pdf"}]
    async with running(make_config(tmp_path, slack, agents), slack) as bridge:
        with_text = slack.message(
            "summarize this", channel="D1", channel_type="im", subtype="file_share", files=files
        )
        await bridge.deliver(with_text)
        without = slack.message("", channel="D1", channel_type="im", subtype="file_share")
        without["files"] = files
        await bridge.deliver(without)
        await slack.wait_call("chat.postMessage", 2)
    note = "Sorry, I could not download report.pdf from Slack. Please share it again."
    assert bridge.replies() == [f"{note}\n\necho: summarize this", note]
    assert len(agents.chat_calls) == 1
    assert TEXT_FILES  # still said when a file_share carries no file the bridge can read


# --- access ---------------------------------------------------------------------------


async def test_slack_connect_user_from_another_team_is_refused_unless_listed(
    tmp_path: Path, slack: FakeSlack, agents: FakeAgentServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="adapters.slack")
    async with running(make_config(tmp_path, slack, agents), slack) as bridge:
        outsider = slack.mention("let me in", user="UEXT", user_team="T0OTHER")
        await bridge.deliver(outsider)
        note = await slack.wait_call("chat.postEphemeral")
        refused = bridge.core.metrics.registry.get_sample_value(
            "agent_bridge_messages_refused_total", {"platform": "slack"}
        )
    assert note.args["user"] == "UEXT" and note.args["text"] == TEXT_REFUSED
    assert note.args["thread_ts"] == outsider["ts"]
    assert agents.chat_calls == [] and bridge.posts() == []
    assert refused == 1
    assert any("UEXT" in r.message and "T0OTHER" in r.message for r in caplog.records)

    config = make_config(tmp_path, slack, agents, allowed_teams=["T0OTHER"])
    async with running(config, slack) as bridge:
        await bridge.deliver(slack.mention("let me in", user="UEXT", user_team="T0OTHER"))
    assert bridge.replies() == ["echo: let me in"]


async def test_unauthorized_channel_and_user_are_refused(
    tmp_path: Path, slack: FakeSlack, agents: FakeAgentServer
) -> None:
    config = make_config(
        tmp_path, slack, agents, allowed_channels=["C1"], allowed_users=["U1", "U2"]
    )
    async with running(config, slack) as bridge:
        await bridge.deliver(slack.mention("here?", channel="C2", user="U1"))
        await bridge.deliver(slack.mention("me?", channel="C1", user="U3"))
        await bridge.deliver(slack.message("dm?", channel="D1", channel_type="im", user="U1"))
        await slack.wait_call("chat.postEphemeral", 3)
        await bridge.deliver(slack.mention("fine", channel="C1", user="U2"))
    assert [c.args["user"] for c in slack.calls_to("chat.postEphemeral")] == ["U1", "U3", "U1"]
    assert bridge.replies() == ["echo: fine"]
    assert [c.json["message"] for c in agents.chat_calls] == ["fine"]


# --- replies --------------------------------------------------------------------------


async def test_a_long_reply_with_code_is_split_under_the_limit_without_breaking_code(
    tmp_path: Path, slack: FakeSlack, agents: FakeAgentServer
) -> None:
    code = "\n".join(f"    value_{i} = compute({i})  # step {i}" for i in range(300))
    prose = "\n\n".join(f"Paragraph {i}: " + "words " * 60 for i in range(25))
    answer = f"{prose}\n\n```python\n{code}\n```\n\nThat is all."
    assert len(answer) > MARKDOWN_LIMIT
    agents.script(FakeResponse(json={"response": answer, "session_id": "s1", "usage": {}}))
    async with running(make_config(tmp_path, slack, agents), slack) as bridge:
        mention = slack.mention("long please")
        await bridge.deliver(mention)

    pieces = bridge.replies()
    assert len(pieces) >= 2
    assert all(len(p) <= MARKDOWN_LIMIT for p in pieces)
    for piece in pieces:  # every piece renders on its own: fences balanced
        assert len(re.findall(r"^```", piece, flags=re.M)) % 2 == 0
    assert {p.args["thread_ts"] for p in bridge.posts()} == {mention["ts"]}
    joined = "".join(pieces)
    assert "value_0 = compute(0)" in joined and "value_299 = compute(299)" in joined
    assert pieces[-1].endswith("That is all.")


async def test_a_429_from_chat_post_message_is_retried_after_retry_after(
    tmp_path: Path, slack: FakeSlack, agents: FakeAgentServer
) -> None:
    slack.ratelimit("chat.postMessage", retry_after=1)
    async with running(make_config(tmp_path, slack, agents), slack) as bridge:
        started = time.monotonic()
        await bridge.deliver(slack.mention("busy?"))
        elapsed = time.monotonic() - started
        assert await bridge.core.store.count_unfinished() == 0  # delivered
    posts = bridge.posts()
    assert len(posts) == 2 and posts[0].args == posts[1].args  # the same post, retried
    assert elapsed >= 1.0  # Retry-After honoured


async def test_send_reply_raises_adapter_error_when_slack_refuses(
    tmp_path: Path, slack: FakeSlack, agents: FakeAgentServer
) -> None:
    async with running(make_config(tmp_path, slack, agents), slack) as bridge:
        slack.fail("chat.postMessage", error="channel_not_found")
        message = InboxMessage(
            id=99,
            conversation_id=1,
            key=ConversationKey("slack", TEAM_ID, "C404", "1.0"),
            event_id="x",
            sender="U1",
            text="q",
            agent="default",
            status=MessageStatus.ANSWERED,
            reply_to="1.0",
        )
        with pytest.raises(AdapterError, match=r"chat\.postMessage failed: channel_not_found"):
            await bridge.adapter.send_reply(message, Reply("answer"))


async def test_delivery_failure_is_retried_by_the_dispatcher_without_duplicate_pieces(
    tmp_path: Path, slack: FakeSlack, agents: FakeAgentServer
) -> None:
    answer = "\n\n".join(["A" * 7000, "B" * 7000])
    agents.script(FakeResponse(json={"response": answer, "session_id": "s1", "usage": {}}))
    # The first piece is posted, the second fails: the retry posts only the second.
    slack.fail("chat.postMessage", error="internal_error", after=1)
    async with running(make_config(tmp_path, slack, agents), slack) as bridge:
        await bridge.deliver(slack.mention("two pieces"))
    texts = [c.markdown[0] for c in bridge.posts()]
    assert texts == ["A", "B", "B"]


async def test_a_channel_gone_for_good_ends_the_reply_without_retrying(
    tmp_path: Path, slack: FakeSlack, agents: FakeAgentServer
) -> None:
    slack.fail("chat.postMessage", error="channel_not_found", times=5)
    async with running(make_config(tmp_path, slack, agents), slack) as bridge:
        await bridge.deliver(slack.mention("anyone there?"))
        assert await bridge.core.store.count_unfinished() == 0  # ended, not parked
        metrics = bridge.core.metrics.render().decode()
    assert len(slack.calls_to("chat.postMessage")) == 1
    assert 'agent_bridge_messages_failed_total{platform="slack"} 1.0' in metrics


async def test_agent_errors_reach_the_user_as_friendly_text(
    tmp_path: Path, slack: FakeSlack, agents: FakeAgentServer
) -> None:
    agents.script(FakeResponse(status=402, json={"detail": "Insufficient balance"}))
    config = make_config(tmp_path, slack, agents)
    async with running(config, slack) as bridge:
        await bridge.deliver(slack.mention("anything"))
    assert bridge.replies() == [config.messages.insufficient_balance]


async def test_replies_into_one_channel_keep_to_its_posting_rate(
    tmp_path: Path, slack: FakeSlack, agents: FakeAgentServer
) -> None:
    # 1 a second with a burst of 3: five answers in one channel take 2 s or more.
    config = make_config(tmp_path, slack, agents, channel_messages_per_second=1)
    async with running(config, slack) as bridge:
        for i in range(5):
            envelope = await slack.send_event(slack.mention(f"question {i}", channel="C1"))
            await slack.wait_ack(envelope)
        await bridge.core.dispatcher.wait_idle()
    posts = bridge.posts()
    assert len(posts) == 5
    assert posts[4].at - posts[0].at >= 1.5
    assert posts[2].at - posts[0].at < 1.0  # the burst went out at once


async def test_working_indicator_failures_are_ignored(
    tmp_path: Path, slack: FakeSlack, agents: FakeAgentServer
) -> None:
    slack.fail("reactions.add", error="missing_scope")
    config = make_config(tmp_path, slack, agents)
    config = config.model_copy(
        update={"dispatcher": config.dispatcher.model_copy(update={"working_after": 0})}
    )
    async with running(config, slack) as bridge:
        await bridge.deliver(slack.mention("still works"))
    assert len(slack.calls_to("reactions.add")) == 1  # tried, and refused
    assert bridge.replies() == ["echo: still works"]
    assert slack.calls_to("reactions.remove") == []  # nothing was added


# --- reset and the slash command ------------------------------------------------------


async def test_reset_in_a_thread_and_in_a_dm_starts_a_new_session(
    tmp_path: Path, slack: FakeSlack, agents: FakeAgentServer
) -> None:
    async with running(make_config(tmp_path, slack, agents), slack) as bridge:
        root = slack.mention("one")
        await bridge.deliver(root)
        await bridge.deliver(slack.mention("reset", thread_ts=root["ts"]))
        await slack.wait_call("chat.postMessage", 2)
        await bridge.deliver(slack.message("two", thread_ts=root["ts"]))

        await bridge.deliver(slack.message("dm one", channel="D1", channel_type="im"))
        await bridge.deliver(slack.message("Reset", channel="D1", channel_type="im"))
        await slack.wait_call("chat.postMessage", 5)
        await bridge.deliver(slack.message("dm two", channel="D1", channel_type="im"))

    assert bridge.replies() == [
        "echo: one",
        TEXT_RESET,
        "echo: two",
        "echo: dm one",
        TEXT_RESET,
        "echo: dm two",
    ]
    sessions = [c.json.get("session_id") for c in agents.chat_calls]
    assert sessions == [None, None, None, None]  # every turn after a reset starts afresh


async def test_slash_command_help_status_and_reset(
    tmp_path: Path, slack: FakeSlack, agents: FakeAgentServer
) -> None:
    async with running(make_config(tmp_path, slack, agents), slack) as bridge:
        help_ack = await slack.wait_ack(await slack.send_command("help"))
        assert "/agent status" in help_ack["payload"]["text"]

        await bridge.deliver(slack.message("hello", channel="D1", channel_type="im"))
        status = await slack.wait_ack(await slack.send_command("status", channel="D1"))
        assert "1 turn" in status["payload"]["text"]
        assert "session active" in status["payload"]["text"]

        reset = await slack.wait_ack(await slack.send_command("reset", channel="D1"))
        assert reset["payload"]["text"] == TEXT_RESET
        conversation = await bridge.core.dispatcher.conversation(
            ConversationKey("slack", TEAM_ID, "D1", None)
        )
        assert conversation is not None and conversation.session_id is None

        in_channel = await slack.wait_ack(await slack.send_command("reset", channel="C1"))
        assert "in that thread" in in_channel["payload"]["text"]
        refused = await slack.wait_ack(
            await slack.send_command("status", channel="D7", team_id="T0OTHER")
        )
        assert refused["payload"]["text"] == TEXT_REFUSED


# --- connection -----------------------------------------------------------------------


async def test_bad_tokens_fail_start_with_the_reason(
    tmp_path: Path, slack: FakeSlack, agents: FakeAgentServer
) -> None:
    config = make_config(tmp_path, slack, agents, bot_token="xoxb-wrong")
    with pytest.raises(AdapterError, match=r"invalid_auth: check slack\.bot_token") as info:
        async with running(config, slack):
            pass
    assert "xoxb-wrong" not in str(info.value)

    # Refused for good (the daemon exits 3 instead of retrying), not "unreachable".
    config = make_config(tmp_path, slack, agents, app_token="xapp-wrong")
    with pytest.raises(CredentialsRejected, match=r"invalid_auth: check slack\.app_token"):
        async with running(config, slack):
            pass

    config = make_config(tmp_path, slack, agents, app_token=slack.bot_token)
    with pytest.raises(CredentialsRejected, match="app-level token"):
        async with running(config, slack):
            pass


async def test_check_names_the_bot_or_the_token_problem(
    tmp_path: Path, slack: FakeSlack, agents: FakeAgentServer
) -> None:
    config = make_config(tmp_path, slack, agents)
    assert config.slack is not None
    adapter = SlackAdapter(dispatcher=None, config=config.slack)  # type: ignore[arg-type]
    assert await adapter.check() == f"bot @agent-bridge ({BOT_USER_ID}) in Fake Team ({TEAM_ID})"
    bad = config.slack.model_copy(update={"bot_token": SecretStr("xoxb-nope")})
    with pytest.raises(AdapterError, match=r"invalid_auth: check slack\.bot_token"):
        await SlackAdapter(dispatcher=None, config=bad).check()  # type: ignore[arg-type]


async def test_disconnect_and_lost_connection_reconnect_and_state_follows(
    tmp_path: Path, slack: FakeSlack, agents: FakeAgentServer
) -> None:
    async with running(make_config(tmp_path, slack, agents), slack, ping_interval=0.5) as bridge:
        # Slack asks for a reconnect: a new connection is opened, events keep flowing.
        await slack.send_disconnect()
        await slack.wait_connected(2)
        await bridge.deliver(slack.mention("after refresh"))

        # The connection drops and cannot be re-established for a while.
        slack.refuse_connections = True
        await slack.drop_connections()
        await wait_until(lambda: bridge.adapter.state is AdapterState.DISCONNECTED)
        assert not bridge.adapter.healthy
        slack.refuse_connections = False
        await slack.wait_connected(3)
        await wait_until(lambda: bridge.adapter.state is AdapterState.CONNECTED)
        await bridge.deliver(slack.mention("after outage"))
    assert bridge.replies() == ["echo: after refresh", "echo: after outage"]
    assert bridge.adapter.state is AdapterState.STOPPED


async def wait_until(predicate: Any, within: float = 10.0) -> None:
    """Poll a condition the code under test exposes no event for (adapter.state)."""
    for _ in range(int(within / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached in time")


# --- HTTP mode ------------------------------------------------------------------------


SECRET = "fake-signing-secret-0123456789"


async def test_http_mode_verifies_signatures_and_answers(
    tmp_path: Path, slack: FakeSlack, agents: FakeAgentServer
) -> None:
    port = free_port()
    config = make_config(
        tmp_path,
        slack,
        agents,
        mode="http",
        signing_secret=SECRET,
        listen=f"127.0.0.1:{port}",
        path="/slack/events",
    )
    url = f"http://127.0.0.1:{port}/slack/events"
    async with running(config, slack) as bridge, aiohttp.ClientSession() as http:
        challenge = json.dumps({"type": "url_verification", "challenge": "abc123", "token": "t"})
        async with http.post(url, data=challenge, headers=signed_headers(challenge, SECRET)) as r:
            assert r.status == 200
            assert "abc123" in await r.text()

        mention = slack.mention("over http")
        body = json.dumps(slack.event_payload(mention, event_id="EvH1"))
        async with http.post(url, data=body, headers=signed_headers(body, "wrong-secret")) as r:
            assert r.status == 401
        stale = signed_headers(body, SECRET, timestamp=int(time.time()) - 600)
        async with http.post(url, data=body, headers=stale) as r:
            assert r.status == 401
        await bridge.core.dispatcher.wait_idle()
        assert agents.chat_calls == []
        assert not await bridge.core.store.is_known("slack", f"{TEAM_ID}:C1:{mention['ts']}")

        async with http.post(url, data=body, headers=signed_headers(body, SECRET)) as r:
            assert r.status == 200
        # Committed when Slack got its 200.
        assert await bridge.core.store.is_known("slack", f"{TEAM_ID}:C1:{mention['ts']}")
        retry = {
            **signed_headers(body, SECRET),
            "X-Slack-Retry-Num": "1",
            "X-Slack-Retry-Reason": "http_timeout",
        }
        async with http.post(url, data=body, headers=retry) as r:
            assert r.status == 200
        await bridge.core.dispatcher.wait_idle()
    assert bridge.replies() == ["echo: over http"]
