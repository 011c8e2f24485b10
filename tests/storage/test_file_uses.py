"""The files users sent (``storage/files.py``), counted for the per-user file limits
across instances: on SQLite and, when ``AGENT_BRIDGE_TEST_DATABASE_URL`` is set, on
PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bridge.config import FilesConfig
from bridge.file_limits import FileLimits
from storage import Store
from tests.storage.conftest import Database


async def test_uses_are_summed_per_user_over_their_windows(store: Store) -> None:
    now = datetime.now(UTC)
    await store.record_file_use("telegram:1", files=1, size=100)
    await store.record_file_use("telegram:1", files=0, size=50)
    await store.record_file_use("telegram:1", files=1, size=0)
    await store.record_file_use("slack:1", files=1, size=7)
    since = now - timedelta(minutes=1)
    assert await store.file_uses("telegram:1", files_since=since, bytes_since=since) == (2, 150)
    assert await store.file_uses("slack:1", files_since=since, bytes_since=since) == (1, 7)
    later = now + timedelta(minutes=5)
    assert await store.file_uses("telegram:1", files_since=later, bytes_since=since) == (0, 150)
    assert await store.file_uses("nobody", files_since=since, bytes_since=since) == (0, 0)


async def test_two_instances_on_one_database_share_the_limits(store: Store, db: Database) -> None:
    other = db.store()
    async with other:
        config = FilesConfig(max_per_minute=2, max_bytes_per_day=10**9)
        first, second = FileLimits(config, store), FileLimits(config, other)
        assert await first.admit("telegram:1", 10) is None
        assert await second.admit("telegram:1", 10) is None
        assert await first.admit("telegram:1", 10) == "per_minute"
        assert await second.admit("telegram:1", 10) == "per_minute"


async def test_old_uses_are_purged_with_the_message_text(store: Store, db: Database) -> None:
    await store.record_file_use("telegram:1", files=1, size=5)
    old = datetime.now(UTC) - timedelta(days=3)
    if db.backend == "sqlite":  # stored naive UTC, see storage.schema.UTCDateTime
        await db.execute(
            "UPDATE file_uses SET created_at = :old",
            old=old.replace(tzinfo=None).isoformat(" "),  # as SQLAlchemy stores it
        )
    else:
        await db.execute("UPDATE file_uses SET created_at = :old", old=old)
    await store.record_file_use("telegram:1", files=1, size=6)
    await store.purge_text(7)
    since = datetime.now(UTC) - timedelta(days=10)
    assert await store.file_uses("telegram:1", files_since=since, bytes_since=since) == (1, 6)
