"""The inbox as a claimed work queue: every statement that moves a message.

A message's life, and who moves it (every transition is one statement here)::

    accept ──> pending ──mark_running──> running ──save_answer──> answered
                                                                     │
                      ┌─── begin_delivery (a retry) ─────────────────┤
                      │                                              │
                      └──> answered ──finish_delivery──> done | failed
                                │
                                └─park: the platform refused; the conversation
                                  waits until ``not_before``, then is claimed again

    pending | running ──cancel (the sender gave up)──> failed, error_kind "cancelled"

    accept_and_start ──> running (the lease taken and the turn charged in the
    accepting transaction, when nobody works on the conversation: `storage.inbox`)

Work is claimed per conversation, never per message: an instance takes a
conversation's lease (``conversations.lease_owner``) with `claim`, answers its
unfinished messages one at a time in inbox order (`next_message`), and gives
the lease back (`release`, or `park` after a refused post). A lease is valid
while its owner heartbeats (``instances.heartbeat_at``, see
`storage.instances`); a conversation whose owner stopped heartbeating for
``lease_timeout`` seconds is claimable again (a takeover). Every write of the
worker is conditional on still holding the lease, so an instance that lost
its lease (it was cut off from the database for longer than the timeout)
cannot write over its successor's work.

PostgreSQL: `claim` locks the candidate rows ``FOR UPDATE SKIP LOCKED``, so
instances claiming at once take disjoint conversations without waiting for
each other; `accept`, `park` and `release` send ``NOTIFY agent_bridge_work``
so that idle instances look at once (`listen`). SQLite: the same statements;
its write lock serializes them (one process).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, exists, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from bridge.budgets import Exceeded, TurnBudget
from bridge.chat import LIVE_REF
from bridge.errors import StorageError
from bridge.model import (
    Conversation,
    Finished,
    InboxMessage,
    MessageStatus,
    Usage,
)
from storage.conversations import conversation_from_row, turn_update
from storage.database import _now
from storage.inbox import Inbox
from storage.queue_views import QueueStats, QueueViews
from storage.rows import (
    FINISHED,
    KEY_COLUMNS,
    UNFINISHED,
    UNFINISHED_VALUES,
    inbox_message,
    unfinished_condition,
)
from storage.schema import conversations, instances, messages
from storage.usage import reserve_in, settle_usage
from storage.wakeup import WORK_CHANNEL

log = logging.getLogger("storage")


class _LeaseLost(Exception):
    """Raised inside a worker's transaction to roll it back."""


@dataclass(frozen=True, slots=True)
class Claim:
    """A conversation this instance now holds."""

    conversation_id: int
    #: The previous owner, when the lease was taken over from a dead instance.
    taken_from: str | None
    #: The conversation's oldest unfinished message, read by the claim itself: the
    #: worker starts on it without a read of its own (one round trip less on the way
    #: in). None only for claims made without it.
    first: InboxMessage | None = None


