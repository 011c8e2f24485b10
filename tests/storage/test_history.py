"""The store as `ConversationHistory` (``storage/history.py``), on SQLite and, when
``AGENT_BRIDGE_TEST_DATABASE_URL`` is set, on PostgreSQL; and `MemoryHistory`,
which must behave the same."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from bridge.history import ConversationHistory, HistoryTurn, MemoryHistory
from storage import Store
from tests.storage.conftest import Database


@pytest.fixture(params=["store", "memory"])
async def history(
    request: pytest.FixtureRequest, db: Database
) -> AsyncIterator[ConversationHistory]:
    if request.param == "memory":
        yield MemoryHistory()
        return
    async with db.store() as store:
        yield store


def pairs(turns: list[HistoryTurn]) -> list[tuple[str, str]]:
    return [(t.user, t.assistant) for t in turns]


async def test_turns_come_back_oldest_first(history: ConversationHistory) -> None:
    assert await history.load("s1", max_chars=1000) == []
    await history.append("s1", "one", "echo: one")
    await history.append("s1", "two", "echo: two")

    assert pairs(await history.load("s1", max_chars=1000)) == [
        ("one", "echo: one"),
        ("two", "echo: two"),
    ]


async def test_sessions_are_kept_apart(history: ConversationHistory) -> None:
    await history.append("a", "a1", "r")
    await history.append("b", "b1", "r")
    await history.append("a", "a2", "r")

    assert [t.user for t in await history.load("a", max_chars=1000)] == ["a1", "a2"]
    assert [t.user for t in await history.load("b", max_chars=1000)] == ["b1"]
    assert await history.load("c", max_chars=1000) == []


async def test_only_the_newest_turns_that_fit_come_back(history: ConversationHistory) -> None:
    for n in range(10):
        await history.append("s", f"u{n}", "x" * 8)  # 10 characters a turn

    assert [t.user for t in await history.load("s", max_chars=30)] == ["u7", "u8", "u9"]
    assert [t.user for t in await history.load("s", max_chars=39)] == ["u7", "u8", "u9"]
    assert [t.user for t in await history.load("s", max_chars=9)] == []
    assert len(await history.load("s", max_chars=10_000)) == 10


async def test_an_older_turn_never_comes_without_the_newer_ones(
    history: ConversationHistory,
) -> None:
    await history.append("s", "short", "a")
    await history.append("s", "long " * 20, "b")
    await history.append("s", "newest", "c")

    # The long turn does not fit; the short one before it would, but is not sent alone.
    assert [t.user for t in await history.load("s", max_chars=30)] == ["newest"]


async def test_long_threads_are_read_past_one_page(db: Database) -> None:
    async with db.store() as store:
        for n in range(250):  # more than the store's page of 100 rows
            await store.append("s", f"{n:03d}", "")
        turns = await store.load("s", max_chars=3 * 220)

    assert [t.user for t in turns] == [f"{n:03d}" for n in range(30, 250)]


async def test_text_is_kept_exactly(history: ConversationHistory) -> None:
    text = "Ünïcödé ✓ 'quotes' \"double\" \n newlines; DROP TABLE history; -- \x00?"
    text = text.replace("\x00", "")  # PostgreSQL text cannot hold NUL
    await history.append("s", text, text[::-1])
    [turn] = await history.load("s", max_chars=10_000)
    assert (turn.user, turn.assistant) == (text, text[::-1])


async def test_purge_text_deletes_history_older_than_the_retention(
    store: Store, db: Database
) -> None:
    await store.append("s", "old", "reply")
    await store.append("s", "new", "reply")
    old = datetime.now(UTC) - timedelta(days=10)
    if db.backend == "sqlite":  # stored naive UTC, see storage.schema.UTCDateTime
        await db.execute(
            "UPDATE history SET created_at = :old WHERE user_text = 'old'",
            old=old.replace(tzinfo=None).isoformat(" "),  # as SQLAlchemy stores it
        )
    else:
        await db.execute("UPDATE history SET created_at = :old WHERE user_text = 'old'", old=old)

    await store.purge_text(7)

    assert [t.user for t in await store.load("s", max_chars=1000)] == ["new"]
    assert await db.execute("SELECT count(*) FROM history") == [(1,)]
    await store.purge_text(0)
    assert await store.load("s", max_chars=1000) == []
