"""The Telegram adapter end to end: the real python-telegram-bot stack against
`FakeTelegram` (through ``telegram.api_url``), the real dispatcher and store (SQLite),
the real backends against `FakeAgentServer`."""

from __future__ import annotations

import contextlib
import logging
import traceback
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

import adapters.telegram_polling as polling_module
import adapters.telegram_sending as telegram_module
from adapters.base import AdapterState
from adapters.telegram import TelegramAdapter
from adapters.telegram_render import utf16_len
from bridge.app import Core, open_core
from bridge.config import Config, parse_config
from bridge.errors import AdapterError, StorageError
from bridge.model import ConversationKey
from tests.fakes.agents import FAKE_AGENT_ID, FAKE_API_KEY, FakeAgentServer, FakeResponse
from tests.fakes.telegram import (
    ALICE,
    BOB,
    BOT,
    BOT_ID,
    FORUM_ID,
    GROUP_ID,
    MALLORY,
    FakeError,
    FakeTelegram,
    User,
    channel_post,
    edited_text,
    group_mention,
    group_text,
    my_chat_member,
    new_members,
    photo_with_caption,
    private_text,
    reply_to_bot,
    sticker,
    topic_message,
    voice,
)
from tests.ports import free_port

ANALYTICS_CHAT = -1002222222222


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as server:
        yield server


@pytest.fixture
async def agents() -> AsyncIterator[FakeAgentServer]:
    async with FakeAgentServer() as server:
        yield server


def make_config(
    tmp_path: Path, tg: FakeTelegram, agents: FakeAgentServer, **telegram: Any
) -> Config:
    def agent(agent_id: str) -> dict[str, Any]:
        return {
            "backend": "thinnest",
            "agent_id": agent_id,
            "api_key": FAKE_API_KEY,
            "base_url": agents.url,
            "timeout": 5,
            "max_retry_wait": 1,
        }

    section: dict[str, Any] = {
        "bot_token": tg.token,
        "api_url": tg.api_url,
        "allowed_users": [ALICE.id, "@Bob"],
        "chat_agents": {str(ANALYTICS_CHAT): "analytics"},
    }
    section.update(telegram)
    return parse_config(
        {
            "storage": {"url": f"sqlite+aiosqlite:///{tmp_path}/bridge.db"},
            "agents": {"default": agent(FAKE_AGENT_ID), "analytics": agent("ag_analytics")},
            "telegram": section,
        },
        base_dir=tmp_path,
    )


@contextlib.asynccontextmanager
async def running(config: Config) -> AsyncIterator[tuple[Core, TelegramAdapter]]:
    async with open_core(config) as core:
        assert config.telegram is not None
        adapter = TelegramAdapter(core.dispatcher, config.telegram)
        # No competing poller here: the conflict check at start need not wait long.
        adapter.start_poll_timeout = 0.1
        core.dispatcher.register(adapter)
        async with adapter:
            await core.dispatcher.resume()
            yield core, adapter


@pytest.fixture
async def bridge(
    tmp_path: Path, tg: FakeTelegram, agents: FakeAgentServer
) -> AsyncIterator[tuple[Core, TelegramAdapter]]:
    async with running(make_config(tmp_path, tg, agents)) as pair:
        yield pair


def key(chat: int, thread: int | None = None) -> ConversationKey:
    return ConversationKey(
        "telegram", str(BOT_ID), str(chat), None if thread is None else str(thread)
    )


async def answered(tg: FakeTelegram, update: dict[str, Any], chat_id: int) -> dict[str, Any]:
    """Push ``update`` and return the params of the next message the bot sends to ``chat_id``."""
    before = len(tg.sent(chat_id))
    tg.push(update)
    sent = await tg.wait_sent(chat_id, count=before + 1)
    return sent[before].params


# --- private chats -----------------------------------------------------------------------


async def test_private_text_is_answered_as_a_reply_with_the_agent_text(
    tg: FakeTelegram, agents: FakeAgentServer, bridge: tuple[Core, TelegramAdapter]
) -> None:
    _core, adapter = bridge
    assert adapter.state is AdapterState.CONNECTED
    update = private_text(ALICE, "hello there")
    reply = await answered(tg, update, ALICE.id)
    assert reply["text"] == "echo: hello there"
    assert reply["reply_parameters"] == {
        "message_id": update["message"]["message_id"],
        "allow_sending_without_reply": True,
    }
    assert "parse_mode" not in reply
    assert [c.json["message"] for c in agents.chat_calls] == ["hello there"]
    # started: commands registered, any old webhook removed
    assert tg.calls_of("setMyCommands")
    assert tg.calls_of("deleteWebhook")
    commands = {c["command"] for c in tg.calls_of("setMyCommands")[0].params["commands"]}
    assert {"start", "help", "reset", "new", "status", "ask"} <= commands


