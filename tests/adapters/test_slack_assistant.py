"""Slack's AI-app view end to end: assistant threads (prompts, titles, one conversation
each) and the status shown while the agent works, through the real bolt and slack_sdk
stack against the fake Slack, with the real dispatcher, store and fake agent."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import adapters.slack_assistant as slack_assistant
from adapters.slack_assistant import TITLE_CHARS, WORKING_REACTION, thread_title
from bridge.config import Config
from bridge.model import ConversationKey
from tests.adapters.test_slack import make_config, running
from tests.fakes.agents import FakeAgentServer
from tests.fakes.slack import TEAM_ID, FakeSlack

PROMPTS = [
    {"title": "Sales this week", "message": "How did sales go this week?"},
    {"title": "Open tickets", "message": "Which support tickets are still open?"},
]


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as server:
        yield server


@pytest.fixture
async def agents() -> AsyncIterator[FakeAgentServer]:
    async with FakeAgentServer() as server:
        yield server


def at_once(config: Config) -> Config:
    """The working indicator from the first moment (dispatcher.working_after = 0)."""
    dispatcher = config.dispatcher.model_copy(update={"working_after": 0})
    return config.model_copy(update={"dispatcher": dispatcher})


def thread_of(started: dict[str, Any]) -> tuple[str, str]:
    return started["assistant_thread"]["channel_id"], started["assistant_thread"]["thread_ts"]


# --- prompts, title, conversations ----------------------------------------------------


async def test_a_new_assistant_thread_gets_the_configured_prompts_if_the_user_may_ask(
    tmp_path: Path, slack: FakeSlack, agents: FakeAgentServer
) -> None:
    config = make_config(tmp_path, slack, agents, suggested_prompts=PROMPTS, allowed_users=["U1"])
    async with running(config, slack) as bridge:
        started = slack.assistant_thread_started(user="U1", channel="D1")
        await bridge.deliver(started)
        call = await slack.wait_call("assistant.threads.setSuggestedPrompts")
        # Someone the bridge refuses gets no prompts (their question gets the refusal).
        await bridge.deliver(slack.assistant_thread_started(user="U9", channel="D9"))
        await bridge.deliver(slack.mention("flush", channel="C1"))  # after both threads
    assert call.args["channel_id"] == "D1"
    assert call.args["thread_ts"] == started["assistant_thread"]["thread_ts"]
    assert call.args["prompts"] == PROMPTS
    assert call.token == slack.bot_token
    assert list(slack.prompts) == [thread_of(started)]


async def test_without_configured_prompts_a_new_thread_keeps_the_manifest_ones(
    tmp_path: Path, slack: FakeSlack, agents: FakeAgentServer
) -> None:
    async with running(make_config(tmp_path, slack, agents), slack) as bridge:
        started = slack.assistant_thread_started()
        envelope = await bridge.deliver(started)
        await bridge.deliver(slack.assistant_message("hi", started))
    assert slack.acked(envelope)
    assert slack.calls_to("assistant.threads.setSuggestedPrompts") == []
    assert bridge.replies() == ["echo: hi"]


async def test_a_question_in_an_assistant_thread_is_answered_there_and_titles_it_once(
    tmp_path: Path, slack: FakeSlack, agents: FakeAgentServer
) -> None:
    question = "What was our churn rate last quarter, and how does it compare to the year before?"
    async with running(make_config(tmp_path, slack, agents), slack) as bridge:
        started = slack.assistant_thread_started()
        await bridge.deliver(started)
        await bridge.deliver(slack.assistant_message(question, started))
        await slack.wait_call("assistant.threads.setTitle")
        await bridge.deliver(slack.assistant_message("and by region?", started))
        channel, root = thread_of(started)
        conversation = await bridge.core.store.get_conversation(
            ConversationKey("slack", TEAM_ID, channel, root)
        )

    assert bridge.replies() == [f"echo: {question}", "echo: and by region?"]
    assert [(p.args["channel"], p.args["thread_ts"]) for p in bridge.posts()] == [
        (channel, root),
        (channel, root),
    ]
    [title] = slack.calls_to("assistant.threads.setTitle")
    assert title.args["channel_id"] == channel and title.args["thread_ts"] == root
    assert title.args["title"] == thread_title(question)
    assert len(title.args["title"]) <= TITLE_CHARS and title.args["title"].endswith("…")
    assert title.args["title"].startswith("What was our churn rate")
    assert conversation is not None and conversation.turns == 2
    calls = agents.chat_calls
    assert "session_id" not in calls[0].json and calls[1].json["session_id"] == "sess-1"


async def test_two_assistant_threads_are_two_conversations(
    tmp_path: Path, slack: FakeSlack, agents: FakeAgentServer
) -> None:
    async with running(make_config(tmp_path, slack, agents), slack) as bridge:
        first, second = slack.assistant_thread_started(), slack.assistant_thread_started()
        await bridge.deliver(first)
        await bridge.deliver(second)
        await bridge.deliver(slack.assistant_message("one", first))
        await bridge.deliver(slack.assistant_message("two", second))
        await bridge.deliver(slack.assistant_message("one more", first))
        await bridge.deliver(slack.assistant_message("two more", second))
        await slack.wait_call("assistant.threads.setTitle", 2)

    assert agents.sessions == {"sess-1": ["one", "one more"], "sess-2": ["two", "two more"]}
    assert [p.args["thread_ts"] for p in bridge.posts()] == [
        thread_of(first)[1],
        thread_of(second)[1],
        thread_of(first)[1],
        thread_of(second)[1],
    ]
    assert slack.titles == {thread_of(first): "one", thread_of(second): "two"}


async def test_a_context_change_is_acknowledged_and_needs_no_call(
    tmp_path: Path, slack: FakeSlack, agents: FakeAgentServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="adapters.slack")
    async with running(make_config(tmp_path, slack, agents), slack) as bridge:
        started = slack.assistant_thread_started()
        await bridge.deliver(started)
        before = len(slack.calls)
        envelope = await bridge.deliver(slack.assistant_context_changed(started))
    assert slack.acked(envelope)
    assert slack.calls[before:] == []
    assert any(
        "context changed" in r.getMessage() and "C2" in r.getMessage() for r in caplog.records
    )


def test_a_title_is_one_line_cut_at_a_word() -> None:
    assert thread_title("  short\nquestion ") == "short question"
    long = "word " * 30
    title = thread_title(long)
    assert len(title) <= TITLE_CHARS and title.endswith("word…")
    assert thread_title("x" * 100) == "x" * (TITLE_CHARS - 1) + "…"


# --- the status while the agent works -------------------------------------------------


async def test_the_status_shows_while_the_agent_works_instead_of_the_reaction(
    tmp_path: Path, slack: FakeSlack, agents: FakeAgentServer
) -> None:
    config = at_once(
        make_config(
            tmp_path, slack, agents, status_text="is on it…", loading_messages=["Hm…", "Aha…"]
        )
    )
    agents.hold()
    async with running(config, slack) as bridge:
        started = slack.assistant_thread_started()
        await bridge.deliver(started)
        envelope = await slack.send_event(slack.assistant_message("think hard", started))
        await slack.wait_ack(envelope)
        shown = await slack.wait_call("assistant.threads.setStatus")
        assert slack.statuses[thread_of(started)] == "is on it…"
        assert bridge.posts() == []
        agents.release()
        await bridge.core.dispatcher.wait_idle()

    channel, root = thread_of(started)
    assert shown.args == {
        "channel_id": channel,
        "thread_ts": root,
        "status": "is on it…",
        "loading_messages": ["Hm…", "Aha…"],
    }
    # Cleared once the agent is done (the reply comes after it), then answered.
    statuses = [c.args["status"] for c in slack.calls_to("assistant.threads.setStatus")]
    assert statuses == ["is on it…", ""]
    assert slack.statuses[(channel, root)] == ""
    assert bridge.replies() == ["echo: think hard"]
    assert slack.calls_to("reactions.add") == []


async def test_a_long_answer_sets_the_status_again_before_slack_drops_it(
    tmp_path: Path, slack: FakeSlack, agents: FakeAgentServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(slack_assistant, "STATUS_REFRESH", 0.05)
    agents.hold()
    async with running(at_once(make_config(tmp_path, slack, agents)), slack) as bridge:
        started = slack.assistant_thread_started()
        await bridge.deliver(started)
        await slack.send_event(slack.assistant_message("slow one", started))
        await slack.wait_call("assistant.threads.setStatus", 3)
        agents.release()
        await bridge.core.dispatcher.wait_idle()
    statuses = [c.args["status"] for c in slack.calls_to("assistant.threads.setStatus")]
    assert len(statuses) >= 4 and set(statuses[:-1]) == {"is thinking…"}
    assert statuses[-1] == ""
    assert bridge.replies() == ["echo: slow one"]


@pytest.mark.parametrize("error", ["missing_scope", "invalid_thread_ts"])
async def test_when_slack_refuses_the_status_the_reaction_shows_instead(
    tmp_path: Path, slack: FakeSlack, agents: FakeAgentServer, error: str
) -> None:
    slack.fail("assistant.threads.setStatus", error=error)
    agents.hold()
    async with running(at_once(make_config(tmp_path, slack, agents)), slack) as bridge:
        started = slack.assistant_thread_started()
        await bridge.deliver(started)
        question = slack.assistant_message("no status for me", started)
        await slack.send_event(question)
        added = await slack.wait_call("reactions.add")
        agents.release()
        await bridge.core.dispatcher.wait_idle()
        # The next question in that thread goes straight to the reaction; another
        # thread tries the status again unless the scope itself is missing.
        agents.hold()
        await slack.send_event(slack.assistant_message("again", started))
        await slack.wait_call("reactions.add", 2)
        other = slack.assistant_thread_started()
        await slack.wait_ack(await slack.send_event(other))  # not deliver(): one is held
        await slack.send_event(slack.assistant_message("elsewhere", other))
        if error == "missing_scope":
            await slack.wait_call("reactions.add", 3)
        else:
            await slack.wait_call("assistant.threads.setStatus", 2)
        agents.release()
        await bridge.core.dispatcher.wait_idle()

    assert added.args == {
        "channel": "D1",
        "timestamp": question["ts"],
        "name": WORKING_REACTION,
    }
    assert len(slack.calls_to("reactions.remove")) == (3 if error == "missing_scope" else 2)
    tried = [c.args["thread_ts"] for c in slack.calls_to("assistant.threads.setStatus")]
    if error == "missing_scope":
        assert tried == [thread_of(started)[1]]
    else:
        assert tried[:2] == [thread_of(started)[1], thread_of(other)[1]]
    # Two threads answered at once: each in order, in no order between them.
    replies = bridge.replies()
    assert replies[0] == "echo: no status for me"
    assert sorted(replies[1:]) == ["echo: again", "echo: elsewhere"]


async def test_a_top_level_dm_and_a_channel_thread_keep_the_reaction(
    tmp_path: Path, slack: FakeSlack, agents: FakeAgentServer
) -> None:
    agents.hold()
    async with running(at_once(make_config(tmp_path, slack, agents)), slack) as bridge:
        await slack.send_event(slack.message("top-level", channel="D1", channel_type="im"))
        await slack.wait_call("reactions.add")
        await slack.send_event(slack.mention("in a channel", channel="C1"))
        await slack.wait_call("reactions.add", 2)
        agents.release()
        await bridge.core.dispatcher.wait_idle()
    assert slack.calls_to("assistant.threads.setStatus") == []
    assert len(slack.calls_to("reactions.remove")) == 2
