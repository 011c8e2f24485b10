"""The allowlist kept in the store and its pairing codes (``storage/access.py``,
through `bridge.access.Access`), on SQLite and, when
``AGENT_BRIDGE_TEST_DATABASE_URL`` is set, PostgreSQL. The clock is injected."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from bridge.access import CODE_ALPHABET, CODE_LENGTH, Access, CodeRefused
from storage import Store
from tests.storage.conftest import Database

T0 = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def access(store: Store, clock: Clock) -> Access:
    return Access(store, clock=clock)


async def test_a_code_approves_its_person_once(access: Access, store: Store) -> None:
    code = await access.code_for("telegram", "6666", name="@mallory", chat="6666")
    assert len(code) == CODE_LENGTH and set(code) <= set(CODE_ALPHABET)
    assert not await access.approved("telegram", "6666")
    person = await access.approve(code.lower(), actor="cli:root")  # case does not matter
    assert (person.platform, person.user_id, person.name, person.chat) == (
        "telegram",
        "6666",
        "@mallory",
        "6666",
    )
    assert await access.approved("telegram", "6666")
    assert not await access.approved("slack", "6666")
    with pytest.raises(CodeRefused, match="unknown or already used"):
        await access.approve(code, actor="cli:root")
    [entry] = await access.audit()
    assert (entry.action, entry.platform, entry.user_id, entry.actor) == (
        "approve",
        "telegram",
        "6666",
        "cli:root",
    )


async def test_asking_again_within_the_hour_gives_the_same_code(
    access: Access, clock: Clock
) -> None:
    first = await access.code_for("slack", "U0666", chat=None)
    clock.now += timedelta(minutes=59)
    assert await access.code_for("slack", "U0666") == first
    other = await access.code_for("slack", "U0777")
    assert other != first
    clock.now += timedelta(minutes=2)  # first is expired now: a new one
    renewed = await access.code_for("slack", "U0666")
    assert renewed != first
    _, codes = await access.listing()
    assert sorted(c.code for c in codes) == sorted([renewed, other])


async def test_an_expired_code_is_refused(access: Access, clock: Clock) -> None:
    code = await access.code_for("telegram", "6666")
    clock.now += timedelta(hours=1)
    with pytest.raises(CodeRefused, match="expired"):
        await access.approve(code, actor="cli:root")
    assert not await access.approved("telegram", "6666")
    assert await access.audit() == []


async def test_an_admin_approves_only_their_platform(access: Access) -> None:
    code = await access.code_for("slack", "U0666")
    with pytest.raises(CodeRefused, match="for a Slack user"):
        await access.approve(code, actor="telegram:1001", platform="telegram")
    await access.approve(code, actor="slack:U0ADMIN", platform="slack")
    assert await access.approved("slack", "U0666")


async def test_allow_and_deny_are_audited(access: Access, clock: Clock, db: Database) -> None:
    assert await access.allow("slack", "U0666", actor="cli:root")
    clock.now += timedelta(seconds=1)
    assert not await access.allow("slack", "U0666", actor="cli:root")
    pending = await access.code_for("telegram", "42")
    clock.now += timedelta(seconds=1)
    assert await access.deny("slack", "U0666", actor="cli:bob")
    assert not await access.approved("slack", "U0666")
    assert not await access.deny("slack", "U0666", actor="cli:bob")
    # A deny also drops the person's pending code.
    assert await access.deny("telegram", "42", actor="cli:bob") is False
    with pytest.raises(CodeRefused):
        await access.approve(pending, actor="cli:root")
    log = await access.audit()
    assert [(e.action, e.user_id, e.actor) for e in log] == [
        ("allow", "U0666", "cli:root"),
        ("allow", "U0666", "cli:root"),
        ("deny", "U0666", "cli:bob"),
        ("deny", "U0666", "cli:bob"),
        ("deny", "42", "cli:bob"),
    ]
    assert await db.execute("SELECT count(*) FROM access_allowed") == [(0,)]


async def test_listing_shows_the_allowlist_oldest_first(access: Access, clock: Clock) -> None:
    await access.allow("telegram", "2", actor="cli:root")
    clock.now += timedelta(seconds=1)
    code = await access.code_for("telegram", "1", name="@one")
    await access.approve(code, actor="telegram:9")
    allowed, codes = await access.listing()
    assert [(a.user_id, a.added_by, a.name) for a in allowed] == [
        ("2", "cli:root", ""),
        ("1", "telegram:9", "@one"),
    ]
    assert codes == []


async def test_two_stores_agree_without_a_cache(db: Database, clock: Clock) -> None:
    """One instance's approval is seen by another at once (no cache to go stale)."""
    async with db.store() as one, db.store() as two:
        a, b = Access(one, clock=clock), Access(two, clock=clock)
        code = await a.code_for("telegram", "6666")
        assert await b.code_for("telegram", "6666") == code
        assert not await b.approved("telegram", "6666")
        await a.approve(code, actor="cli:root")
        assert await b.approved("telegram", "6666")


async def test_two_instances_refusing_one_person_at_once_hand_out_one_code(
    db: Database, clock: Clock
) -> None:
    async with db.store() as one, db.store() as two:
        a, b = Access(one, clock=clock), Access(two, clock=clock)
        codes = await asyncio.gather(*(access.code_for("slack", "U0666") for access in [a, b] * 4))
        assert len(set(codes)) == 1
        _, pending = await a.listing()
        assert [p.code for p in pending] == codes[:1]
