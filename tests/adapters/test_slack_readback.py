"""The double-post window: every reply piece carries message metadata, and a delivery
that was begun before (``delivery_attempts > 0``: perhaps a process that crashed after
posting and before marking the message delivered) reads the bot's own posts back and
posts only the pieces that are not there yet.

A "restart" is a second bridge on the same fakes: a fresh adapter that remembers
nothing of what the first one posted; only Slack knows."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bridge.errors import AdapterError
from bridge.model import ConversationKey, InboxMessage, MessageStatus, Reply
from tests.adapters.test_slack import make_config, running
from tests.fakes.agents import FakeAgentServer
from tests.fakes.slack import BOT_ID, BOT_USER_ID, TEAM_ID, FakeSlack

TWO_PIECES = "\n\n".join(["A" * 7000, "B" * 7000])


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as server:
        yield server


@pytest.fixture
async def agents() -> AsyncIterator[FakeAgentServer]:
    async with FakeAgentServer() as server:
        yield server


def inbox(
    slack: FakeSlack,
    question: dict[str, Any],
    *,
    thread: str | None,
    attempts: int,
    message_id: int = 7,
) -> InboxMessage:
    """The stored message the dispatcher would hand to send_reply for ``question``."""
    return InboxMessage(
        id=message_id,
        conversation_id=1,
        key=ConversationKey("slack", TEAM_ID, question["channel"], thread),
        event_id=f"{TEAM_ID}:{question['channel']}:{question['ts']}",
        sender=question["user"],
        text="q",
        agent="default",
        status=MessageStatus.ANSWERED,
        reply_to=question["ts"],
        delivery_attempts=attempts,
    )


def meta(message_id: int, piece: int, pieces: int) -> dict[str, Any]:
    return {
        "event_type": "agent_bridge_reply",
        "event_payload": {"inbox_id": message_id, "piece": piece, "pieces": pieces},
    }


def pieces_posted(slack: FakeSlack) -> list[str]:
    return [c.markdown[0] for c in slack.calls_to("chat.postMessage")]


async def test_a_restart_after_the_first_piece_posts_only_the_rest(
    tmp_path: Path, slack: FakeSlack, agents: FakeAgentServer
) -> None:
    question = slack.mention("two pieces please")
    slack.add_message("C1", question)
    slack.fail("chat.postMessage", error="internal_error", after=1)
    async with running(make_config(tmp_path, slack, agents), slack) as bridge:
        first = inbox(slack, question, thread=question["ts"], attempts=0)
        with pytest.raises(AdapterError):
            await bridge.adapter.send_reply(first, Reply(TWO_PIECES))
    assert pieces_posted(slack) == ["A", "B"]  # A posted, B refused

    async with running(make_config(tmp_path, slack, agents), slack) as bridge:
        again = inbox(slack, question, thread=question["ts"], attempts=1)
        await bridge.adapter.send_reply(again, Reply(TWO_PIECES))

    posts = slack.calls_to("chat.postMessage")
    assert pieces_posted(slack) == ["A", "B", "B"]  # no second A
    assert [p.args["metadata"] for p in (posts[0], posts[-1])] == [meta(7, 0, 2), meta(7, 1, 2)]
    [read] = slack.calls_to("conversations.replies")
    assert read.args["channel"] == "C1" and read.args["ts"] == question["ts"]
    assert read.args["include_all_metadata"] == "1"  # without it Slack hides metadata
    assert slack.calls_to("conversations.history") == []


async def test_a_restart_after_every_piece_was_posted_posts_nothing(
    tmp_path: Path, slack: FakeSlack, agents: FakeAgentServer
) -> None:
    question = slack.message("hello", channel="D1", channel_type="im")
    slack.add_message("D1", question)
    async with running(make_config(tmp_path, slack, agents), slack) as bridge:
        # Posted in full, then the process died before marking the message delivered.
        await bridge.adapter.send_reply(
            inbox(slack, question, thread=None, attempts=0), Reply(TWO_PIECES)
        )
    async with running(make_config(tmp_path, slack, agents), slack) as bridge:
        await bridge.adapter.send_reply(
            inbox(slack, question, thread=None, attempts=1), Reply(TWO_PIECES)
        )
    assert pieces_posted(slack) == ["A", "B"]
    # A top-level DM reply is read back from the DM's history after the question.
    [read] = slack.calls_to("conversations.history")
    assert read.args["channel"] == "D1" and read.args["oldest"] == question["ts"]
    assert read.args["include_all_metadata"] == "1"


async def test_only_our_bots_posts_for_this_message_count(
    tmp_path: Path, slack: FakeSlack, agents: FakeAgentServer
) -> None:
    question = slack.mention("q")
    slack.add_message("C1", question)
    root = question["ts"]
    # Another app posting the same metadata, and our post for another message.
    slack.add_message(
        "C1",
        {
            "type": "message",
            "ts": "1800000001.000001",
            "thread_ts": root,
            "user": "UOTHER",
            "bot_id": "BOTHER",
            "text": "A",
            "metadata": meta(7, 0, 1),
        },
    )
    slack.add_message(
        "C1",
        {
            "type": "message",
            "ts": "1800000001.000002",
            "thread_ts": root,
            "user": BOT_USER_ID,
            "bot_id": BOT_ID,
            "text": "A",
            "metadata": meta(8, 0, 1),
        },
    )
    async with running(make_config(tmp_path, slack, agents), slack) as bridge:
        await bridge.adapter.send_reply(
            inbox(slack, question, thread=root, attempts=2), Reply("Answer")
        )
    assert [c.markdown for c in slack.calls_to("chat.postMessage")] == ["Answer"]
    assert len(slack.calls_to("conversations.replies")) == 1


async def test_the_read_back_follows_pagination(
    tmp_path: Path, slack: FakeSlack, agents: FakeAgentServer
) -> None:
    question = slack.mention("q")
    slack.add_message("C1", question)
    root = question["ts"]
    for i in range(5):  # people talk in the thread after the question
        slack.add_message(
            "C1",
            {
                "type": "message",
                "ts": f"1750000000.00000{i}",
                "thread_ts": root,
                "user": "U2",
                "text": f"chat {i}",
            },
        )
    slack.add_message(
        "C1",
        {
            "type": "message",
            "ts": "1800000001.000001",
            "thread_ts": root,
            "user": BOT_USER_ID,
            "bot_id": BOT_ID,
            "text": "A...",
            "metadata": meta(7, 0, 2),
        },
    )
    slack.page_size = 2
    async with running(make_config(tmp_path, slack, agents), slack) as bridge:
        await bridge.adapter.send_reply(
            inbox(slack, question, thread=root, attempts=1), Reply(TWO_PIECES)
        )
    assert pieces_posted(slack) == ["B"]
    reads = slack.calls_to("conversations.replies")
    assert len(reads) == 4  # root + 6 replies, 2 a page
    assert "cursor" not in reads[0].args
    assert all(r.args["cursor"] for r in reads[1:])


async def test_when_the_read_back_fails_the_reply_is_posted_anyway(
    tmp_path: Path, slack: FakeSlack, agents: FakeAgentServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="adapters.slack")
    question = slack.mention("q")
    slack.add_message("C1", question)
    # Non-Marketplace apps may get one conversations.replies a minute: not waited for.
    slack.ratelimit("conversations.replies", retry_after=30)
    async with running(make_config(tmp_path, slack, agents), slack) as bridge:
        started = time.monotonic()
        await bridge.adapter.send_reply(
            inbox(slack, question, thread=question["ts"], attempts=1), Reply("Answer")
        )
        elapsed = time.monotonic() - started
    assert [c.markdown for c in slack.calls_to("chat.postMessage")] == ["Answer"]
    assert elapsed < 10  # Retry-After 30 was not honoured for the read-back
    [warning] = [r for r in caplog.records if "could not read back" in r.getMessage()]
    assert warning.levelno == logging.WARNING and "ratelimited" in warning.getMessage()


async def test_a_first_delivery_reads_nothing_back_and_tags_its_pieces(
    tmp_path: Path, slack: FakeSlack, agents: FakeAgentServer
) -> None:
    async with running(make_config(tmp_path, slack, agents), slack) as bridge:
        await bridge.deliver(slack.mention("hi"))
    [post] = slack.calls_to("chat.postMessage")
    message_id = post.args["metadata"]["event_payload"]["inbox_id"]
    assert isinstance(message_id, int)
    assert post.args["metadata"] == meta(message_id, 0, 1)
    assert slack.calls_to("conversations.replies") == []  # no cost on the normal path
    assert slack.calls_to("conversations.history") == []


async def test_a_post_whose_answer_was_lost_is_not_posted_again(
    tmp_path: Path, slack: FakeSlack, agents: FakeAgentServer
) -> None:
    """Through the dispatcher and the store: Slack posted the reply, the answer never
    arrived (a timeout, a network cut). The attempt fails without a blind retry, the
    dispatcher tries again later with delivery_attempts > 0, and the read-back finds the
    post: the user sees it once."""
    slack.lose_response("chat.postMessage")
    async with running(make_config(tmp_path, slack, agents), slack) as bridge:
        mention = slack.mention("once only")
        await bridge.deliver(mention)
        assert await bridge.core.store.count_unfinished() == 0  # delivered in the end
    ours = [m for m in slack.messages["C1"] if m.get("bot_id") == BOT_ID]
    assert [m["text"] for m in ours] == ["echo: once only"]
    assert len(slack.calls_to("chat.postMessage")) == 1
    [read] = slack.calls_to("conversations.replies")
    assert read.args["ts"] == mention["ts"]
