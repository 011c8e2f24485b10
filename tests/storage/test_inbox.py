"""`Store.accept_and_start`, the short way in (``storage/inbox.py``), on SQLite and,
when ``AGENT_BRIDGE_TEST_DATABASE_URL`` is set, on PostgreSQL: the accepting
transaction takes the lease and starts the turn only for a conversation nobody
works on, and leaves everything else to the claim loop exactly as `accept` does."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from bridge.budgets import Charge, Limit, TurnBudget
from bridge.model import Conversation, ConversationKey, InboxMessage, MessageStatus, Usage
from storage import Store
from tests.storage.conftest import Database
from tests.storage.test_queue import PLATFORMS, A, claim, register
from tests.storage.test_store import incoming
from tests.storage.test_usage import NOON, user_messages


def charging(maximum: int | None = None) -> Callable[[InboxMessage], TurnBudget]:
    """What the dispatcher passes: each message charged to "telegram:7", with at
    most ``maximum`` messages a day when given."""

    def of(message: InboxMessage) -> TurnBudget:
        def budget(conversation: Conversation) -> tuple[Charge, list[Limit]]:
            charge = Charge(
                message.id, user="telegram:7", chat="telegram:-100", agent="default", at=NOON
            )
            return charge, [] if maximum is None else [user_messages(maximum)]

        return budget

    return of


async def test_a_message_to_an_idle_conversation_starts_its_turn_as_it_is_accepted(
    store: Store,
) -> None:
    await register(store, "i1")
    await register(store, "i2")
    accepted = await store.accept_and_start(incoming("a1", key=A), "i1", charging())
    assert accepted is not None
    message, started = accepted
    assert started is not None and started.exceeded is None
    assert started.conversation.id == message.conversation_id
    assert started.conversation.key == A
    assert (message.status, message.attempts) == (MessageStatus.RUNNING, 1)
    # The lease is ours: nobody else claims the conversation, and our steps land.
    assert await claim(store, "i2") == []
    assert await store.save_answer(
        message, "i1", "hello", error_kind=None, turn=(0, "s1", Usage(3, 2, 5))
    )
    # Charged once, as start_charged_turn would have, and settled.
    [row] = await store.usage_report(by="user")
    assert (row.group, row.messages, row.input_tokens) == ("telegram:7", 1, 3)


async def test_a_conversation_someone_works_on_is_left_to_its_owner(store: Store) -> None:
    first = await store.accept(incoming("a1", key=A))
    assert first is not None
    await register(store, "i1")
    await register(store, "i2")
    assert await claim(store, "i2") == [first.conversation_id]
    accepted = await store.accept_and_start(incoming("a2", key=A), "i1", charging())
    assert accepted is not None
    second, started = accepted
    assert started is None and second.status is MessageStatus.PENDING
    assert await store.usage_report(by="user") == []
    # Still i2's, which answers it after its first message.
    assert await claim(store, "i1") == []
    assert await store.mark_running(first, "i2")
    assert await store.save_answer(first, "i2", "one", error_kind=None)
    await store.finish_and_release(first, "i2")
    following = await store.next_message(first.conversation_id, "i2")
    assert following is not None and following.id == second.id


async def test_unclaimed_work_keeps_its_order_through_the_claim(store: Store) -> None:
    # Accepted while this instance had no room: pending, nobody holds the conversation.
    older = await store.accept(incoming("a1", key=A))
    assert older is not None
    await register(store, "i1")
    accepted = await store.accept_and_start(incoming("a2", key=A), "i1", charging())
    assert accepted is not None
    newer, started = accepted
    assert started is None and newer.status is MessageStatus.PENDING
    # The conversation is unleased again, and the claim starts on the older message.
    [taken] = await store.claim("i1", platforms=PLATFORMS, limit=5, lease_timeout=30)
    assert taken.first is not None and taken.first.id == older.id


async def test_over_a_budget_the_turn_starts_refused_and_charges_nothing(store: Store) -> None:
    await register(store, "i1")
    accepted = await store.accept_and_start(incoming("a1", key=A), "i1", charging(maximum=0))
    assert accepted is not None
    message, started = accepted
    assert started is not None and started.exceeded is not None
    assert started.exceeded.limit.name == "user_daily_messages"
    assert message.status is MessageStatus.RUNNING  # answered with the refusal next
    assert await store.usage_report(by="user") == []


async def test_a_duplicate_takes_no_lease(store: Store) -> None:
    first = await store.accept(incoming("a1", key=A))
    assert first is not None
    await register(store, "i1")
    await register(store, "i2")
    assert await store.accept_and_start(incoming("a1", key=A), "i1", charging()) is None
    assert await claim(store, "i2") == [first.conversation_id]


async def test_two_instances_accepting_for_one_conversation_at_once_start_it_once(
    db: Database,
) -> None:
    async with db.store() as one, db.store() as two:
        await register(one, "i1")
        await register(two, "i2")
        for n in range(6):
            key = ConversationKey("telegram", "bot", f"race-{n}")
            results = await asyncio.gather(
                one.accept_and_start(incoming(f"x{n}", key=key), "i1", charging()),
                two.accept_and_start(incoming(f"y{n}", key=key), "i2", charging()),
            )
            assert all(r is not None for r in results)
            starters = [owner for r, owner in zip(results, ("i1", "i2"), strict=True) if r and r[1]]
            assert len(starters) == 1, results
            # The other message waits, pending, for the lease holder to take it next.
            waiting = [r[0] for r in results if r is not None and r[1] is None]
            assert [m.status for m in waiting] == [MessageStatus.PENDING]
