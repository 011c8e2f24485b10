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

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, case, exists, func, literal_column, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement

from bridge.chat import LIVE_REF
from bridge.errors import StorageError
from bridge.model import (
    ConversationKey,
    Finished,
    InboxMessage,
    IncomingMessage,
    MessageStatus,
    Usage,
)
from storage.conversations import Conversations, turn_update
from storage.database import _DB_ERRORS, _now
from storage.schema import conversations, instances, messages

log = logging.getLogger("storage")

UNFINISHED = (MessageStatus.PENDING, MessageStatus.RUNNING, MessageStatus.ANSWERED)
FINISHED = (MessageStatus.DONE, MessageStatus.FAILED)
_UNFINISHED = [s.value for s in UNFINISHED]
_FINISHED = [s.value for s in FINISHED]

_LISTEN_ERRORS: tuple[type[BaseException], ...] = (StorageError, *_DB_ERRORS)

#: The PostgreSQL NOTIFY channel that says "there may be work to claim".
WORK_CHANNEL = "agent_bridge_work"


class _Duplicate(Exception):
    """Raised inside `accept` to roll its transaction back."""


class _LeaseLost(Exception):
    """Raised inside a worker's transaction to roll it back."""


@dataclass(frozen=True, slots=True)
class Claim:
    """A conversation this instance now holds."""

    conversation_id: int
    #: The previous owner, when the lease was taken over from a dead instance.
    taken_from: str | None


@dataclass(frozen=True, slots=True)
class QueueStats:
    """What `/healthz` and the gauges report, across all instances."""

    unfinished: int
    oldest_created_at: datetime | None
    parked: int


