"""The claimed work queue's contract, on SQLite and (when configured) PostgreSQL:
leases per conversation, takeover of dead instances, parking, named leases."""

from __future__ import annotations

import asyncio
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bridge.chat import LIVE_REF
from bridge.model import ConversationKey, Finished, MessageStatus, Usage
from storage import Store
from tests.storage.conftest import Database
from tests.storage.test_store import incoming

A = ConversationKey("telegram", "bot", "1")
B = ConversationKey("telegram", "bot", "2")
C = ConversationKey("slack", "T1", "C1")

PLATFORMS = ["telegram", "slack"]


async def register(store: Store, instance: str) -> None:
    # A host of its own: same host and pid would mean "a previous life of mine".
    await store.register_instance(instance, host=instance, pid=1, is_alive=lambda _pid: True)


async def claim(store: Store, instance: str, limit: int = 10, **kwargs: object) -> list[int]:
    claims = await store.claim(
        instance,
        platforms=kwargs.pop("platforms", PLATFORMS),  # type: ignore[arg-type]
        limit=limit,
        lease_timeout=30,
        **kwargs,  # type: ignore[arg-type]
    )
    return [c.conversation_id for c in claims]


async def age_heartbeat(db: Database, instance: str, seconds: float) -> None:
    old = datetime.now(UTC) - timedelta(seconds=seconds)
    if db.backend == "sqlite":
        # As SQLAlchemy stores it (sqlite3's own datetime adapter is deprecated).
        old = old.replace(tzinfo=None).isoformat(" ")  # type: ignore[assignment]
    await db.execute("UPDATE instances SET heartbeat_at = :t WHERE id = :id", t=old, id=instance)


async def test_claims_oldest_first_within_the_limit_and_platforms(store: Store) -> None:
    b = await store.accept(incoming("b1", key=B))
    a = await store.accept(incoming("a1", key=A))
    c = await store.accept(incoming("c1", key=C))
    assert a is not None and b is not None and c is not None
    await register(store, "i1")
    assert await claim(store, "i1", limit=1, platforms=["telegram"]) == [b.conversation_id]
    assert await claim(
        store, "i1", limit=5, platforms=["telegram"], exclude=[b.conversation_id]
    ) == [a.conversation_id]
    assert await claim(store, "i1", platforms=["slack"]) == [c.conversation_id]


async def test_a_claim_carries_each_conversation_s_oldest_unfinished_message(
    store: Store,
) -> None:
    a1 = await store.accept(incoming("a1", key=A))
    a2 = await store.accept(incoming("a2", key=A))
    b1 = await store.accept(incoming("b1", key=B))
    assert a1 is not None and a2 is not None and b1 is not None
    await register(store, "i1")
    claims = await store.claim("i1", platforms=PLATFORMS, limit=10, lease_timeout=30)
    firsts = {c.conversation_id: c.first for c in claims}
    # What the worker would have read with next_message, without that read.
    assert firsts == {
        a1.conversation_id: await store.next_message(a1.conversation_id, "i1"),
        b1.conversation_id: await store.next_message(b1.conversation_id, "i1"),
    }
    first_a = firsts[a1.conversation_id]
    assert first_a is not None
    assert (first_a.id, first_a.text, first_a.key) == (a1.id, a1.text, A)
    assert first_a.status is MessageStatus.PENDING


async def test_a_live_owner_keeps_its_conversation_and_a_dead_one_loses_it(
    store: Store, db: Database
) -> None:
    msg = await store.accept(incoming("a1", key=A))
    assert msg is not None
    await register(store, "i1")
    await register(store, "i2")
    assert await claim(store, "i1") == [msg.conversation_id]
    assert await claim(store, "i2") == []  # i1 is alive
    await age_heartbeat(db, "i1", 31)
    [taken] = await store.claim("i2", platforms=PLATFORMS, limit=5, lease_timeout=30)
    assert taken.conversation_id == msg.conversation_id and taken.taken_from == "i1"
    # i1 comes back: its writes no longer land, so it cannot answer twice.
    assert not await store.mark_running(msg, "i1")
    assert await store.mark_running(msg, "i2")


async def test_a_dead_process_of_the_same_machine_is_cleared_at_once(store: Store) -> None:
    msg = await store.accept(incoming("a1", key=A))
    assert msg is not None
    await store.register_instance("old", host="m1", pid=4242, is_alive=lambda _pid: True)
    await store.register_instance("other-host", host="m2", pid=4243, is_alive=lambda _pid: True)
    assert await claim(store, "old") == [msg.conversation_id]
    assert await store.acquire_lease("poller", "old", lease_timeout=30)

    dead = await store.register_instance("new", host="m1", pid=5000, is_alive=lambda pid: False)
    assert dead == ["old"]  # m2's pid means nothing on m1: it is left alone
    assert await claim(store, "new") == [msg.conversation_id]
    assert await store.acquire_lease("poller", "new", lease_timeout=30)