async def test_a_conversation_keeps_its_session_and_reset_starts_a_new_one(
    tg: FakeTelegram, agents: FakeAgentServer, bridge: tuple[Core, TelegramAdapter]
) -> None:
    core, _ = bridge
    await answered(tg, private_text(ALICE, "one"), ALICE.id)
    await answered(tg, private_text(ALICE, "two"), ALICE.id)
    first_session = agents.chat_calls[1].json["session_id"]
    assert first_session
    conversation = await core.dispatcher.conversation(key(ALICE.id))
    assert conversation is not None and conversation.turns == 2

    status = await answered(tg, private_text(ALICE, "/status"), ALICE.id)
    assert "Turns: 2" in status["text"] and "Agent: default" in status["text"]
    assert "Tokens: 2 in, 4 out" in status["text"]

    done = await answered(tg, private_text(ALICE, "/reset"), ALICE.id)
    assert "new conversation" in done["text"]
    await answered(tg, private_text(ALICE, "three"), ALICE.id)
    assert "session_id" not in agents.chat_calls[2].json
    await answered(tg, private_text(ALICE, "/new"), ALICE.id)
    await answered(tg, private_text(ALICE, "four"), ALICE.id)
    assert "session_id" not in agents.chat_calls[3].json
    assert len(agents.chat_calls) == 4  # the commands never reached the agent


async def test_the_update_is_confirmed_only_after_it_was_committed(
    tg: FakeTelegram, agents: FakeAgentServer, bridge: tuple[Core, TelegramAdapter]
) -> None:
    core, _ = bridge
    agents.hold()
    pushed = tg.push(private_text(ALICE, "keep me"))
    await tg.wait_confirmed(pushed["update_id"])
    # Confirmed while the agent still works: it must be in the store by now.
    unfinished = await core.store.unfinished()
    assert [m.text for m in unfinished] == ["keep me"]
    assert unfinished[0].event_id == f"{BOT_ID}:{ALICE.id}:{pushed['message']['message_id']}"
    agents.release()
    await tg.wait_sent(ALICE.id)


async def test_an_update_delivered_twice_is_answered_once(
    tg: FakeTelegram, agents: FakeAgentServer, bridge: tuple[Core, TelegramAdapter]
) -> None:
    # Telegram sends an update again when the bridge died before confirming it.
    update = private_text(ALICE, "only once")
    tg.push(update)
    tg.push(update)
    await answered(tg, private_text(ALICE, "after"), ALICE.id)
    texts = [c.params["text"] for c in await tg.wait_sent(ALICE.id, count=2)]
    assert texts == ["echo: only once", "echo: after"]
    assert [c.json["message"] for c in agents.chat_calls] == ["only once", "after"]


