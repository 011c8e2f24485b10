"""Accepting a message into the inbox, and, when the accepting instance has room,
starting its turn in the same transaction.

`accept` commits a new message (pending) and finds or creates its conversation;
the claim loop of some instance then takes it (`storage.queue`). `accept_and_start`
is the short way in for the common case, a message to a conversation nobody is
working on: in the accepting transaction it also takes the conversation's lease, marks
the message running and charges the turn to its budgets, which is what `Queue.claim`
and `Queue.start_charged_turn` would have done in two more transactions. A message's
life is then three transactions: accept-and-start, `save_answer`, `finish_and_release`.

It takes the lease only from nobody: a conversation leased (by anyone, this instance
too), parked until later, or holding other unfinished work is left to the claim loop,
so the order of a conversation's messages and the lease rules are the claim's own.
On PostgreSQL the lease is taken by an UPDATE of the conversation's row before the
message is inserted: two instances accepting for one conversation at once queue on
that row lock, and the second sees the first's lease and leaves its message pending.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from bridge.budgets import StartedTurn, TurnBudget
from bridge.errors import StorageError
from bridge.model import InboxMessage, IncomingMessage, MessageStatus
from storage.conversations import Conversations, conversation_from_row
from storage.database import _now
from storage.rows import UNFINISHED_VALUES
from storage.schema import conversations, messages
from storage.usage import reserve_in
from storage.wakeup import Wakeup


class _Duplicate(Exception):
    """Raised inside an accept to roll its transaction back."""


class Inbox(Conversations, Wakeup):
    """The accepting part of the store's queue."""

    async def accept(self, msg: IncomingMessage) -> InboxMessage | None:
        """Commit a new message (status pending) and return it, finding or
        creating its conversation in the same transaction. A message already
        seen (same platform and event id) returns None and changes nothing."""
        accepted = await self._accept(msg, None, None)
        return None if accepted is None else accepted[0]

    async def accept_and_start(
        self,
        msg: IncomingMessage,
        owner: str,
        budget_of: Callable[[InboxMessage], TurnBudget] | None,
    ) -> tuple[InboxMessage, StartedTurn | None] | None:
        """`accept`, and if nobody works on the conversation, in the same transaction:
        ``owner`` takes its lease, the message is marked running (attempt 1) and charged
        under ``budget_of(message)``. The second item is None when the message was left
        pending for the claim loop (others were told, as by `accept`)."""
        return await self._accept(msg, owner, budget_of)

    async def is_known(self, platform: str, event_id: str) -> bool:
        async with self._read("look up a message") as conn:
            return await self._is_known(conn, platform, event_id)

    async def _accept(
        self,
        msg: IncomingMessage,
        owner: str | None,
        budget_of: Callable[[InboxMessage], TurnBudget] | None,
    ) -> tuple[InboxMessage, StartedTurn | None] | None:
        now = _now()
        key = msg.key
        started: StartedTurn | None = None
        try:
            async with self._write("accept a message") as conn:
                if await self._is_known(conn, key.platform, msg.event_id):
                    raise _Duplicate
                row = await self._find_or_create(conn, key, msg.agent, now)
                leased = owner is not None and await self._lease_idle(conn, row.id, owner)
                status = MessageStatus.RUNNING if leased else MessageStatus.PENDING
                attempts = 1 if leased else 0
                # Two deliveries of one event racing each other: the loser's
                # insert does nothing (PostgreSQL waits for the winner first).
                result = await conn.execute(
                    self._insert(messages)
                    .values(
                        platform=key.platform,
                        event_id=msg.event_id,
                        conversation_id=row.id,
                        agent=msg.agent,
                        sender=msg.sender,
                        text=msg.text,
                        reply_to=msg.reply_to,
                        meta=dict(msg.meta),
                        status=status.value,
                        attempts=attempts,
                        created_at=now,
                        updated_at=now,
                    )
                    .on_conflict_do_nothing(index_elements=["platform", "event_id"])
                )
                if result.rowcount != 1:
                    raise _Duplicate  # the lease, if taken, is rolled back with it
                (message_id,) = result.inserted_primary_key or (None,)
                if message_id is None:  # pragma: no cover - both databases report it
                    raise StorageError("the database did not report the new message's id")
                message = InboxMessage(
                    id=int(message_id),
                    conversation_id=row.id,
                    key=key,
                    event_id=msg.event_id,
                    sender=msg.sender,
                    text=msg.text,
                    agent=msg.agent,
                    status=status,
                    attempts=attempts,
                    reply_to=msg.reply_to,
                    meta=dict(msg.meta),
                    created_at=now,
                )
                if leased:
                    conversation = conversation_from_row(row)
                    exceeded = None
                    if budget_of is not None:
                        charge, limits = budget_of(message)(conversation)
                        exceeded = await reserve_in(conn, self._insert, charge, limits)
                    started = StartedTurn(conversation, exceeded)
                else:
                    await self._notify(conn)
        except _Duplicate:
            return None
        return message, started

    async def _lease_idle(self, conn: AsyncConnection, conversation_id: int, owner: str) -> bool:
        """Take the lease of a conversation that nobody holds, that is not parked and
        that has no unfinished message; False (and nothing changed) otherwise."""
        c = conversations.c
        taken = await conn.execute(
            update(conversations)
            .where(
                c.id == conversation_id,
                c.lease_owner.is_(None),
                or_(c.not_before.is_(None), c.not_before <= self._now()),
            )
            .values(lease_owner=owner, not_before=None)
        )
        if taken.rowcount != 1:
            return False
        # Looked at under the lease's row lock: work accepted before ours is the
        # claim loop's, in its order.
        if await self._has_work(conn, conversation_id):
            await conn.execute(
                update(conversations).where(c.id == conversation_id).values(lease_owner=None)
            )
            return False
        return True

    async def _has_work(self, conn: AsyncConnection, conversation_id: int) -> bool:
        query = select(messages.c.id).where(
            messages.c.conversation_id == conversation_id, messages.c.status.in_(UNFINISHED_VALUES)
        )
        return (await conn.execute(query.limit(1))).first() is not None

    async def _is_known(self, conn: AsyncConnection, platform: str, event_id: str) -> bool:
        query = select(messages.c.id).where(
            messages.c.platform == platform, messages.c.event_id == event_id
        )
        return (await conn.execute(query)).first() is not None