async def test_messages_come_in_inbox_order_and_release_reports_new_work(store: Store) -> None:
    first = await store.accept(incoming("a1", key=A))
    second = await store.accept(incoming("a2", key=A))
    assert first is not None and second is not None
    await register(store, "i1")
    await claim(store, "i1")
    got = await store.next_message(first.conversation_id, "i1")
    assert got is not None and got.id == first.id
    assert await store.next_message(first.conversation_id, "someone else") is None
    assert await store.mark_running(got, "i1")
    assert await store.save_answer(
        got, "i1", "answer", error_kind=None, turn=(0, "sess-1", Usage(3, 4, 7))
    )
    conv = await store.get_conversation_by_id(first.conversation_id)
    assert (conv.session_id, conv.turns, conv.input_tokens) == ("sess-1", 1, 3)
    assert await store.finish_delivery(got, "i1")
    nxt = await store.next_message(first.conversation_id, "i1")
    assert nxt is not None and nxt.id == second.id
    assert await store.release(first.conversation_id, "i1") is True  # a2 still waits
    assert await claim(store, "i1") == [first.conversation_id]


async def test_a_lost_lease_rolls_the_answer_and_the_turn_back(store: Store, db: Database) -> None:
    msg = await store.accept(incoming("a1", key=A))
    assert msg is not None
    await register(store, "i1")
    await register(store, "i2")
    await claim(store, "i1")
    assert await store.mark_running(msg, "i1")
    await age_heartbeat(db, "i1", 31)
    await claim(store, "i2")
    assert not await store.save_answer(
        msg, "i1", "late answer", error_kind=None, turn=(0, "sess-x", Usage(1, 1, 2))
    )
    conv = await store.get_conversation_by_id(msg.conversation_id)
    assert conv.turns == 0 and conv.session_id is None
    [left] = await store.unfinished()
    assert left.status is MessageStatus.RUNNING and left.reply_text is None


async def test_a_parked_reply_waits_then_anyone_may_claim_it(store: Store, db: Database) -> None:
    msg = await store.accept(incoming("a1", key=A))
    assert msg is not None
    await register(store, "i1")
    await register(store, "i2")
    await claim(store, "i1")
    await store.save_answer(msg, "i1", "answer", error_kind=None)
    await store.park(msg, "i1", retry_in=60)
    assert await claim(store, "i2") == []
    assert (await store.stats()).parked == 1
    await db.execute("UPDATE conversations SET not_before = NULL")
    assert await claim(store, "i2") == [msg.conversation_id]
    again = await store.next_message(msg.conversation_id, "i2")
    assert again is not None and again.status is MessageStatus.ANSWERED
    assert again.delivery_attempts == 1
    assert await store.begin_delivery(again, "i2")
    [left] = await store.unfinished()
    assert left.delivery_attempts == 2


async def test_stats_report_the_oldest_unfinished_message(store: Store) -> None:
    assert (await store.stats()).unfinished == 0
    first = await store.accept(incoming("a1", key=A))
    await store.accept(incoming("b1", key=B))
    assert first is not None
    stats = await store.stats()
    assert stats.unfinished == 2
    assert stats.oldest_created_at is not None
    assert abs(stats.oldest_created_at - datetime.now(UTC)) < timedelta(minutes=1)


async def test_named_leases_have_one_live_holder(store: Store, db: Database) -> None:
    await register(store, "i1")
    await register(store, "i2")
    assert await store.acquire_lease("telegram-poller:1", "i1", lease_timeout=30)
    assert await store.acquire_lease("telegram-poller:1", "i1", lease_timeout=30)  # again
    assert not await store.acquire_lease("telegram-poller:1", "i2", lease_timeout=30)
    await age_heartbeat(db, "i1", 31)
    assert await store.acquire_lease("telegram-poller:1", "i2", lease_timeout=30)
    assert not await store.acquire_lease("telegram-poller:1", "i1", lease_timeout=30)
    await store.release_lease("telegram-poller:1", "i2")
    assert await store.acquire_lease("telegram-poller:1", "i1", lease_timeout=30)


async def test_a_clean_stop_gives_everything_back(store: Store) -> None:
    msg = await store.accept(incoming("a1", key=A))
    assert msg is not None
    await register(store, "i1")
    await register(store, "i2")
    await claim(store, "i1")
    await store.acquire_lease("poller", "i1", lease_timeout=30)
    await store.unregister_instance("i1")
    assert await claim(store, "i2") == [msg.conversation_id]
    assert await store.acquire_lease("poller", "i2", lease_timeout=30)
    assert await store.heartbeat("i2") is True
    assert await store.heartbeat("i1") is False  # gone: it is told so