async def test_a_store_failure_leaves_the_update_unconfirmed_and_it_is_answered_later(
    tg: FakeTelegram,
    agents: FakeAgentServer,
    bridge: tuple[Core, TelegramAdapter],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    core, _ = bridge
    real_submit = core.dispatcher.submit
    failures: list[Any] = []

    async def flaky_submit(msg: Any) -> bool:
        if not failures:
            failures.append(msg)
            raise StorageError("database is locked")
        return await real_submit(msg)

    monkeypatch.setattr(core.dispatcher, "submit", flaky_submit)
    pushed = tg.push(private_text(ALICE, "persist"))
    sent = await tg.wait_sent(ALICE.id, within=10)
    assert failures and sent[0].params["text"] == "echo: persist"
    # Had the failed attempt confirmed the update, Telegram would not have sent it again
    # and no answer would have come.
    await tg.wait_confirmed(pushed["update_id"])
    assert len(agents.chat_calls) == 1


def working_after(config: Config, seconds: float) -> Config:
    dispatcher = config.dispatcher.model_copy(update={"working_after": seconds})
    return config.model_copy(update={"dispatcher": dispatcher})


async def test_the_overall_sending_rate_is_configurable(
    tmp_path: Path, tg: FakeTelegram, agents: FakeAgentServer
) -> None:
    # 4 a second (Telegram's bulk limit is 30): ten users' answers take a second or more.
    config = make_config(tmp_path, tg, agents, allowed_users=["*"], max_messages_per_second=4)
    async with running(config):
        for i in range(10):
            tg.push(private_text(User(5000 + i, f"user{i}"), f"hello {i}"))
        sent = await tg.wait_sent(count=10)
    assert sent[-1].at - sent[0].at >= 1.0


async def test_a_quick_answer_needs_no_typing_action(
    tg: FakeTelegram, agents: FakeAgentServer, bridge: tuple[Core, TelegramAdapter]
) -> None:
    reply = await answered(tg, private_text(ALICE, "quick"), ALICE.id)
    assert reply["text"] == "echo: quick"
    # Answered within dispatcher.working_after (1 s): one request, not two.
    assert tg.calls_of("sendChatAction") == []


async def test_typing_is_shown_while_the_agent_works_and_stops_before_the_reply(
    tmp_path: Path,
    tg: FakeTelegram,
    agents: FakeAgentServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(telegram_module, "TYPING_INTERVAL", 0.05)
    agents.hold()
    async with running(working_after(make_config(tmp_path, tg, agents), 0.05)):
        tg.push(private_text(ALICE, "think hard"))
        actions = await tg.wait_calls("sendChatAction", count=3)
        assert actions[0].params == {"chat_id": ALICE.id, "action": "typing"}
        agents.release()
        [reply] = await tg.wait_sent(ALICE.id)
    after = [c for c in tg.calls_of("sendChatAction") if c.at > reply.at]
    assert after == []


async def test_a_failing_typing_action_does_not_disturb_the_answer(
    tmp_path: Path, tg: FakeTelegram, agents: FakeAgentServer
) -> None:
    tg.fail_always("sendChatAction", FakeError(400, "Bad Request: not enough rights"))
    async with running(working_after(make_config(tmp_path, tg, agents), 0)):
        reply = await answered(tg, private_text(ALICE, "still fine"), ALICE.id)
    assert reply["text"] == "echo: still fine"
    assert tg.calls_of("sendChatAction")  # tried, and refused


# --- groups and topics -------------------------------------------------------------------


async def test_group_mention_is_answered_with_the_mention_stripped(
    tg: FakeTelegram, agents: FakeAgentServer, bridge: tuple[Core, TelegramAdapter]
) -> None:
    tg.push(group_text(ALICE, "just chatting, not for the bot"))
    reply = await answered(tg, group_mention(ALICE, "what is up?"), GROUP_ID)
    assert reply["text"] == "echo: what is up?"
    # the plain group message before it never reached the agent
    assert [c.json["message"] for c in agents.chat_calls] == ["what is up?"]


async def test_group_mention_in_the_middle_of_a_sentence(
    tg: FakeTelegram, agents: FakeAgentServer, bridge: tuple[Core, TelegramAdapter]
) -> None:
    text = f"hey @{BOT.username}, summarize this"
    reply = await answered(tg, group_text(ALICE, text), GROUP_ID)
    assert agents.chat_calls[0].json["message"] == "hey , summarize this"
    assert reply["text"].startswith("echo:")


async def test_reply_to_the_bot_and_ask_command_reach_the_agent(
    tg: FakeTelegram, agents: FakeAgentServer, bridge: tuple[Core, TelegramAdapter]
) -> None:
    await answered(tg, reply_to_bot(ALICE, "and then?"), GROUP_ID)
    await answered(tg, group_text(BOB, "/ask how many?"), GROUP_ID)
    await answered(tg, group_text(BOB, f"/ask@{BOT.username} and now?"), GROUP_ID)
    usage = await answered(tg, group_text(BOB, "/ask"), GROUP_ID)
    assert "after the command" in usage["text"]
    assert [c.json["message"] for c in agents.chat_calls] == ["and then?", "how many?", "and now?"]


async def test_start_for_this_bot_answers_and_for_another_bot_is_ignored(
    tg: FakeTelegram, agents: FakeAgentServer, bridge: tuple[Core, TelegramAdapter]
) -> None:
    tg.push(group_text(ALICE, "/start@some_other_bot"))
    hello = await answered(tg, group_text(ALICE, f"/start@{BOT.username}"), GROUP_ID)
    assert f"@{BOT.username}" in hello["text"]
    assert len(tg.sent(GROUP_ID)) == 1  # the other bot's /start got nothing
    private = await answered(tg, private_text(ALICE, "/help"), ALICE.id)
    assert "Just write to me" in private["text"]
    assert agents.chat_calls == []


async def test_forum_topics_are_separate_conversations_answered_in_their_topic(
    tg: FakeTelegram, agents: FakeAgentServer, bridge: tuple[Core, TelegramAdapter]
) -> None:
    core, _ = bridge
    # A topic the bot created: its messages carry the bot's creation message as
    # reply_to_message, which is not a reply to the bot.
    tg.push(topic_message(ALICE, "talking among us", thread_id=77, topic_creator=BOT))
    reply = await answered(
        tg, topic_message(ALICE, f"@{BOT.username} in topic 77", thread_id=77), FORUM_ID
    )
    assert reply["message_thread_id"] == 77
    await answered(tg, topic_message(ALICE, f"@{BOT.username} in topic 88", thread_id=88), FORUM_ID)
    await answered(tg, topic_message(ALICE, f"@{BOT.username} again 77", thread_id=77), FORUM_ID)
    assert [c.json["message"] for c in agents.chat_calls] == [
        "in topic 77",
        "in topic 88",
        "again 77",
    ]
    # topic 77's second turn continued topic 77's session, not topic 88's
    sessions = agents.sessions
    t77 = await core.dispatcher.conversation(key(FORUM_ID, 77))
    t88 = await core.dispatcher.conversation(key(FORUM_ID, 88))
    assert t77 is not None and t88 is not None and t77.session_id is not None
    assert t77.turns == 2 and t88.turns == 1
    assert sessions[t77.session_id] == ["in topic 77", "again 77"]


async def test_group_trigger_all_answers_every_message(
    tmp_path: Path, tg: FakeTelegram, agents: FakeAgentServer
) -> None:
    config = make_config(tmp_path, tg, agents, group_trigger="all", allowed_chats=[GROUP_ID])
    async with running(config):
        reply = await answered(tg, group_text(MALLORY, "anyone here?"), GROUP_ID)
        assert reply["text"] == "echo: anyone here?"


async def test_chat_agents_picks_the_agent_per_chat(
    tg: FakeTelegram, agents: FakeAgentServer, bridge: tuple[Core, TelegramAdapter]
) -> None:
    await answered(tg, group_mention(ALICE, "numbers?", chat_id=ANALYTICS_CHAT), ANALYTICS_CHAT)
    await answered(tg, group_mention(ALICE, "words?"), GROUP_ID)
    paths = [c.path for c in agents.chat_calls]
    assert paths == ["/v1/agents/ag_analytics/chat", f"/v1/agents/{FAKE_AGENT_ID}/chat"]


# --- content the bridge does not send to the agent -----------------------------------------


async def test_photo_caption_is_the_message_and_stickers_and_voice_get_a_polite_no(
    tg: FakeTelegram, agents: FakeAgentServer, bridge: tuple[Core, TelegramAdapter]
) -> None:
    captioned = await answered(tg, photo_with_caption(ALICE, "what is this?"), ALICE.id)
    # thinnest reads text only: the caption, and a note (tests/adapters/test_telegram_files.py)
    assert captioned["text"].endswith("echo: what is this?")
    polite = await answered(tg, sticker(ALICE), ALICE.id)
    assert "only read text, files, photos and voice messages" in polite["text"]
    for update in (voice(ALICE), photo_with_caption(ALICE, None)):
        polite = await answered(tg, update, ALICE.id)
        assert "voice is not set up" in polite["text"] or "reads text only" in polite["text"]
    assert [c.json["message"] for c in agents.chat_calls] == ["what is this?"]


async def test_edits_channel_posts_service_messages_and_membership_reach_no_agent(
    tg: FakeTelegram,
    agents: FakeAgentServer,
    bridge: tuple[Core, TelegramAdapter],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="adapters.telegram")
    tg.push(edited_text(ALICE, "edited text"))
    tg.push(edited_text(ALICE, "/reset"))
    tg.push(channel_post(f"@{BOT.username} channel post"))
    tg.push(new_members(ALICE))
    tg.push(my_chat_member(ALICE, old="left", new="member"))
    await answered(tg, private_text(ALICE, "the real one"), ALICE.id)
    assert [c.json["message"] for c in agents.chat_calls] == ["the real one"]
    assert len(tg.sent()) == 1
    joined = [r.getMessage() for r in caplog.records if "bot status" in r.getMessage()]
    assert joined and f"chat {GROUP_ID}" in joined[0] and "left to member" in joined[0]


# --- access ----------------------------------------------------------------------------------


async def test_unauthorized_user_gets_one_refusal_in_private_and_silence_in_groups(
    tg: FakeTelegram,
    agents: FakeAgentServer,
    bridge: tuple[Core, TelegramAdapter],
    caplog: pytest.LogCaptureFixture,
) -> None:
    core, _ = bridge
    caplog.set_level(logging.INFO, logger="adapters.telegram")
    refusal = await answered(tg, private_text(MALLORY, "let me in"), MALLORY.id)
    assert "private" in refusal["text"] and str(MALLORY.id) in refusal["text"]
    tg.push(private_text(MALLORY, "please"))
    tg.push(group_mention(MALLORY, "in the group"))
    # @Bob is allowed by username (case-insensitive); his message comes after Mallory's
    await answered(tg, private_text(BOB, "hi, I am allowed"), BOB.id)
    assert len(tg.sent(MALLORY.id)) == 1
    assert tg.sent(GROUP_ID) == []
    assert [c.json["message"] for c in agents.chat_calls] == ["hi, I am allowed"]
    logged = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(logged) == 3 and all(
        str(MALLORY.id) in line and "@mallory" in line for line in logged
    )
    refused = core.metrics.refused.labels("telegram")._value.get()
    assert refused >= 3


async def test_allowed_chats_let_anyone_in_that_group(
    tmp_path: Path, tg: FakeTelegram, agents: FakeAgentServer
) -> None:
    async with running(make_config(tmp_path, tg, agents, allowed_chats=[GROUP_ID])):
        reply = await answered(tg, group_mention(MALLORY, "hello group"), GROUP_ID)
        assert reply["text"] == "echo: hello group"
        refusal = await answered(tg, private_text(MALLORY, "and in private?"), MALLORY.id)
        assert "private" in refusal["text"]


# --- replies ---------------------------------------------------------------------------------


def long_markdown() -> str:
    para = "Some **bold** words and `inline code` with an emoji 😀 in a sentence. " * 8
    code = "\n".join(f"    result_{i} = compute({i})  # step {i}" for i in range(150))
    text = f"# Report\n\n{para}\n\n{para}\n\n```python\n{code}\n```\n\n{para}\n\n"
    text += "\n\n".join(para for _ in range(6))
    assert len(text) >= 10_000
    return text


async def test_a_long_markdown_reply_is_split_within_limits_and_code_is_reopened(
    tg: FakeTelegram, agents: FakeAgentServer, bridge: tuple[Core, TelegramAdapter]
) -> None:
    text = long_markdown()
    agents.script(FakeResponse(json={"response": text, "session_id": "s1", "usage": {}}))
    tg.push(private_text(ALICE, "report please"))
    # strict fake: any chunk over 4096 UTF-16 units or with an out-of-range entity is refused
    await tg.wait_for(
        lambda: sum(len(c.params["text"]) for c in tg.sent(ALICE.id)) > 8000, within=10
    )
    core, _ = bridge
    await core.dispatcher.wait_idle()
    sent = [c.params for c in tg.sent(ALICE.id)]
    assert len(sent) >= 3
    assert all(utf16_len(p["text"]) <= 4096 for p in sent)
    assert "reply_parameters" in sent[0] and all("reply_parameters" not in p for p in sent[1:])
    pres = [(i, e) for i, p in enumerate(sent) for e in p.get("entities", []) if e["type"] == "pre"]
    assert len({i for i, _ in pres}) >= 2, "the code block spans two messages"
    assert all(e.get("language") == "python" for _, e in pres)
    joined = "".join(p["text"] for p in sent)
    assert "result_0 = compute(0)" in joined and "result_149 = compute(149)" in joined
    assert "**" not in joined and "```" not in joined
    assert all(tg.calls_of("sendMessage")[i].ok for i in range(len(tg.calls_of("sendMessage"))))


async def test_text_that_breaks_naive_markdownv2_is_delivered(
    tg: FakeTelegram, agents: FakeAgentServer, bridge: tuple[Core, TelegramAdapter]
) -> None:
    nasty = "Price: 3.5 (approx.) - see [docs] #1 + x=y! {a|b} ~tilde~ > quote _under_score_ * star"
    agents.script(FakeResponse(json={"response": nasty, "session_id": "s1", "usage": {}}))
    reply = await answered(tg, private_text(ALICE, "price?"), ALICE.id)
    assert "3.5 (approx.)" in reply["text"] and "{a|b}" in reply["text"]
    assert "parse_mode" not in reply
    assert len(tg.calls_of("sendMessage")) == 1  # accepted the first time


async def test_refused_entities_fall_back_to_plain_text(
    tg: FakeTelegram, agents: FakeAgentServer, bridge: tuple[Core, TelegramAdapter]
) -> None:
    agents.script(FakeResponse(json={"response": "**bold** claim", "session_id": "s", "usage": {}}))
    tg.fail_next(
        "sendMessage",
        FakeError(
            400,
            "Bad Request: can't parse entities: unsupported start tag",
            when=lambda params: bool(params.get("entities")),
        ),
    )
    reply = await answered(tg, private_text(ALICE, "claim?"), ALICE.id)
    assert reply["text"] == "bold claim"
    assert "entities" not in reply
    first, _second = tg.calls_of("sendMessage")
    assert not first.ok and first.params["entities"][0]["type"] == "bold"


async def test_a_flood_wait_delays_the_reply_but_never_drops_it(
    tg: FakeTelegram, agents: FakeAgentServer, bridge: tuple[Core, TelegramAdapter]
) -> None:
    tg.fail_next("sendMessage", FakeError(429, "Too Many Requests: retry after 1", retry_after=1))
    reply = await answered(tg, private_text(ALICE, "busy?"), ALICE.id)
    assert reply["text"] == "echo: busy?"
    first, second = tg.calls_of("sendMessage")
    assert not first.ok and second.ok
    assert second.at - first.at >= 1.0  # retry_after was honoured


async def test_a_blocked_bot_drops_the_reply_without_retrying_forever(
    tg: FakeTelegram, agents: FakeAgentServer, bridge: tuple[Core, TelegramAdapter]
) -> None:
    core, _ = bridge
    tg.fail_always("sendMessage", FakeError(403, "Forbidden: bot was blocked by the user"))
    tg.push(private_text(ALICE, "bye"))
    await tg.wait_calls("sendMessage")
    await core.dispatcher.wait_idle()
    assert len(tg.calls_of("sendMessage")) == 1
    assert await core.store.unfinished() == []
    metrics = core.metrics.render().decode()
    assert 'agent_bridge_messages_failed_total{platform="telegram"} 1.0' in metrics


async def test_a_restart_mid_reply_does_not_repeat_the_pieces_already_posted(
    tmp_path: Path, tg: FakeTelegram, agents: FakeAgentServer
) -> None:
    config = make_config(tmp_path, tg, agents)
    agents.script(FakeResponse(json={"response": long_markdown(), "session_id": "s", "usage": {}}))
    # Telegram takes the first piece, then refuses everything for a while (the
    # call being answered is already recorded when the predicate runs).
    tg.fail_always(
        "sendMessage",
        FakeError(502, "Bad Gateway", when=lambda _p: len(tg.calls_of("sendMessage")) > 1),
    )
    async with running(config) as (core, _):
        core.dispatcher._delivery_backoff = (3600.0,)
        tg.push(private_text(ALICE, "report please"))
        await tg.wait_for(lambda: len(tg.calls_of("sendMessage")) >= 2, within=10)
        await core.dispatcher.wait_idle(parked=False)
    first_piece = tg.calls_of("sendMessage")[0].params["text"]
    tg.clear_failures()
    async with running(config) as (core, _):
        await core.dispatcher.wait_idle()
    posted = [c.params["text"] for c in tg.calls_of("sendMessage") if c.ok]
    assert posted.count(first_piece) == 1  # not repeated by the retry after the restart
    assert len(posted) >= 3 and "result_149 = compute(149)" in "".join(posted)
    assert len(agents.chat_calls) == 1


# --- connection ------------------------------------------------------------------------------


async def test_a_bad_token_fails_start_with_the_reason_and_without_the_token(
    tmp_path: Path, tg: FakeTelegram, agents: FakeAgentServer
) -> None:
    bad = "987654321:AAwrongTokenWrongTokenWrongToken123"
    config = make_config(tmp_path, tg, agents, bot_token=bad)
    with pytest.raises(AdapterError) as err:
        async with running(config):
            pass
    assert "Unauthorized: check telegram.bot_token" in str(err.value)
    assert bad not in "".join(traceback.format_exception(err.value))


async def test_check_names_the_bot(
    tmp_path: Path, tg: FakeTelegram, agents: FakeAgentServer
) -> None:
    config = make_config(tmp_path, tg, agents)
    assert config.telegram is not None
    async with open_core(config) as core:
        adapter = TelegramAdapter(core.dispatcher, config.telegram)
        assert await adapter.check() == f"@{BOT.username} (id {BOT_ID})"
        bad = TelegramAdapter(
            core.dispatcher,
            config.telegram.model_copy(update={"bot_token": SecretStr("42:" + "x" * 35)}),
        )
        with pytest.raises(AdapterError, match="Unauthorized"):
            await bad.check()


async def test_state_follows_the_connection_to_telegram(
    tg: FakeTelegram,
    agents: FakeAgentServer,
    bridge: tuple[Core, TelegramAdapter],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, adapter = bridge
    monkeypatch.setattr(polling_module, "POLL_BACKOFF", (0.05,))
    tg.fail_always("getUpdates", FakeError(502, "Bad Gateway"))
    # The long poll under way returns this update; the polls after it fail.
    tg.push(private_text(ALICE, "wake the poller"))
    await tg.wait_for(lambda: adapter.state is AdapterState.DISCONNECTED)
    assert not adapter.healthy
    await tg.wait_sent(ALICE.id)
    tg.clear_failures()
    await answered(tg, private_text(ALICE, "back?"), ALICE.id)
    assert adapter.state is AdapterState.CONNECTED


async def test_webhook_mode_checks_the_secret_and_answers_after_commit(
    tmp_path: Path, tg: FakeTelegram, agents: FakeAgentServer
) -> None:
    port = free_port()
    config = make_config(
        tmp_path,
        tg,
        agents,
        mode="webhook",
        webhook_url=f"http://127.0.0.1:{port}/telegram/hook",
        webhook_secret="s3cret-Value_1",
        listen=f"127.0.0.1:{port}",
    )
    async with running(config) as (core, _adapter):
        assert tg.webhook == {
            "url": f"http://127.0.0.1:{port}/telegram/hook",
            "secret_token": "s3cret-Value_1",
        }
        assert tg.calls_of("getUpdates") == []
        assert await tg.deliver(private_text(ALICE, "forged"), secret="wrong") == 403
        assert await tg.deliver(private_text(ALICE, "no header"), secret="") == 403
        assert await tg.deliver(private_text(ALICE, "genuine")) == 200
        # 200 came after the commit
        assert [m.text for m in await core.store.unfinished()] in (["genuine"], [])
        [reply] = await tg.wait_sent(ALICE.id)
        assert reply.params["text"] == "echo: genuine"
        assert [c.json["message"] for c in agents.chat_calls] == ["genuine"]


async def test_webhook_answers_500_when_the_store_fails_so_telegram_retries(
    tmp_path: Path,
    tg: FakeTelegram,
    agents: FakeAgentServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = free_port()
    config = make_config(
        tmp_path,
        tg,
        agents,
        mode="webhook",
        webhook_url=f"http://127.0.0.1:{port}/",
        webhook_secret="abc",
        listen=f"127.0.0.1:{port}",
    )
    async with running(config) as (core, _):

        async def broken(msg: Any) -> bool:
            raise StorageError("disk full")

        monkeypatch.setattr(core.dispatcher, "submit", broken)
        assert await tg.deliver(private_text(ALICE, "lost?")) == 500
        monkeypatch.undo()
        assert await tg.deliver(private_text(ALICE, "retried")) == 200
        await tg.wait_sent(ALICE.id)


async def test_the_token_never_reaches_the_adapter_logs(
    tmp_path: Path, tg: FakeTelegram, agents: FakeAgentServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with running(make_config(tmp_path, tg, agents)):
        tg.fail_next("sendMessage", FakeError(500, "Internal Server Error"))
        await answered(tg, private_text(ALICE, "hi"), ALICE.id)
    ours = [r for r in caplog.records if r.name.startswith(("adapters", "bridge", "storage"))]
    assert ours
    assert all(tg.token not in r.getMessage() for r in ours)
