"""The store's contract, on SQLite and (when configured) PostgreSQL."""

from __future__ import annotations

import asyncio
import importlib.util
import socket
import sqlite3
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from bridge.errors import MissingDriverError, StorageError
from bridge.model import ConversationKey, IncomingMessage, MessageStatus, Usage
from storage import Store
from storage.database import MIGRATIONS, head_revision
from storage.database import Database as StoreDatabase
from storage.schema import metadata
from tests.storage.conftest import Database

KEY = ConversationKey("slack", "T1", "C1")


def incoming(event_id: str, key: ConversationKey = KEY, **fields: object) -> IncomingMessage:
    values: dict[str, object] = {"sender": "U1", "text": f"text of {event_id}", "agent": "default"}
    values.update(fields)
    return IncomingMessage(key=key, event_id=event_id, **values)  # type: ignore[arg-type]


async def hold(store: Store, owner: str) -> None:
    """Register ``owner`` as a live instance and claim every conversation for it."""
    await store.register_instance(owner, host=owner, pid=1, is_alive=lambda _pid: True)
    await store.claim(owner, platforms=["slack", "telegram"], limit=100, lease_timeout=30)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- migrations ----------------------------------------------------------


async def test_open_migrates_and_reopening_is_a_no_op(db: Database) -> None:
    async with db.store() as store:
        first = await store.accept(incoming("e1"))
        await store.upgrade()  # again: nothing to do
    async with db.engine() as engine, engine.connect() as conn:
        tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    assert {"conversations", "messages", "alembic_version"} <= tables
    assert await db.execute("SELECT version_num FROM alembic_version") == [(head_revision(),)]

    async with db.store() as store:  # a restart keeps the data
        assert first is not None
        assert [m.id for m in await store.unfinished()] == [first.id]


def test_the_head_read_from_the_scripts_is_alembics() -> None:
    from alembic.config import Config as AlembicConfig
    from alembic.script import ScriptDirectory

    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert head_revision() == ScriptDirectory.from_config(config).get_current_head()


