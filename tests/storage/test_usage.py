"""Usage accounting and the budgets' counters (``storage/usage.py``), on SQLite and,
when ``AGENT_BRIDGE_TEST_DATABASE_URL`` is set, on PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime

from bridge.budgets import Charge, Limit
from bridge.model import InboxMessage, Usage
from storage import Store
from tests.storage.conftest import Database
from tests.storage.test_store import hold, incoming

NOON = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)


def charge(message_id: int, user: str = "telegram:7", agent: str = "default") -> Charge:
    return Charge(message_id, user=user, chat="telegram:-100", agent=agent, at=NOON)


def user_messages(maximum: int, user: str = "telegram:7") -> Limit:
    return Limit("user_daily_messages", (f"user:{user}", "2027-03-01"), "messages", maximum)


async def running(store: Store, event_id: str) -> InboxMessage:
    """A message accepted, claimed by "i1" and started, as the dispatcher has it."""
    accepted = await store.accept(incoming(event_id))
    assert accepted is not None
    await hold(store, "i1")
    message = await store.next_message(accepted.conversation_id, "i1")
    assert message is not None and message.id == accepted.id
    assert await store.start_turn(message, "i1") is not None
    return message


async def test_a_turn_is_charged_then_settled_on_every_counter(store: Store) -> None:
    message = await running(store, "e1")
    assert await store.reserve_usage(charge(message.id), []) is None
    assert await store.save_answer(
        message, "i1", "answer", error_kind=None, turn=(0, "s", Usage(30, 12, 42))
    )
    keys = charge(message.id).keys
    counts = await store.usage_counts(keys)
    assert sorted(keys) == sorted(counts)
    assert {(c.messages, c.input_tokens, c.output_tokens) for c in counts.values()} == {(1, 30, 12)}
    [day] = await store.usage_report(by="day")
    assert (day.group, day.messages, day.input_tokens, day.output_tokens) == (
        "2027-03-01",
        1,
        30,
        12,
    )
    assert [r.group for r in await store.usage_report(by="user")] == ["telegram:7"]
    assert [r.group for r in await store.usage_report(by="chat")] == ["telegram:-100"]
    assert [r.group for r in await store.usage_report(by="agent")] == ["default"]


async def test_a_limit_reached_refuses_and_charges_nothing(store: Store) -> None:
    for n in range(2):
        assert await store.reserve_usage(charge(n + 1), [user_messages(2)]) is None
    exceeded = await store.reserve_usage(charge(3), [user_messages(2)])
    assert exceeded is not None
    assert (exceeded.limit.name, exceeded.used) == ("user_daily_messages", 2)
    counts = await store.usage_counts([("user:telegram:7", "2027-03-01")])
    assert counts[("user:telegram:7", "2027-03-01")].messages == 2
    [row] = await store.usage_report(by="user")
    assert row.messages == 2
    # Another user's counter is their own.
    assert await store.reserve_usage(charge(4, user="telegram:8"), [user_messages(2)]) is None


async def test_a_token_limit_refuses_once_the_tokens_used_reach_it(store: Store) -> None:
    tokens = Limit("user_daily_tokens", ("user:telegram:7", "2027-03-01"), "tokens", 50)
    message = await running(store, "e1")
    assert await store.reserve_usage(charge(message.id), [tokens]) is None
    # The turn that crosses the limit is let through: its tokens are known after it.
    await store.save_answer(message, "i1", "a", error_kind=None, turn=(0, "s", Usage(40, 20, 60)))
    exceeded = await store.reserve_usage(charge(message.id + 1), [tokens])
    assert exceeded is not None and exceeded.used == 60


async def test_a_retried_turn_is_charged_once(store: Store) -> None:
    limit = user_messages(5)
    assert await store.reserve_usage(charge(1), [limit]) is None
    assert await store.reserve_usage(charge(1), [limit]) is None  # the retry after a crash
    counts = await store.usage_counts([limit.key])
    assert counts[limit.key].messages == 1
    # A retry is let through even when the limit was reached since (it was paid for).
    assert await store.reserve_usage(charge(1), [user_messages(1)]) is None


async def test_a_turn_without_an_answer_gives_its_charge_back(store: Store) -> None:
    message = await running(store, "e1")
    assert await store.reserve_usage(charge(message.id), []) is None
    assert await store.save_answer(message, "i1", "the agent failed", error_kind="timeout")
    counts = await store.usage_counts(charge(message.id).keys)
    assert {c.messages for c in counts.values()} == {0}
    assert await store.usage_report() == []


async def test_usage_outlives_the_purge_of_message_text(store: Store, db: Database) -> None:
    message = await running(store, "e1")
    await store.reserve_usage(charge(message.id), [])
    await store.save_answer(message, "i1", "a", error_kind=None, turn=(0, "s", Usage(5, 6, 11)))
    await store.finish_delivery(message, "i1")
    old = datetime(2000, 1, 1, tzinfo=UTC)
    # SQLite: as SQLAlchemy stores it (sqlite3's own datetime adapter is deprecated).
    at: object = old.replace(tzinfo=None).isoformat(" ") if db.backend == "sqlite" else old
    await db.execute("UPDATE messages SET updated_at = :t", t=at)
    assert await store.purge_text(1) == 1
    [row] = await store.usage_report(by="user")
    assert (row.messages, row.input_tokens, row.output_tokens) == (1, 5, 6)


async def test_since_counts_from_that_day(store: Store) -> None:
    later = Charge(2, "telegram:7", "telegram:-100", "default", at=NOON.replace(day=2))
    await store.reserve_usage(charge(1), [])
    await store.reserve_usage(later, [])
    assert [r.group for r in await store.usage_report(by="day")] == ["2027-03-01", "2027-03-02"]
    assert [r.group for r in await store.usage_report(since=date(2027, 3, 2))] == ["2027-03-02"]


async def test_two_stores_cannot_overspend_a_shared_cap(db: Database) -> None:
    """Two stores (as two instances have) charging at once: exactly the cap passes."""
    cap = Limit("agent_daily_messages", ("agent:default", "2027-03-01"), "messages", 5)
    async with db.store() as one, db.store() as two:
        results = await asyncio.gather(
            *(
                (one if n % 2 else two).reserve_usage(charge(n, user=f"slack:U{n}"), [cap])
                for n in range(1, 21)
            )
        )
        assert sum(r is None for r in results) == 5
        assert (await one.usage_counts([cap.key]))[cap.key].messages == 5
        assert len(await two.usage_report(by="user")) == 5


async def test_a_turn_is_started_and_charged_in_one_transaction(store: Store) -> None:
    first, second = await running(store, "e1"), await store.accept(incoming("e2"))
    assert second is not None
    seen = []

    def budget(conversation: object) -> tuple[Charge, list[Limit]]:
        seen.append(conversation)
        return charge(second.id), [user_messages(1)]

    # Not this instance's lease: nothing moves, nothing is charged.
    assert await store.start_charged_turn(second, "i2", budget) is None
    assert seen == []
    started = await store.start_charged_turn(second, "i1", budget)
    assert started is not None
    conversation, exceeded = started
    assert exceeded is None and conversation.id == second.conversation_id
    assert seen == [conversation]
    # The budget's one message is spent: the first message's turn is refused.
    again = await store.start_charged_turn(
        first, "i1", lambda _c: (charge(first.id), [user_messages(1)])
    )
    assert again is not None and again[1] is not None and again[1].used == 1
    [row] = await store.usage_report(by="user")
    assert row.messages == 1