class Queue(Conversations):
    """The inbox half of the store."""

    # --- accepting -------------------------------------------------------------------

    async def accept(self, msg: IncomingMessage) -> InboxMessage | None:
        """Commit a new message (status pending) and return it, finding or
        creating its conversation in the same transaction. A message already
        seen (same platform and event id) returns None and changes nothing."""
        now = _now()
        key = msg.key
        try:
            async with self._write("accept a message") as conn:
                if await self._is_known(conn, key.platform, msg.event_id):
                    raise _Duplicate
                conv = await self._find_or_create(conn, key, msg.agent, now)
                # Two deliveries of one event racing each other: the loser's
                # insert does nothing (PostgreSQL waits for the winner first).
                result = await conn.execute(
                    self._insert(messages)
                    .values(
                        platform=key.platform,
                        event_id=msg.event_id,
                        conversation_id=conv.id,
                        agent=msg.agent,
                        sender=msg.sender,
                        text=msg.text,
                        reply_to=msg.reply_to,
                        meta=dict(msg.meta),
                        status=MessageStatus.PENDING.value,
                        attempts=0,
                        created_at=now,
                        updated_at=now,
                    )
                    .on_conflict_do_nothing(index_elements=["platform", "event_id"])
                )
                if result.rowcount != 1:
                    raise _Duplicate
                (message_id,) = result.inserted_primary_key or (None,)
                await self._notify(conn)
        except _Duplicate:
            return None
        if message_id is None:  # pragma: no cover - both databases report it
            raise StorageError("the database did not report the new message's id")
        return InboxMessage(
            id=int(message_id),
            conversation_id=conv.id,
            key=key,
            event_id=msg.event_id,
            sender=msg.sender,
            text=msg.text,
            agent=msg.agent,
            status=MessageStatus.PENDING,
            attempts=0,
            reply_to=msg.reply_to,
            meta=dict(msg.meta),
            created_at=now,
        )

    async def is_known(self, platform: str, event_id: str) -> bool:
        async with self._read("look up a message") as conn:
            return await self._is_known(conn, platform, event_id)

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
            .where(first.c.conversation_id == m.conversation_id, _unfinished(first))
            .scalar_subquery()
        )
        candidates = (
            select(c.id, c.lease_owner)
            .select_from(messages)
            .join(conversations, c.id == m.conversation_id)
            .where(
                _unfinished(messages),
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
                .where(c.id.in_([row.id for row in rows]))
                .values(lease_owner=owner, not_before=None)
            )
        return [
            Claim(row.id, row.lease_owner if row.lease_owner not in (None, owner) else None)
            for row in rows
        ]

    async def next_message(self, conversation_id: int, owner: str) -> InboxMessage | None:
        """The conversation's oldest unfinished message, if ``owner`` holds its
        lease; None when there is none (or the lease is gone)."""
        m = messages.c
        query = (
            select(messages, *_KEY_COLUMNS)
            .join(conversations, conversations.c.id == m.conversation_id)
            .where(
                m.conversation_id == conversation_id,
                m.status.in_(_UNFINISHED),
                conversations.c.lease_owner == owner,
            )
            .order_by(m.id)
            .limit(1)
        )
        async with self._read("find the next message") as conn:
            row = (await conn.execute(query)).first()
        return _inbox_message(row) if row is not None else None

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
        counted without its answer. False if the lease is gone."""
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

    # --- looking at the queue --------------------------------------------------------

    async def unfinished(self) -> list[InboxMessage]:
        """Messages pending, running or answered, oldest first."""
        query = (
            select(messages, *_KEY_COLUMNS)
            .join(conversations, conversations.c.id == messages.c.conversation_id)
            .where(messages.c.status.in_(_UNFINISHED))
            .order_by(messages.c.id)
        )
        async with self._read("list unfinished messages") as conn:
            rows = (await conn.execute(query)).all()
        return [_inbox_message(row) for row in rows]

    async def count_unfinished(self, *, conversation_ids: Sequence[int] | None = None) -> int:
        query = select(func.count()).select_from(messages).where(messages.c.status.in_(_UNFINISHED))
        if conversation_ids is not None:
            query = query.where(messages.c.conversation_id.in_(list(conversation_ids)))
        async with self._read("count unfinished messages") as conn:
            return int((await conn.execute(query)).scalar_one())

    async def stats(self) -> QueueStats:
        """Unfinished messages, the oldest one's arrival, parked replies."""
        m = messages.c
        c = conversations.c
        summary = select(func.count(), func.min(m.created_at)).where(m.status.in_(_UNFINISHED))
        parked = (
            select(func.count())
            .select_from(conversations)
            .where(c.not_before.is_not(None), c.not_before > self._now())
        )
        async with self._read("read the queue's state") as conn:
            count, oldest = (await conn.execute(summary)).one()
            parked_count = (await conn.execute(parked)).scalar_one()
        return QueueStats(int(count), oldest, int(parked_count))

    async def purge_text(self, older_than_days: float) -> int:
        """Erase the text, reply and metadata of messages finished more than
        ``older_than_days`` ago; return how many were erased. The metadata goes
        too: it may hold other people's words (``meta["context"]``, the thread an
        adapter quoted to the agent) and names."""
        cutoff = _now() - timedelta(days=older_than_days)
        statement = (
            update(messages)
            .where(
                messages.c.status.in_(_FINISHED),
                messages.c.updated_at < cutoff,
                or_(messages.c.text != "", messages.c.reply_text.is_not(None)),
            )
            .values(text="", reply_text=None, meta={})
        )
        async with self._write("erase old message text") as conn:
            return int((await conn.execute(statement)).rowcount)

    # --- waking other instances ------------------------------------------------------

    @contextlib.asynccontextmanager
    async def listen(self, wake: Callable[[], None]) -> AsyncIterator[None]:
        """While open, call ``wake()`` whenever another instance says there is
        work (PostgreSQL ``LISTEN``; reconnects after a drop, calling ``wake()``
        then too, since notifications may have been missed). A no-op on SQLite."""
        if self.dialect != "postgresql":
            yield
            return
        task = asyncio.create_task(self._listen(wake), name="store-listen")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _listen(self, wake: Callable[[], None]) -> None:
        delay = 1.0
        while True:
            try:
                engine = self._require_engine()
                async with engine.connect() as conn:
                    raw = await conn.get_raw_connection()
                    driver: Any = raw.driver_connection
                    lost = asyncio.Event()
                    driver.add_termination_listener(lambda _conn, lost=lost: lost.set())
                    await driver.add_listener(WORK_CHANNEL, lambda *_args: wake())
                    delay = 1.0
                    wake()  # what was notified while we were not listening
                    await lost.wait()
                    log.warning("lost the database connection that listens for work")
            except asyncio.CancelledError:
                raise
            except _LISTEN_ERRORS as exc:
                log.debug("cannot listen for work yet: %s", type(exc).__name__)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    async def _notify(self, conn: AsyncConnection) -> None:
        # Delivered at commit, and only if the transaction commits.
        if self.dialect == "postgresql":
            await conn.execute(text("SELECT pg_notify(:channel, '')"), {"channel": WORK_CHANNEL})

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

    async def _has_work(self, conn: AsyncConnection, conversation_id: int) -> bool:
        query = select(messages.c.id).where(
            messages.c.conversation_id == conversation_id, messages.c.status.in_(_UNFINISHED)
        )
        return (await conn.execute(query.limit(1))).first() is not None

    async def _is_known(self, conn: AsyncConnection, platform: str, event_id: str) -> bool:
        query = select(messages.c.id).where(
            messages.c.platform == platform, messages.c.event_id == event_id
        )
        return (await conn.execute(query)).first() is not None


# -- helpers -------------------------------------------------------------


def _unfinished(table: Any) -> ColumnElement[bool]:
    """``status IN ('pending', 'running', 'answered')`` with the values written into
    the SQL, not bound: only then can the databases prove that the partial indexes
    of unfinished messages apply (PostgreSQL's generic plans and SQLite's planner
    cannot see through parameters)."""
    return table.c.status.in_([literal_column(f"'{s}'") for s in _UNFINISHED])  # type: ignore[no-any-return]


def _finished_values(undeliverable: str | None) -> dict[str, Any]:
    if undeliverable is not None:
        return {"status": MessageStatus.FAILED.value, "error_kind": undeliverable}
    return {
        "status": case(
            (messages.c.error_kind.is_(None), MessageStatus.DONE.value),
            else_=MessageStatus.FAILED.value,
        )
    }


_KEY_COLUMNS = (
    conversations.c.scope.label("conv_scope"),
    conversations.c.chat.label("conv_chat"),
    conversations.c.thread.label("conv_thread"),
)


def _inbox_message(row: Row[Any]) -> InboxMessage:
    m = row._mapping
    meta: Mapping[str, Any] = m["meta"] or {}
    return InboxMessage(
        id=m["id"],
        conversation_id=m["conversation_id"],
        key=ConversationKey(
            platform=m["platform"],
            scope=m["conv_scope"],
            chat=m["conv_chat"],
            thread=m["conv_thread"] or None,
        ),
        event_id=m["event_id"],
        sender=m["sender"],
        text=m["text"],
        agent=m["agent"],
        status=MessageStatus(m["status"]),
        attempts=m["attempts"],
        reply_to=m["reply_to"],
        meta=dict(meta),
        reply_text=m["reply_text"],
        error_kind=m["error_kind"],
        created_at=m["created_at"],
        delivery_attempts=m["delivery_attempts"],
        delivered_pieces=m["delivered_pieces"],
    )