class Queue(Inbox, QueueViews):
    """The inbox half of the store: accepting (`storage.inbox`), claiming, each step."""

    # --- claiming --------------------------------------------------------------------

    async def claim(
        self,
        owner: str,
        *,
        platforms: Sequence[str],
        limit: int,
        lease_timeout: float,
        exclude: Sequence[int] = (),
    ) -> list[Claim]:
        """Take the leases of up to ``limit`` conversations of ``platforms``
        that have unfinished work and are free: unleased, leased by ``owner``
        itself (a lease it failed to give back), or leased by an instance that
        has not heartbeated for ``lease_timeout`` seconds. Conversations whose
        oldest unfinished message is oldest come first; ``exclude`` lists
        those ``owner`` is working on already."""
        if limit <= 0 or not platforms:
            return []
        c = conversations.c
        m = messages.c
        alive = select(instances.c.id).where(
            instances.c.heartbeat_at >= self._ago(lease_timeout), instances.c.id != owner
        )
        # Walk the unfinished messages in inbox order (a partial index holds just
        # them), taking each conversation at its oldest unfinished message, and stop
        # at ``limit``: "oldest waiting first" without ranking every conversation
        # with work, which made each round cost as much as the whole backlog. Rows
        # are locked as they are read, so only the conversations taken are locked.
        first = messages.alias("earlier")
        oldest = (
            select(func.min(first.c.id))
            .where(first.c.conversation_id == m.conversation_id, unfinished_condition(first))
            .scalar_subquery()
        )
        candidates = (
            select(
                c.id.label("claimed_id"),
                c.lease_owner.label("previous_owner"),
                messages,
                *KEY_COLUMNS,
            )
            .select_from(messages)
            .join(conversations, c.id == m.conversation_id)
            .where(
                unfinished_condition(messages),
                m.id == oldest,
                c.platform.in_(list(platforms)),
                or_(c.not_before.is_(None), c.not_before <= self._now()),
                or_(c.lease_owner.is_(None), c.lease_owner == owner, c.lease_owner.not_in(alive)),
            )
            .order_by(m.id)
            .limit(limit)
            # Instances claiming together skip each other's candidates instead
            # of queueing behind them (ignored on SQLite: its write lock serializes).
            .with_for_update(of=conversations, skip_locked=True)
        )
        if exclude:
            candidates = candidates.where(m.conversation_id.not_in(list(exclude)))
        async with self._write("claim work") as conn:
            rows = (await conn.execute(candidates)).all()
            if not rows:
                return []
            await conn.execute(
                update(conversations)
                .where(c.id.in_([row.claimed_id for row in rows]))
                .values(lease_owner=owner, not_before=None)
            )
        return [
            Claim(
                row.claimed_id,
                row.previous_owner if row.previous_owner not in (None, owner) else None,
                inbox_message(row),
            )
            for row in rows
        ]

    async def next_message(self, conversation_id: int, owner: str) -> InboxMessage | None:
        """The conversation's oldest unfinished message, if ``owner`` holds its
        lease; None when there is none (or the lease is gone)."""
        m = messages.c
        query = (
            select(messages, *KEY_COLUMNS)
            .join(conversations, conversations.c.id == m.conversation_id)
            .where(
                m.conversation_id == conversation_id,
                m.status.in_(UNFINISHED_VALUES),
                conversations.c.lease_owner == owner,
            )
            .order_by(m.id)
            .limit(1)
        )
        async with self._read("find the next message") as conn:
            row = (await conn.execute(query)).first()
        return inbox_message(row) if row is not None else None

    async def release(self, conversation_id: int, owner: str) -> bool:
        """Give the lease back; return whether the conversation has unfinished
        work (a message accepted meanwhile), which someone must then claim."""
        async with self._write("release a conversation") as conn:
            return await self._give_back(conn, conversation_id, owner)

    # --- a message's steps (each conditional on holding the lease) ------------------

    async def mark_running(self, message: InboxMessage, owner: str) -> bool:
        """Status running, one more attempt; False if the lease is gone."""
        return await self._step(
            message,
            owner,
            "mark a message running",
            (MessageStatus.PENDING, MessageStatus.RUNNING),
            status=MessageStatus.RUNNING.value,
            attempts=messages.c.attempts + 1,
        )

    async def start_turn(self, message: InboxMessage, owner: str) -> Conversation | None:
        """`mark_running`, and the conversation as it is now (its agent and session),
        read in the same transaction: one round trip less before the agent call.
        None if the lease is gone."""
        started = await self.start_charged_turn(message, owner, None)
        return None if started is None else started[0]

    async def start_charged_turn(
        self, message: InboxMessage, owner: str, budget: TurnBudget | None
    ) -> tuple[Conversation, Exceeded | None] | None:
        """`start_turn`, and in the same transaction the turn's budget charge
        (`storage.usage.reserve_in`) of ``budget(conversation)``: the limit
        reached, or None (charged). None if the lease is gone."""
        statement = self._step_statement(
            message,
            owner,
            (MessageStatus.PENDING, MessageStatus.RUNNING),
            status=MessageStatus.RUNNING.value,
            attempts=messages.c.attempts + 1,
        )
        exceeded: Exceeded | None = None
        async with self._write("start a turn") as conn:
            if (await conn.execute(statement)).rowcount != 1:
                return None
            row = await self._select_conversation(
                conn, conversations.c.id == message.conversation_id
            )
            if row is None:  # pragma: no cover - the message's foreign key keeps it
                raise StorageError(f"conversation {message.conversation_id} does not exist")
            conversation = conversation_from_row(row)
            if budget is not None:
                charge, limits = budget(conversation)
                exceeded = await reserve_in(conn, self._insert, charge, limits)
        return conversation, exceeded

    async def save_answer(
        self,
        message: InboxMessage,
        owner: str,
        text: str,
        *,
        error_kind: str | None,
        turn: tuple[int, str | None, Usage] | None = None,
    ) -> bool:
        """Keep the reply before posting it (status answered, one delivery
        begun), and count the agent's turn (``(epoch, session_id, usage)``) in
        the same transaction: a crash from here on posts the stored reply
        instead of asking (and billing) the agent again, and a turn is never
        counted without its answer. The turn's budget charge is settled in the same
        transaction too (`storage.usage.settle_usage`). False if the lease is gone."""
        statement = self._step_statement(
            message,
            owner,
            (MessageStatus.PENDING, MessageStatus.RUNNING),
            status=MessageStatus.ANSWERED.value,
            reply_text=text,
            error_kind=error_kind,
            delivery_attempts=1,
        )
        try:
            async with self._write("save a reply") as conn:
                if (await conn.execute(statement)).rowcount != 1:
                    raise _LeaseLost
                if turn is not None:
                    epoch, session_id, usage = turn
                    await conn.execute(
                        turn_update(message.conversation_id, epoch, session_id, usage)
                    )
                # The turn's budget charge: its tokens, or given back without an answer.
                await settle_usage(conn, message.id, None if turn is None else turn[2])
        except _LeaseLost:
            return False
        return True

    async def begin_delivery(self, message: InboxMessage, owner: str) -> bool:
        """Count one more delivery attempt of a stored reply, before posting it."""
        return await self._step(
            message,
            owner,
            "begin a delivery",
            (MessageStatus.ANSWERED,),
            delivery_attempts=messages.c.delivery_attempts + 1,
        )

    async def note_pieces(self, message: InboxMessage, owner: str, pieces: int) -> bool:
        """Remember that the first ``pieces`` pieces of the reply are posted."""
        return await self._step(
            message,
            owner,
            "note the pieces posted",
            (MessageStatus.ANSWERED,),
            delivered_pieces=pieces,
        )

    async def note_live(self, message: InboxMessage, owner: str, ref: str) -> bool:
        """Remember ``ref``, the platform's id of the answer shown live while the agent
        writes it, in ``meta[LIVE_REF]`` (the other keys kept): read, merged and written
        in one write transaction, conditional on the lease like every step."""
        try:
            async with self._write("note a live answer") as conn:
                meta = (
                    await conn.execute(
                        select(messages.c.meta).where(messages.c.id == message.id).with_for_update()
                    )
                ).scalar_one_or_none()
                if meta is None:
                    raise _LeaseLost
                statement = self._step_statement(
                    message,
                    owner,
                    (MessageStatus.RUNNING, MessageStatus.ANSWERED),
                    meta={**meta, LIVE_REF: ref},
                )
                if (await conn.execute(statement)).rowcount != 1:
                    raise _LeaseLost
        except _LeaseLost:
            return False
        return True

    async def finish_delivery(
        self, message: InboxMessage, owner: str, *, undeliverable: str | None = None
    ) -> bool:
        """Status done, or failed when the reply was an error text or the
        platform refused it for good (``undeliverable`` names why)."""
        return await self._step(
            message,
            owner,
            "mark a message delivered",
            (MessageStatus.ANSWERED,),
            **_finished_values(undeliverable),
        )

    async def finish_and_release(
        self, message: InboxMessage, owner: str, *, undeliverable: str | None = None
    ) -> Finished:
        """`finish_delivery`, and in the same transaction give the lease back
        if the conversation has no other unfinished message (the common case:
        one call instead of three)."""
        statement = self._step_statement(
            message, owner, (MessageStatus.ANSWERED,), **_finished_values(undeliverable)
        )
        async with self._write("mark a message delivered") as conn:
            if (await conn.execute(statement)).rowcount != 1:
                return Finished.LOST
            if await self._has_work(conn, message.conversation_id):
                return Finished.KEPT
            # Accepted between the look and the release: someone must claim it.
            if await self._give_back(conn, message.conversation_id, owner):
                return Finished.RELEASED_WITH_WORK
        return Finished.RELEASED

    async def park(self, message: InboxMessage, owner: str, *, retry_in: float) -> None:
        """The platform refused the reply: release the conversation until
        ``retry_in`` seconds from now, when any instance may claim it again."""
        c = conversations.c
        async with self._write("park a reply") as conn:
            await conn.execute(
                update(conversations)
                .where(c.id == message.conversation_id, c.lease_owner == owner)
                .values(lease_owner=None, not_before=self._later(retry_in))
            )

    async def cancel(self, platform: str, event_id: str) -> int | None:
        """The sender gave up on the message: status failed, error kind
        ``cancelled``, if it is still pending or running, whoever holds the
        lease (its next step is then refused, so the agent is not asked again,
        here or after a restart). An answered message is left to be delivered:
        its answer is paid for already. Returns the message's id, or None if
        nothing was cancelled (unknown, answered or finished)."""
        m = messages.c
        statement = (
            update(messages)
            .where(
                m.platform == platform,
                m.event_id == event_id,
                m.status.in_([MessageStatus.PENDING.value, MessageStatus.RUNNING.value]),
            )
            .values(status=MessageStatus.FAILED.value, error_kind="cancelled", updated_at=_now())
            .returning(m.id)
        )
        async with self._write("cancel a message") as conn:
            row = (await conn.execute(statement)).first()
        return int(row.id) if row is not None else None

    # --- internals -------------------------------------------------------------------

    def _step_statement(
        self,
        message: InboxMessage,
        owner: str,
        states: Sequence[MessageStatus],
        **values: Any,
    ) -> Any:
        holds = exists().where(
            conversations.c.id == message.conversation_id, conversations.c.lease_owner == owner
        )
        return (
            update(messages)
            .where(
                messages.c.id == message.id,
                messages.c.status.in_([s.value for s in states]),
                holds,
            )
            .values(updated_at=_now(), **values)
        )

    async def _step(
        self,
        message: InboxMessage,
        owner: str,
        action: str,
        states: Sequence[MessageStatus],
        **values: Any,
    ) -> bool:
        statement = self._step_statement(message, owner, states, **values)
        async with self._write(action) as conn:
            return bool((await conn.execute(statement)).rowcount == 1)

    async def _give_back(self, conn: AsyncConnection, conversation_id: int, owner: str) -> bool:
        """Release ``owner``'s lease; return whether unfinished work remains, in
        which case the others are told (at commit) to claim it."""
        c = conversations.c
        await conn.execute(
            update(conversations)
            .where(c.id == conversation_id, c.lease_owner == owner)
            .values(lease_owner=None)
        )
        more = await self._has_work(conn, conversation_id)
        if more:
            await self._notify(conn)
        return more


# -- helpers -------------------------------------------------------------


def _finished_values(undeliverable: str | None) -> dict[str, Any]:
    if undeliverable is not None:
        return {"status": MessageStatus.FAILED.value, "error_kind": undeliverable}
    return {
        "status": case(
            (messages.c.error_kind.is_(None), MessageStatus.DONE.value),
            else_=MessageStatus.FAILED.value,
        )
    }


__all__ = ["FINISHED", "UNFINISHED", "WORK_CHANNEL", "Claim", "Queue", "QueueStats"]
