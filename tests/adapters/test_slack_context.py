"""Thread context: the bot's first mention in a thread people started carries the
thread's earlier messages to the agent, read once with ``conversations.replies``;
end to end against the fake Slack, plus the formatting rules on their own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from adapters.slack_context import CONTEXT_MESSAGES, format_context
from adapters.slack_events import SlackIdentity
from bridge.config import Config
from bridge.model import agent_input
from tests.adapters.test_slack import make_config, running
from tests.fakes.agents import FakeAgentServer
from tests.fakes.slack import BOT_ID, BOT_USER_ID, TEAM_ID, FakeSlack

IDENTITY = SlackIdentity(TEAM_ID, "Fake Team", BOT_USER_ID, BOT_ID, "agent-bridge")


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as server:
        yield server


@pytest.fixture
async def agents() -> AsyncIterator[FakeAgentServer]:
    async with FakeAgentServer() as server:
        yield server


def people_talking(slack: FakeSlack, channel: str = "C1") -> dict[str, Any]:
    """A thread of three messages without the bot; returns its root."""
    root = {
        "type": "message",
        "user": "U2",
        "ts": slack.next_user_ts(),
        "text": "Shall we ship <https://x.io/r/7|release 7> on Friday?",
        "user_profile": {"display_name": "Dana", "real_name": "Dana Q"},
    }
    slack.add_message(channel, {**root, "thread_ts": root["ts"]})
    slack.add_message(
        channel,
        {
            "type": "message",
            "user": "U3",
            "ts": slack.next_user_ts(),
            "thread_ts": root["ts"],
            "text": "Only if the migration is done &amp; tested",
        },
    )
    slack.add_message(
        channel,
        {
            "type": "message",
            "subtype": "bot_message",
            "bot_id": "BCI",
            "username": "ci-bot",
            "ts": slack.next_user_ts(),
            "thread_ts": root["ts"],
            "text": "Build 412 passed",
        },
    )
    return root


EXPECTED = (
    "Dana: Shall we ship release 7 (https://x.io/r/7) on Friday?\n"
    "U3: Only if the migration is done & tested\n"
    "ci-bot: Build 412 passed"
)


async def test_the_first_mention_in_a_thread_with_history_gives_the_agent_its_messages(
    tmp_path: Path, slack: FakeSlack, agents: FakeAgentServer
) -> None:
    async with running(make_config(tmp_path, slack, agents), slack) as bridge:
        root = people_talking(slack)
        mention = slack.mention("what do you think?", thread_ts=root["ts"])
        await bridge.deliver(mention)
        # Later turns: the agent's session has it; the thread is not read again.
        await bridge.deliver(slack.mention("and on Monday?", thread_ts=root["ts"]))
        await bridge.deliver(slack.message("and Tuesday?", thread_ts=root["ts"]))

    messages = [c.json["message"] for c in agents.chat_calls]
    assert messages == [
        "Earlier messages, for context:\n<<<\n" + EXPECTED + "\n>>>\n\nwhat do you think?",
        "and on Monday?",
        "and Tuesday?",
    ]
    assert messages[0] == agent_input("what do you think?", EXPECTED)
    [read] = slack.calls_to("conversations.replies")
    assert read.args["channel"] == "C1" and read.args["ts"] == root["ts"]
    assert read.args["latest"] == mention["ts"]
    assert int(read.args["limit"]) == CONTEXT_MESSAGES
    assert agents.chat_calls[1].json["session_id"] == "sess-1"
    assert [p.args["thread_ts"] for p in bridge.posts()] == [root["ts"]] * 3


async def test_the_context_keeps_the_newest_messages_within_context_chars(
    tmp_path: Path, slack: FakeSlack, agents: FakeAgentServer
) -> None:
    config = make_config(tmp_path, slack, agents, context_chars=60)
    async with running(config, slack) as bridge:
        root = people_talking(slack)
        await bridge.deliver(slack.mention("so?", thread_ts=root["ts"]))
    [call] = agents.chat_calls
    context = call.json["message"].split("<<<\n", 1)[1].split("\n>>>", 1)[0]
    assert len(context) <= 60
    assert context.endswith("\nci-bot: Build 412 passed")
    assert context.startswith("…") and "Dana" not in context


async def test_when_the_thread_cannot_be_read_the_question_goes_without_it(
    tmp_path: Path, slack: FakeSlack, agents: FakeAgentServer
) -> None:
    slack.ratelimit("conversations.replies", retry_after=30)
    async with running(make_config(tmp_path, slack, agents), slack) as bridge:
        root = people_talking(slack)
        envelope = await bridge.deliver(slack.mention("still there?", thread_ts=root["ts"]))
    assert slack.acked(envelope)
    assert [c.json["message"] for c in agents.chat_calls] == ["still there?"]
    assert bridge.replies() == ["echo: still there?"]
    assert len(slack.calls_to("conversations.replies")) == 1  # not waited for, not retried


async def test_no_thread_read_for_a_new_thread_a_dm_or_with_context_chars_0(
    tmp_path: Path, slack: FakeSlack, agents: FakeAgentServer
) -> None:
    async with running(make_config(tmp_path, slack, agents), slack) as bridge:
        await bridge.deliver(slack.mention("top-level, opens its own thread"))
        dm = slack.message("dm root", channel="D1", channel_type="im")
        await bridge.deliver(dm)
        await bridge.deliver(
            slack.message("dm thread", channel="D1", channel_type="im", thread_ts=dm["ts"])
        )
    assert slack.calls_to("conversations.replies") == []

    config = make_config(tmp_path, slack, agents, context_chars=0)
    async with running(config, slack) as bridge:
        root = people_talking(slack, channel="C7")
        await bridge.deliver(slack.mention("no context please", channel="C7", thread_ts=root["ts"]))
    assert slack.calls_to("conversations.replies") == []
    assert agents.chat_calls[-1].json["message"] == "no context please"


async def test_max_input_chars_counts_what_the_user_typed_not_the_context(
    tmp_path: Path, slack: FakeSlack, agents: FakeAgentServer
) -> None:
    config: Config = make_config(tmp_path, slack, agents)
    dispatcher = config.dispatcher.model_copy(update={"max_input_chars": 20})
    config = config.model_copy(update={"dispatcher": dispatcher})
    async with running(config, slack) as bridge:
        root = people_talking(slack)
        await bridge.deliver(slack.mention("short question", thread_ts=root["ts"]))
        await bridge.deliver(slack.mention("a question far too long to take", thread_ts=root["ts"]))
    assert len(agents.chat_calls) == 1
    assert agents.chat_calls[0].json["message"].endswith("\n>>>\n\nshort question")
    assert "too long" in bridge.replies()[1]


def test_format_context_orders_names_and_cuts_from_the_oldest() -> None:
    messages: list[object] = [
        {"ts": "1700000000.000300", "user": "U3", "text": "third"},
        {"ts": "1700000000.000100", "user": "U1", "text": "first"},
        {"ts": "1700000000.000200", "user": BOT_USER_ID, "text": "our answer"},
        {"ts": "1700000000.000250", "user": "U4", "text": "", "files": [{"id": "F1"}]},
        {"ts": "1700000000.000260", "user": "U4", "text": "   "},
        {"ts": "1700000000.000400", "user": "U5", "text": "the mention itself"},
        {"ts": "junk", "user": "U6", "text": "junk ts"},
        "not a message",
    ]
    before = "1700000000.000400"
    full = format_context(messages, IDENTITY, before=before, limit=1000)
    assert full == "U1: first\nagent-bridge: our answer\nU4: (shared a file)\nU3: third"
    assert format_context(messages, IDENTITY, before=before, limit=len(full)) == full
    cut = format_context(messages, IDENTITY, before=before, limit=len(full) - 1)
    assert cut == "…: first\nagent-bridge: our answer\nU4: (shared a file)\nU3: third"
    assert len(cut) == len(full) - 1
    assert format_context(messages, IDENTITY, before=before, limit=9) == "U3: third"
    assert format_context(messages, IDENTITY, before=before, limit=4) == "…ird"
    assert format_context(messages[5:], IDENTITY, before=before, limit=100) is None


def test_agent_input_without_context_is_the_text_alone() -> None:
    assert agent_input("hello", None) == "hello"
    assert agent_input("hello", "  ") == "hello"
    assert agent_input("hello", 42) == "hello"
    assert agent_input("hello", "A: hi") == (
        "Earlier messages, for context:\n<<<\nA: hi\n>>>\n\nhello"
    )