async def test_concurrent_claims_take_disjoint_conversations(db: Database) -> None:
    async with db.store() as setup:
        for n in range(40):
            await setup.accept(incoming(f"e{n}", key=ConversationKey("telegram", "b", str(n))))
        for name in ("i1", "i2", "i3"):
            await register(setup, name)
    stores = [db.store() for _ in range(3)]
    for s in stores:
        await s.open(migrate=False)
    try:
        held: list[list[int]] = [[], [], []]
        for _ in range(3):
            rounds = await asyncio.gather(
                *(
                    claim(s, f"i{n + 1}", limit=5, exclude=held[n])  # as workers would
                    for n, s in enumerate(stores)
                )
            )
            for n, got in enumerate(rounds):
                held[n].extend(got)
            taken = [cid for got in held for cid in got]
            assert len(taken) == len(set(taken))
        assert sorted(cid for got in held for cid in got) == list(range(1, 41))
    finally:
        for s in stores:
            await s.close()


async def test_postgresql_wakes_listeners_when_work_arrives(db: Database) -> None:
    if db.backend != "postgresql":
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's")
    woke = asyncio.Event()
    async with db.store() as listener, db.store() as other, listener.listen(woke.set):
        await asyncio.wait_for(woke.wait(), 10)  # the first wake: after (re)connecting
        woke.clear()
        await other.accept(incoming("a1", key=A))
        await asyncio.wait_for(woke.wait(), 10)


async def test_a_new_sqlite_file_is_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        async with Store(f"sqlite+aiosqlite:///{tmp_path}/bridge.db") as store:
            await store.accept(incoming("e1"))
            names = ["bridge.db", "bridge.db-wal", "bridge.db-shm"]
            modes = {n: stat.S_IMODE((tmp_path / n).stat().st_mode) for n in names}
    finally:
        os.umask(old)
    assert modes == dict.fromkeys(names, 0o600)


async def test_the_last_delivery_gives_the_conversation_back_in_its_transaction(
    store: Store,
) -> None:
    first = await store.accept(incoming("a1", key=A))
    second = await store.accept(incoming("a2", key=A))
    assert first is not None and second is not None
    await register(store, "i1")
    await register(store, "i2")
    await claim(store, "i1")
    for msg in (first, second):
        assert await store.save_answer(msg, "i1", "answer", error_kind=None)
    assert await store.finish_and_release(first, "i1") is Finished.KEPT  # a2 still waits
    assert await claim(store, "i2") == []
    assert await store.finish_and_release(second, "i1") is Finished.RELEASED
    third = await store.accept(incoming("a3", key=A))
    assert third is not None
    assert await claim(store, "i2") == [first.conversation_id]  # free at once
    assert await store.finish_and_release(third, "i1") is Finished.LOST


async def test_a_cancelled_message_is_never_asked_again_but_an_answer_is_delivered(
    store: Store,
) -> None:
    waiting = await store.accept(incoming("a1", key=A))
    answered = await store.accept(incoming("b1", key=B))
    assert waiting is not None and answered is not None
    await register(store, "i1")
    await claim(store, "i1")
    assert await store.mark_running(waiting, "i1")
    assert await store.save_answer(answered, "i1", "paid for", error_kind=None)
    assert await store.cancel("telegram", "a1") == waiting.id
    assert await store.cancel("telegram", "b1") is None  # its answer goes out
    assert not await store.save_answer(waiting, "i1", "late", error_kind=None)
    assert [m.event_id for m in await store.unfinished()] == ["b1"]


async def test_a_live_answers_reference_is_kept_with_the_message_while_the_lease_holds(
    store: Store, db: Database
) -> None:
    msg = await store.accept(incoming("a1", key=A, meta={"chat_id": 7}))
    assert msg is not None
    await register(store, "i1")
    await register(store, "i2")
    await claim(store, "i1")
    assert not await store.note_live(msg, "i1", "ts-1")  # still pending: nothing shown yet
    assert await store.mark_running(msg, "i1")
    assert await store.note_live(msg, "i1", "ts-1")
    assert not await store.note_live(msg, "i2", "ts-2")  # not its lease
    got = await store.next_message(msg.conversation_id, "i1")
    assert got is not None
    # Merged into the adapter's metadata, which stays as it was.
    assert got.meta == {"chat_id": 7, LIVE_REF: "ts-1"}


async def test_starting_a_turn_marks_it_running_and_reads_the_conversation_at_once(
    store: Store,
) -> None:
    msg = await store.accept(incoming("a1", key=A))
    assert msg is not None
    await register(store, "i1")
    await register(store, "i2")
    await claim(store, "i1")
    assert await store.start_turn(msg, "i2") is None  # not its lease: nothing moves
    conversation = await store.start_turn(msg, "i1")
    assert conversation is not None
    assert (conversation.id, conversation.agent, conversation.session_id) == (
        msg.conversation_id,
        "default",
        None,
    )
    [running] = await store.unfinished()
    assert (running.status, running.attempts) == (MessageStatus.RUNNING, 1)
