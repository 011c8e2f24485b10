"""Reply context on Telegram: a mention or /ask that replies to someone else's message
gives the agent that message (its sender's name and text) before the question; end to
end through python-telegram-bot against `FakeTelegram`, with the real dispatcher,
store and fake agent."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bridge.app import Core
from bridge.model import agent_input
from tests.adapters.test_telegram import answered, make_config, running
from tests.fakes.agents import FakeAgentServer
from tests.fakes.telegram import (
    ALICE,
    BOB,
    BOT,
    GROUP_ID,
    FakeTelegram,
    User,
    group_text,
    private_text,
    reply_to_bot,
    topic_message,
)

CAROL = User(1003, None, "Carol")


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as server:
        yield server


@pytest.fixture
async def agents() -> AsyncIterator[FakeAgentServer]:
    async with FakeAgentServer() as server:
        yield server


@pytest.fixture
async def bridge(tmp_path: Path, tg: FakeTelegram, agents: FakeAgentServer) -> AsyncIterator[Core]:
    async with running(make_config(tmp_path, tg, agents)) as (core, _adapter):
        yield core


def replying_to(update: dict[str, Any], user: User, text: str, **extra: Any) -> dict[str, Any]:
    """``user``'s group message ``text`` in reply to the message of ``update``."""
    return group_text(user, text, reply_to_message=update["message"], **extra)


async def test_an_ask_in_reply_to_someone_else_gives_the_agent_that_message(
    tg: FakeTelegram, agents: FakeAgentServer, bridge: Core
) -> None:
    # Carol is not allowed to ask; the bot never answers her, but her words are context.
    original = group_text(CAROL, "Shall we move the launch to Friday?")
    tg.push(original)
    reply = await answered(tg, replying_to(original, ALICE, "/ask what do you think?"), GROUP_ID)
    mention = replying_to(original, BOB, f"@{BOT.username} any risks?")
    await answered(tg, mention, GROUP_ID)

    context = "Carol: Shall we move the launch to Friday?"
    assert [c.json["message"] for c in agents.chat_calls] == [
        agent_input("what do you think?", context),
        agent_input("any risks?", context),
    ]
    assert (
        agents.chat_calls[0]
        .json["message"]
        .startswith("Earlier messages, for context:\n<<<\nCarol: Shall we")
    )
    assert reply["text"].startswith("echo: Earlier messages")


async def test_only_the_quoted_part_and_a_caption_count(
    tg: FakeTelegram, agents: FakeAgentServer, bridge: Core
) -> None:
    original = group_text(BOB, "Line one. The part that matters. Line three.")
    quoted = replying_to(
        original,
        ALICE,
        "/ask explain",
        quote={"text": "The part that matters.", "position": 10},
    )
    await answered(tg, quoted, GROUP_ID)
    photo = {
        "message": {
            **group_text(BOB, "x")["message"],
            "photo": [{"file_id": "f", "file_unique_id": "u", "width": 1, "height": 1}],
            "caption": "Q3 numbers",
        }
    }
    photo["message"].pop("text")
    await answered(tg, replying_to(photo, ALICE, "/ask summarize"), GROUP_ID)
    assert [c.json["message"] for c in agents.chat_calls] == [
        agent_input("explain", "Bob: The part that matters."),
        agent_input("summarize", "Bob: Q3 numbers"),
    ]


async def test_no_context_from_the_bot_a_topic_or_a_message_without_text(
    tg: FakeTelegram, agents: FakeAgentServer, bridge: Core
) -> None:
    await answered(tg, reply_to_bot(ALICE, "and then?"), GROUP_ID)
    # In a forum topic every message "replies" to the topic's creation message.
    topic = topic_message(ALICE, f"@{BOT.username} in a topic", thread_id=5)
    await answered(tg, topic, topic["message"]["chat"]["id"])
    sticker = {
        "message": {
            **group_text(BOB, "x")["message"],
            "sticker": {
                "file_id": "s",
                "file_unique_id": "su",
                "type": "regular",
                "width": 1,
                "height": 1,
                "is_animated": False,
                "is_video": False,
            },
        }
    }
    sticker["message"].pop("text")
    await answered(tg, replying_to(sticker, ALICE, "/ask what is this?"), GROUP_ID)
    await answered(tg, private_text(ALICE, "plain private message"), ALICE.id)
    assert [c.json["message"] for c in agents.chat_calls] == [
        "and then?",
        "in a topic",
        "what is this?",
        "plain private message",
    ]