async def test_a_database_at_the_head_is_opened_without_running_alembic(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with db.store():
        pass  # created and migrated

    async def no_upgrade(self: StoreDatabase) -> None:
        raise AssertionError("upgrade ran on a database already at the head")

    monkeypatch.setattr(StoreDatabase, "upgrade", no_upgrade)
    async with db.store() as store:
        assert await store.schema_version() == head_revision()
        assert await store.accept(incoming("e1")) is not None


async def test_migrations_match_the_schema_the_code_uses(db: Database) -> None:
    async with db.store():
        pass
    async with db.engine() as engine, engine.connect() as conn:
        diff = await conn.run_sync(
            lambda c: compare_metadata(MigrationContext.configure(c), metadata)
        )
    assert diff == []


async def test_instances_starting_together_migrate_once(db: Database) -> None:
    stores = [db.store() for _ in range(3)]
    try:
        # Bounded: without the migration lock this can deadlock on PostgreSQL.
        await asyncio.wait_for(asyncio.gather(*(s.open() for s in stores)), timeout=30)
        assert await db.execute("SELECT count(*) FROM alembic_version") == [(1,)]
    finally:
        for s in stores:
            await s.close()


async def test_a_schema_from_a_newer_version_is_refused(db: Database) -> None:
    async with db.store():
        pass
    await db.execute("UPDATE alembic_version SET version_num = '9999_future'")
    with pytest.raises(StorageError, match="newer version"):
        await db.store().open()


# -- the inbox -----------------------------------------------------------


async def test_accept_commits_a_pending_message(store: Store, db: Database) -> None:
    msg = await store.accept(incoming("e1", text="hello"))
    assert msg is not None
    assert msg.status is MessageStatus.PENDING and msg.attempts == 0
    assert msg.text == "hello" and msg.key == KEY and msg.agent == "default"
    assert msg.created_at is not None and msg.created_at.tzinfo is not None
    assert await store.is_known("slack", "e1")
    # Committed: another connection sees it.
    assert await db.execute("SELECT event_id, status FROM messages") == [("e1", "pending")]


async def test_the_same_event_twice_is_accepted_once(store: Store, db: Database) -> None:
    assert await store.accept(incoming("e1")) is not None
    assert await store.accept(incoming("e1", text="redelivered")) is None
    assert await db.execute("SELECT text FROM messages") == [("text of e1",)]
    # The dedupe key is (platform, event id): Telegram may reuse Slack's id.
    other = ConversationKey("telegram", "bot1", "42")
    assert await store.accept(incoming("e1", key=other)) is not None
    assert not await store.is_known("telegram", "e2")


async def test_a_duplicate_leaves_no_conversation_behind(store: Store) -> None:
    await store.accept(incoming("e1"))
    fresh = ConversationKey("slack", "T1", "C2")
    assert await store.accept(incoming("e1", key=fresh)) is None
    assert await store.get_conversation(fresh) is None


async def test_concurrent_deliveries_of_one_event_make_one_message(
    store: Store, db: Database
) -> None:
    async with db.store() as other:
        results = await asyncio.gather(
            *((store, other)[i % 2].accept(incoming("e1")) for i in range(10))
        )
    assert sum(r is not None for r in results) == 1
    assert await db.execute("SELECT count(*) FROM messages") == [(1,)]


async def test_concurrent_messages_for_a_new_chat_share_one_conversation(
    store: Store, db: Database
) -> None:
    # Two instances on one database, 20 messages for one new chat at once:
    # every find-or-create races, and exactly one conversation must win.
    key = ConversationKey("slack", "T1", "C-new", "1700000000.000100")
    async with db.store() as other:
        results = await asyncio.gather(
            *((store, other)[i % 2].accept(incoming(f"e{i}", key=key)) for i in range(20))
        )
    accepted = [r for r in results if r is not None]
    assert len(accepted) == 20
    assert len({m.conversation_id for m in accepted}) == 1
    assert await db.execute("SELECT count(*) FROM conversations") == [(1,)]
    assert await db.execute("SELECT count(*) FROM messages") == [(20,)]


async def test_status_transitions_and_attempts(store: Store) -> None:
    ok = await store.accept(incoming("ok"))
    bad = await store.accept(incoming("bad"))
    assert ok is not None and bad is not None
    await hold(store, "me")

    assert await store.mark_running(ok, "me")
    assert await store.mark_running(ok, "me")  # a retry after a restart
    running = {m.id: m for m in await store.unfinished()}
    assert running[ok.id].status is MessageStatus.RUNNING and running[ok.id].attempts == 2
    assert running[bad.id].status is MessageStatus.PENDING and running[bad.id].attempts == 0

    assert await store.save_answer(ok, "me", "the answer", error_kind=None)
    assert await store.mark_running(bad, "me")
    assert await store.save_answer(
        bad, "me", "sorry, out of credit", error_kind="insufficient_balance"
    )
    answered = {m.id: m for m in await store.unfinished()}
    assert answered[ok.id].status is MessageStatus.ANSWERED
    assert answered[ok.id].reply_text == "the answer" and answered[ok.id].error_kind is None
    assert answered[ok.id].delivery_attempts == 1  # posting begins right after the save
    assert answered[bad.id].error_kind == "insufficient_balance"

    assert await store.finish_delivery(ok, "me")
    assert await store.finish_delivery(bad, "me")
    assert await store.unfinished() == []
    assert await store.count_unfinished() == 0
    assert store.dialect in ("sqlite", "postgresql")


async def test_delivered_status_is_done_or_failed(store: Store, db: Database) -> None:
    ok = await store.accept(incoming("ok"))
    bad = await store.accept(incoming("bad"))
    gone = await store.accept(incoming("gone"))
    assert ok is not None and bad is not None and gone is not None
    await hold(store, "me")
    await store.save_answer(ok, "me", "answer", error_kind=None)
    await store.save_answer(bad, "me", "sorry", error_kind="timeout")
    await store.save_answer(gone, "me", "answer", error_kind=None)
    await store.finish_delivery(ok, "me")
    await store.finish_delivery(bad, "me")
    await store.finish_delivery(gone, "me", undeliverable="undeliverable")
    rows = await db.execute("SELECT event_id, status, error_kind FROM messages ORDER BY id")
    assert rows == [
        ("ok", "done", None),
        ("bad", "failed", "timeout"),
        ("gone", "failed", "undeliverable"),
    ]


async def test_steps_without_the_lease_change_nothing(store: Store) -> None:
    msg = await store.accept(incoming("e1"))
    assert msg is not None
    await hold(store, "owner")
    assert not await store.mark_running(msg, "intruder")
    assert not await store.save_answer(msg, "intruder", "x", error_kind=None)
    [left] = await store.unfinished()
    assert left.status is MessageStatus.PENDING and left.reply_text is None


async def test_unfinished_round_trips_everything_in_order(store: Store) -> None:
    topic = ConversationKey("telegram", "bot1", "-100123", "77")
    meta = {"message_id": 12, "nested": {"list": [1, "two", None]}, "name": "Zoë 🙂"}
    first = await store.accept(
        incoming("t1", key=topic, sender="u9", text="ça va?", reply_to="12", meta=meta)
    )
    second = await store.accept(incoming("s1", agent="analytics"))
    third = await store.accept(incoming("t2", key=topic))
    assert first is not None and second is not None and third is not None
    await hold(store, "me")
    await store.mark_running(second, "me")
    await store.save_answer(second, "me", "x", error_kind=None)
    await store.finish_delivery(second, "me")

    pending = await store.unfinished()
    assert [m.id for m in pending] == [first.id, third.id]
    got = pending[0]
    assert got == first  # every field survives the database
    assert got.key == topic and got.key.thread == "77"
    assert got.meta == meta and got.reply_to == "12" and got.sender == "u9"
    assert got.text == "ça va?"
    assert got.created_at is not None and got.created_at.tzinfo == UTC
    assert abs(got.created_at - datetime.now(UTC)) < timedelta(minutes=1)
    assert pending[1].reply_to is None and pending[1].meta == {}
    assert await store.count_unfinished() == 2


async def test_purge_text_erases_old_finished_messages(store: Store, db: Database) -> None:
    ids = {}
    for event in ("old-done", "old-failed", "new-done", "old-pending"):
        msg = await store.accept(incoming(event, meta={"context": f"earlier, {event}"}))
        assert msg is not None
        ids[event] = msg.id
    await hold(store, "me")
    by_event = {m.event_id: m for m in await store.unfinished()}
    for event, kind in (("old-done", None), ("old-failed", "timeout"), ("new-done", None)):
        await store.save_answer(by_event[event], "me", f"reply to {event}", error_kind=kind)
        await store.finish_delivery(by_event[event], "me")
    ten_days_ago = datetime.now(UTC) - timedelta(days=10)
    if db.backend == "sqlite":  # stored naive UTC, as the store writes it
        # As SQLAlchemy stores it (sqlite3's own datetime adapter is deprecated).
        ten_days_ago = ten_days_ago.replace(tzinfo=None).isoformat(" ")  # type: ignore[assignment]
    for event in ("old-done", "old-failed", "old-pending"):
        await db.execute(
            "UPDATE messages SET updated_at = :t WHERE id = :id", t=ten_days_ago, id=ids[event]
        )

    assert await store.purge_text(7) == 2
    rows = await db.execute("SELECT event_id, text, reply_text FROM messages ORDER BY id")
    assert rows == [
        ("old-done", "", None),
        ("old-failed", "", None),
        ("new-done", "text of new-done", "reply to new-done"),
        ("old-pending", "text of old-pending", None),
    ]
    metas = {e: m for e, m in await db.execute("SELECT event_id, meta FROM messages")}
    # The quoted context (other people's words) goes with the text.
    assert [e for e, m in metas.items() if "earlier" in str(m)] == ["new-done", "old-pending"]
    assert await store.purge_text(7) == 0  # nothing left to erase
    assert await store.purge_text(0) == 1  # now the recent one too


# -- conversations -------------------------------------------------------


async def test_one_conversation_per_key_including_no_thread(store: Store) -> None:
    a = await store.accept(incoming("e1"))
    b = await store.accept(incoming("e2"))
    threaded = ConversationKey("slack", "T1", "C1", "1700000000.000100")
    c = await store.accept(incoming("e3", key=threaded))
    assert a is not None and b is not None and c is not None
    assert a.conversation_id == b.conversation_id != c.conversation_id

    conv = await store.get_conversation(KEY)
    assert conv is not None and conv.id == a.conversation_id
    assert conv.key == KEY and conv.key.thread is None
    assert conv.agent == "default" and conv.session_id is None
    assert conv.epoch == 0 and conv.turns == 0
    assert conv.created_at.tzinfo == UTC and conv.last_active_at.tzinfo == UTC
    assert (await store.get_conversation(threaded)) == await store.get_conversation_by_id(
        c.conversation_id
    )
    assert len(await store.list_conversations()) == 2
    assert await store.get_conversation(ConversationKey("slack", "T2", "C1")) is None


async def test_ensure_conversation_finds_or_creates(store: Store) -> None:
    created = await store.ensure_conversation(KEY, "default")
    again = await store.ensure_conversation(KEY, "default")
    assert created == again
    msg = await store.accept(incoming("e1"))
    assert msg is not None and msg.conversation_id == created.id


async def test_a_conversation_follows_a_new_agent_with_a_fresh_session(store: Store) -> None:
    conv = await store.ensure_conversation(KEY, "default")
    await store.record_turn(conv.id, epoch=0, session_id="sess-1", usage=Usage())
    msg = await store.accept(incoming("e1", agent="analytics"))
    assert msg is not None and msg.agent == "analytics"
    moved = await store.get_conversation_by_id(conv.id)
    assert moved.agent == "analytics" and moved.session_id is None and moved.epoch == 1


async def test_get_conversation_by_unknown_id_is_an_error(store: Store) -> None:
    with pytest.raises(StorageError, match="conversation 404 does not exist"):
        await store.get_conversation_by_id(404)


async def test_record_turn_counts_and_respects_resets(store: Store) -> None:
    conv = await store.ensure_conversation(KEY, "default")
    await store.record_turn(
        conv.id, epoch=0, session_id="sess-1", usage=Usage(input_tokens=10, output_tokens=5)
    )
    after = await store.get_conversation_by_id(conv.id)
    assert after.session_id == "sess-1" and after.turns == 1
    assert (after.input_tokens, after.output_tokens) == (10, 5)
    assert after.last_active_at >= conv.last_active_at

    # /reset while a turn of epoch 0 is in flight: its late session id must
    # not bring the old session back.
    reset = await store.reset_conversation(KEY)
    assert reset is not None and reset.session_id is None and reset.epoch == 1
    await store.record_turn(
        conv.id, epoch=0, session_id="sess-1", usage=Usage(input_tokens=1, output_tokens=1)
    )
    late = await store.get_conversation_by_id(conv.id)
    assert late.session_id is None and late.turns == 2 and late.input_tokens == 11

    await store.record_turn(conv.id, epoch=1, session_id="sess-2", usage=Usage())
    assert (await store.get_conversation_by_id(conv.id)).session_id == "sess-2"

    with pytest.raises(StorageError):
        await store.record_turn(999, epoch=0, session_id=None, usage=Usage())


async def test_reset_conversations_by_filter(store: Store) -> None:
    keys = {
        "slack-c1": (ConversationKey("slack", "T1", "C1"), "default"),
        "slack-c1-thread": (ConversationKey("slack", "T1", "C1", "9.1"), "default"),
        "slack-c2": (ConversationKey("slack", "T1", "C2"), "analytics"),
        "telegram": (ConversationKey("telegram", "bot", "C1"), "default"),
    }
    ids = {}
    for name, (key, agent) in keys.items():
        conv = await store.ensure_conversation(key, agent)
        await store.record_turn(conv.id, epoch=0, session_id=f"s-{name}", usage=Usage())
        ids[name] = conv.id

    async def sessions() -> dict[str, str | None]:
        return {name: (await store.get_conversation_by_id(i)).session_id for name, i in ids.items()}

    assert await store.reset_conversations(platform="slack", chat="C1", thread="9.1") == 1
    assert (await sessions())["slack-c1-thread"] is None
    assert await store.reset_conversations(agent="analytics") == 1
    assert await store.reset_conversations(chat="C1") == 3
    assert set((await sessions()).values()) == {None}
    assert await store.reset_conversations() == 4
    assert await store.reset_conversation(ConversationKey("slack", "T9", "C9")) is None
    assert {c.epoch for c in await store.list_conversations()} == {2, 3}


async def test_list_conversations_by_platform_most_recent_first(store: Store) -> None:
    older = await store.ensure_conversation(ConversationKey("slack", "T1", "C1"), "default")
    newer = await store.ensure_conversation(ConversationKey("slack", "T1", "C2"), "default")
    await store.ensure_conversation(ConversationKey("telegram", "bot", "1"), "default")
    await store.record_turn(newer.id, epoch=0, session_id="s", usage=Usage())
    slack = await store.list_conversations(platform="slack")
    assert [c.id for c in slack] == [newer.id, older.id]
    assert len(await store.list_conversations()) == 3


# -- errors --------------------------------------------------------------


async def test_database_failures_become_storage_errors(store: Store, db: Database) -> None:
    await db.execute("DROP TABLE feedback")  # it refers to messages (PostgreSQL checks)
    await db.execute("DROP TABLE messages")
    with pytest.raises(StorageError, match="cannot accept a message") as caught:
        await store.accept(incoming("e1"))
    assert caught.value.__cause__ is not None
    assert "INSERT" not in str(caught.value) and "SELECT" not in str(caught.value)


async def test_unreachable_postgresql_is_a_storage_error_without_the_password() -> None:
    url = f"postgresql+asyncpg://bridge:s3cret-pw@127.0.0.1:{closed_port()}/bridge"
    store = Store(url)
    with pytest.raises(StorageError) as caught:
        await store.open()
    message = str(caught.value)
    assert "s3cret-pw" not in message and "s3cret-pw" not in repr(store)
    assert "***" in message and "127.0.0.1" in message
    with pytest.raises(StorageError, match="not open"):
        await store.ping()


async def test_missing_sqlite_folder_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "no" / "such" / "folder"
    with pytest.raises(StorageError, match="does not exist") as caught:
        await Store(f"sqlite+aiosqlite:///{folder}/bridge.db").open()
    assert str(folder) in str(caught.value)


async def test_a_missing_driver_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    # An installation without the postgres extra: asyncpg cannot be imported.
    monkeypatch.setitem(sys.modules, "asyncpg", None)
    with pytest.raises(MissingDriverError, match=r"pip install 'agent-bridge\[postgres\]'"):
        await Store("postgresql+asyncpg://bridge:pw@127.0.0.1/bridge").open()


@pytest.mark.skipif(importlib.util.find_spec("psycopg") is not None, reason="psycopg installed")
async def test_another_postgresql_driver_points_to_asyncpg() -> None:
    with pytest.raises(MissingDriverError, match=r"postgresql\+asyncpg.*agent-bridge\[postgres\]"):
        await Store("postgresql+psycopg://bridge:pw@127.0.0.1/bridge").open()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("not a url :: at all", "storage.url: cannot parse"),
        ("mysql+aiomysql://bridge:pw@127.0.0.1/bridge", "unsupported database 'mysql'"),
        ("sqlite+pysqlite:///bridge.db", "storage.url: cannot use"),
    ],
)
async def test_unusable_urls_name_the_key(url: str, expected: str) -> None:
    with pytest.raises(StorageError, match=expected) as caught:
        await Store(url).open()
    assert ":pw@" not in str(caught.value)


async def test_a_closed_store_refuses_work_and_reopening(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path}/bridge.db")  # bare sqlite:// means aiosqlite
    async with store:
        await store.ping()
    await store.close()  # twice is fine
    with pytest.raises(StorageError, match="closed"):
        await store.accept(incoming("e1"))
    with pytest.raises(StorageError, match="closed"):
        await store.open()


# -- SQLite specifics ----------------------------------------------------


async def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "bridge.db"
    async with Store(f"sqlite+aiosqlite:///{path}"):
        pass
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    conn.close()


async def test_sqlite_in_memory_serves_concurrent_calls() -> None:
    async with Store("sqlite+aiosqlite://") as store:
        results = await asyncio.gather(*(store.accept(incoming(f"e{i}")) for i in range(10)))
        assert all(r is not None for r in results)
        assert len(await store.unfinished()) == 10


async def test_schema_option_is_for_postgresql_only(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="PostgreSQL"):
        await Store(f"sqlite+aiosqlite:///{tmp_path}/b.db", schema="x").open()
