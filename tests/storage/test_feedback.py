"""Feedback on answers (``storage/feedback.py``), on SQLite and, when
``AGENT_BRIDGE_TEST_DATABASE_URL`` is set, on PostgreSQL."""

from __future__ import annotations

import contextlib
import sqlite3
from datetime import UTC, datetime, timedelta

import pytest

from bridge.model import ConversationKey, IncomingMessage
from storage import Store
from tests.storage.conftest import Database

KEY = ConversationKey("slack", "T1", "C1", "1700000000.000001")


async def a_message(store: Store, event_id: str, agent: str = "default") -> int:
    message = await store.accept(
        IncomingMessage(key=KEY, event_id=event_id, sender="U1", text="q", agent=agent)
    )
    assert message is not None
    return message.id


async def test_a_click_is_stored_with_the_message_user_and_agent(store: Store) -> None:
    message_id = await a_message(store, "e1", agent="analytics")
    before = datetime.now(UTC) - timedelta(seconds=1)
    assert await store.record_feedback(message_id, "U7", "good") == "analytics"
    [entry] = await store.list_feedback()
    assert (entry.message_id, entry.user_id, entry.value) == (message_id, "U7", "good")
    assert (entry.agent, entry.platform, entry.chat) == ("analytics", "slack", "C1")
    assert entry.created_at.tzinfo is not None and entry.created_at >= before


async def test_a_changed_mind_replaces_the_value_per_user(store: Store, db: Database) -> None:
    message_id = await a_message(store, "e1")
    await store.record_feedback(message_id, "U7", "good")
    await store.record_feedback(message_id, "U8", "good")
    await store.record_feedback(message_id, "U7", "bad")
    entries = await store.list_feedback()
    assert sorted((e.user_id, e.value) for e in entries) == [("U7", "bad"), ("U8", "good")]
    assert await db.execute("SELECT count(*) FROM feedback") == [(2,)]


async def test_an_unknown_message_or_another_platform_stores_nothing(store: Store) -> None:
    message_id = await a_message(store, "e1")
    assert await store.record_feedback(message_id + 100, "U7", "good") is None
    assert await store.record_feedback(message_id, "U7", "good", platform="telegram") is None
    assert await store.list_feedback() == []
    assert await store.record_feedback(message_id, "U7", "good", platform="slack") == "default"


async def test_only_good_and_bad_are_values(store: Store) -> None:
    message_id = await a_message(store, "e1")
    with pytest.raises(ValueError):
        await store.record_feedback(message_id, "U7", "meh")
    assert await store.list_feedback() == []


async def test_since_filters_oldest_first(store: Store, db: Database) -> None:
    old, new = await a_message(store, "e1"), await a_message(store, "e2")
    await store.record_feedback(old, "U7", "bad")
    await store.record_feedback(new, "U7", "good")
    week_ago = datetime.now(UTC) - timedelta(days=7)
    await db.execute(
        "UPDATE feedback SET created_at = :at WHERE message_id = :id",
        at=week_ago.replace(tzinfo=None).isoformat(" ") if db.backend == "sqlite" else week_ago,
        id=old,
    )
    assert [e.message_id for e in await store.list_feedback()] == [old, new]
    since = datetime.now(UTC) - timedelta(days=1)
    assert [e.message_id for e in await store.list_feedback(since)] == [new]
    assert await store.list_feedback(datetime.now(UTC) + timedelta(days=1)) == []


async def test_feedback_goes_with_its_message(store: Store, db: Database) -> None:
    message_id = await a_message(store, "e1")
    await store.record_feedback(message_id, "U7", "good")
    if db.backend == "sqlite":
        # A connection of its own with foreign keys on, as the store's are.
        path = db.url.removeprefix("sqlite+aiosqlite:///")
        with contextlib.closing(sqlite3.connect(path)) as conn:
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("DELETE FROM messages WHERE id = ?", (message_id,))
            conn.commit()
    else:
        await db.execute("DELETE FROM messages WHERE id = :id", id=message_id)
    assert await store.list_feedback() == []
    assert await db.execute("SELECT count(*) FROM feedback") == [(0,)]
