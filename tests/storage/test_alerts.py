"""The admin alerts' state (``storage/alerts.py``), on SQLite and, when
``AGENT_BRIDGE_TEST_DATABASE_URL`` is set, on PostgreSQL: one claim per problem
per ``repeat_after``, however many instances race for it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from storage import Store
from tests.storage.conftest import Database

KINDS = ("insufficient_balance", "unauthorized")


async def test_a_new_problem_is_claimed_once_within_repeat_after(store: Store) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    first = await store.claim_alert("insufficient_balance", "default", repeat_after=3600)
    assert first is not None
    assert (first.kind, first.subject) == ("insufficient_balance", "default")
    assert first.since >= before and first.sent_at == first.since
    assert await store.claim_alert("insufficient_balance", "default", repeat_after=3600) is None
    # Another kind, or another agent, is another problem.
    assert await store.claim_alert("unauthorized", "default", repeat_after=3600) is not None
    assert await store.claim_alert("insufficient_balance", "other", repeat_after=3600) is not None


async def test_after_repeat_after_it_is_claimed_again_with_its_first_since(
    store: Store, db: Database
) -> None:
    first = await store.claim_alert("not_found", "default", repeat_after=3600)
    assert first is not None
    await db.execute(
        "UPDATE alerts SET sent_at = :t", t=_stored(db, first.since - timedelta(hours=2))
    )
    again = await store.claim_alert("not_found", "default", repeat_after=3600)
    assert again is not None and again.since == first.since and again.sent_at > first.since


async def test_a_released_claim_is_claimed_by_the_next_occurrence(store: Store) -> None:
    first = await store.claim_alert("unauthorized", "default", repeat_after=3600)
    assert first is not None
    await store.release_alert(first)
    again = await store.claim_alert("unauthorized", "default", repeat_after=3600)
    assert again is not None and again.since == first.since
    # Nothing to recover from an alert that never went out... but this one did.
    assert [r.kind for r in await store.clear_alerts("default", KINDS)] == ["unauthorized"]


async def test_clearing_returns_announced_problems_once(store: Store) -> None:
    claimed = await store.claim_alert("insufficient_balance", "default", repeat_after=3600)
    assert claimed is not None
    [cleared] = await store.clear_alerts("default", KINDS)
    assert (cleared.kind, cleared.subject, cleared.since) == (
        "insufficient_balance",
        "default",
        claimed.since,
    )
    assert await store.clear_alerts("default", KINDS) == []
    assert await store.clear_alerts("nobody", KINDS) == []


async def test_an_unannounced_problem_clears_silently(store: Store) -> None:
    claimed = await store.claim_alert("insufficient_balance", "default", repeat_after=3600)
    assert claimed is not None
    await store.release_alert(claimed)  # the send failed: the admins never heard of it
    assert await store.clear_alerts("default", KINDS) == []


async def test_a_problem_back_within_repeat_after_is_not_announced_nor_recovered(
    store: Store, db: Database
) -> None:
    assert await store.claim_alert("insufficient_balance", "default", repeat_after=3600)
    assert len(await store.clear_alerts("default", KINDS)) == 1
    # It comes back ten minutes later: repeat_after spaces the alerts of a flapping problem.
    assert await store.claim_alert("insufficient_balance", "default", repeat_after=3600) is None
    assert await store.clear_alerts("default", KINDS) == []
    [(since,)] = await db.execute("SELECT since FROM alerts")
    assert since is None


async def test_two_instances_racing_send_one_alert_and_one_recovery(db: Database) -> None:
    async with db.store() as one, db.store() as two:
        won = []
        for _ in range(3):
            claims = await asyncio.gather(
                *(s.claim_alert("degraded", "bridge", repeat_after=3600) for s in (one, two) * 4)
            )
            won.append(len([c for c in claims if c is not None]))
        assert won == [1, 0, 0]
        assert await db.execute("SELECT count(*) FROM alerts") == [(1,)]
        clears = await asyncio.gather(
            *(s.clear_alerts("bridge", ["degraded"]) for s in (one, two) * 4)
        )
        assert sorted(len(c) for c in clears) == [0] * 7 + [1]


async def test_two_instances_racing_for_a_new_problem_one_wins(db: Database) -> None:
    async with db.store() as one, db.store() as two:
        for agent in ("a", "b", "c"):
            claims = await asyncio.gather(
                *(s.claim_alert("not_found", agent, repeat_after=3600) for s in (one, two) * 3)
            )
            assert len([c for c in claims if c is not None]) == 1, agent


def _stored(db: Database, moment: datetime) -> object:
    # SQLite keeps naive UTC (storage.schema.UTCDateTime); PostgreSQL takes aware values.
    if db.backend == "sqlite":
        return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    return moment
