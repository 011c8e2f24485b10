"""Property tests: any JSON at all, where Telegram puts updates, never raises out of
the poll loop or the webhook, and a good message from another user after the junk is
still answered. One running bridge serves every example of a test (hypothesis reruns
the body, not the fixtures)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.telegram import TelegramAdapter
from bridge.app import Core
from tests.adapters.test_telegram import make_config, running
from tests.adapters.test_telegram_updates import webhook_config
from tests.fakes.agents import FakeAgentServer
from tests.fakes.telegram import BOB, FakeTelegram, private_text

SETTINGS = settings(
    max_examples=40,
    deadline=None,
    database=None,  # no .hypothesis folder in the checkout
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

texts = st.text(alphabet=st.characters(exclude_categories=()), max_size=12) | st.sampled_from(
    ["\x00", "\ud800", "a\udfffb", "/start", "/ask", "@bridge_test_bot", ""]
)
ints = st.integers() | st.sampled_from([0, -1, 2**31, 2**63, 2**64 + 1, -(2**70), 10**30])
scalars = st.none() | st.booleans() | ints | st.floats() | texts
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)


def shaped(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """Dicts with some of ``fields`` (each value right or junk), or any JSON at all."""
    optional = {name: strategy | json_values for name, strategy in fields.items()}
    return st.fixed_dictionaries({}, optional=optional) | json_values


users = shaped({"id": ints, "is_bot": st.booleans(), "first_name": texts, "username": texts})
chats = shaped(
    {
        "id": ints,
        "type": st.sampled_from(["private", "group", "supergroup", "channel", "sender"]),
        "is_forum": st.booleans(),
        "title": texts,
    }
)
entities = st.lists(
    shaped(
        {
            "type": st.sampled_from(["bot_command", "mention", "text_mention", "bold"]),
            "offset": ints,
            "length": ints,
            "user": users,
        }
    ),
    max_size=3,
)
messages = shaped(
    {
        "message_id": ints,
        "date": ints,
        "chat": chats,
        "from": users,
        "text": texts,
        "caption": texts,
        "entities": entities,
        "caption_entities": entities,
        "message_thread_id": ints,
        "is_topic_message": st.booleans(),
        "reply_to_message": json_values,
        "photo": json_values,
    }
)
updates = shaped(
    {
        "message": messages,
        "edited_message": messages,
        "channel_post": messages,
        "my_chat_member": json_values,
    }
)
junk = updates | json_values


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as server:
        yield server


@pytest.fixture
async def agents() -> AsyncIterator[FakeAgentServer]:
    async with FakeAgentServer() as server:
        yield server


@pytest.fixture
async def bridge(
    tmp_path: Path, tg: FakeTelegram, agents: FakeAgentServer
) -> AsyncIterator[tuple[Core, TelegramAdapter]]:
    async with running(make_config(tmp_path, tg, agents)) as pair:
        yield pair


_counter = itertools.count(1)


async def answered_to_bob(tg: FakeTelegram, text: str) -> None:
    await tg.wait_for(lambda: any(c.params["text"] == f"echo: {text}" for c in tg.sent(BOB.id)))


@SETTINGS
@given(raw=junk)
async def test_handle_update_takes_any_json(
    tg: FakeTelegram, bridge: tuple[Core, TelegramAdapter], raw: Any
) -> None:
    _, adapter = bridge
    await adapter.handle_update(raw)  # raises nothing (there is no store failure here)
    text = f"good message {next(_counter)}"
    update = {"update_id": 1, **private_text(BOB, text)}
    await adapter.handle_update(update)
    await answered_to_bob(tg, text)


@settings(SETTINGS, max_examples=20)
@given(batch=st.lists(st.tuples(junk, st.booleans()), min_size=1, max_size=4))
async def test_the_poll_loop_survives_any_batch(
    tg: FakeTelegram, bridge: tuple[Core, TelegramAdapter], batch: list[tuple[Any, bool]]
) -> None:
    _, adapter = bridge
    assert adapter.poller is not None
    text = f"after the junk {next(_counter)}"
    # One batch: nothing yields between the pushes. Telegram always numbers its
    # updates; the junk here sometimes carries its right number, sometimes none.
    for raw, numbered in batch:
        tg.push_raw(raw, set_id=numbered)
    good = tg.push(private_text(BOB, text))
    await answered_to_bob(tg, text)
    await tg.wait_confirmed(good["update_id"])
    assert adapter.problem is None


@settings(SETTINGS, max_examples=20)
@given(raw=junk)
async def test_the_webhook_answers_any_json_with_200(
    tg: FakeTelegram,
    webhook_bridge: tuple[Core, TelegramAdapter],
    raw: Any,
) -> None:
    assert await tg.deliver_raw(raw) == 200
    text = f"webhook message {next(_counter)}"
    assert await tg.deliver(private_text(BOB, text)) == 200
    await answered_to_bob(tg, text)


@pytest.fixture
async def webhook_bridge(
    tmp_path: Path, tg: FakeTelegram, agents: FakeAgentServer
) -> AsyncIterator[tuple[Core, TelegramAdapter]]:
    async with running(webhook_config(tmp_path, tg, agents)) as pair:
        yield pair
