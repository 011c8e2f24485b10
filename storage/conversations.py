"""Conversations: each chat thread and the agent session that carries its memory.

One row per `ConversationKey`; the store finds or creates it when a message
is accepted. A reset forgets the session and bumps ``epoch``, so that a turn
that began before the reset does not write its old session id back.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import Row, and_, case, select, true, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement

from bridge.errors import StorageError
from bridge.model import Conversation, ConversationKey, Usage
from storage.database import Database, _now
from storage.schema import NO_THREAD, conversations

log = logging.getLogger("storage")


class Conversations(Database):
    """The conversation half of the store."""

    async def get_conversation(self, key: ConversationKey) -> Conversation | None:
        async with self._read("look up a conversation") as conn:
            row = await self._select_conversation(conn, _key_filter(key))
        return conversation_from_row(row) if row is not None else None

    async def get_conversation_by_id(self, conversation_id: int) -> Conversation:
        async with self._read("look up a conversation") as conn:
            row = await self._select_conversation(conn, conversations.c.id == conversation_id)
        if row is None:
            raise StorageError(f"conversation {conversation_id} does not exist")
        return conversation_from_row(row)

    async def ensure_conversation(self, key: ConversationKey, agent: str) -> Conversation:
        """Find or create the conversation for ``key``.

        A conversation follows the agent it is asked for: when ``agent``
        differs from the stored one, the agent changes and the session is
        reset, since a session id means nothing to another agent."""
        async with self._write("create a conversation") as conn:
            row = await self._find_or_create(conn, key, agent, _now())
        return conversation_from_row(row)

    async def record_turn(
        self, conversation_id: int, *, epoch: int, session_id: str | None, usage: Usage
    ) -> None:
        """Count a turn and its tokens. ``session_id`` is stored only if the
        conversation was not reset since the turn began (same ``epoch``)."""
        async with self._write("record a turn") as conn:
            statement = turn_update(conversation_id, epoch, session_id, usage)
            if (await conn.execute(statement)).rowcount == 0:
                raise StorageError(f"conversation {conversation_id} does not exist")

    async def reset_conversation(self, key: ConversationKey) -> Conversation | None:
        """Forget the agent session (the next turn starts a new one); None if
        there is no such conversation."""
        where = _key_filter(key)
        async with self._write("reset a conversation") as conn:
            await conn.execute(_reset(where))
            row = await self._select_conversation(conn, where)
        return conversation_from_row(row) if row is not None else None

    async def reset_conversations(
        self,
        *,
        platform: str | None = None,
        chat: str | None = None,
        thread: str | None = None,
        agent: str | None = None,
    ) -> int:
        """Reset every conversation matching all the given filters (all of
        them when none is given); return how many."""
        c = conversations.c
        filters = [
            column == value
            for column, value in (
                (c.platform, platform),
                (c.chat, chat),
                (c.thread, thread),
                (c.agent, agent),
            )
            if value is not None
        ]
        async with self._write("reset conversations") as conn:
            return int((await conn.execute(_reset(and_(true(), *filters)))).rowcount)

    async def list_conversations(self, *, platform: str | None = None) -> list[Conversation]:
        """Most recently active first."""
        query = select(conversations).order_by(
            conversations.c.last_active_at.desc(), conversations.c.id.desc()
        )
        if platform is not None:
            query = query.where(conversations.c.platform == platform)
        async with self._read("list conversations") as conn:
            rows = (await conn.execute(query)).all()
        return [conversation_from_row(row) for row in rows]

    async def _select_conversation(
        self, conn: AsyncConnection, where: ColumnElement[bool]
    ) -> Row[Any] | None:
        return (await conn.execute(select(conversations).where(where))).first()

    async def _find_or_create(
        self, conn: AsyncConnection, key: ConversationKey, agent: str, now: datetime
    ) -> Row[Any]:
        where = _key_filter(key)
        row = await self._select_conversation(conn, where)
        if row is None:
            # Concurrent creators: the unique key lets one insert win; the
            # others do nothing (PostgreSQL makes them wait for the winner's
            # commit) and then read the winner's row.
            await conn.execute(
                self._insert(conversations)
                .values(
                    platform=key.platform,
                    scope=key.scope,
                    chat=key.chat,
                    thread=_thread_column(key.thread),
                    agent=agent,
                    epoch=0,
                    turns=0,
                    input_tokens=0,
                    output_tokens=0,
                    created_at=now,
                    last_active_at=now,
                )
                .on_conflict_do_nothing()
            )
            row = await self._select_conversation(conn, where)
            if row is None:
                raise StorageError(f"conversation {key} vanished while being created")
        elif row.agent != agent:
            log.info("conversation %s moves from agent %r to %r", key, row.agent, agent)
            await conn.execute(_reset(where).values(agent=agent))
            row = await self._select_conversation(conn, where)
            assert row is not None
        return row


def turn_update(conversation_id: int, epoch: int, session_id: str | None, usage: Usage) -> Any:
    """The statement that counts one turn (see `Conversations.record_turn`)."""
    c = conversations.c
    return (
        update(conversations)
        .where(c.id == conversation_id)
        .values(
            turns=c.turns + 1,
            input_tokens=c.input_tokens + usage.input_tokens,
            output_tokens=c.output_tokens + usage.output_tokens,
            last_active_at=_now(),
            session_id=case((c.epoch == epoch, session_id), else_=c.session_id),
        )
    )


def _thread_column(thread: str | None) -> str:
    return NO_THREAD if thread is None else thread


def _key_filter(key: ConversationKey) -> ColumnElement[bool]:
    c = conversations.c
    return and_(
        c.platform == key.platform,
        c.scope == key.scope,
        c.chat == key.chat,
        c.thread == _thread_column(key.thread),
    )


def _reset(where: ColumnElement[bool]) -> Any:
    c = conversations.c
    return update(conversations).where(where).values(session_id=None, epoch=c.epoch + 1)


def conversation_from_row(row: Row[Any]) -> Conversation:
    m = row._mapping
    return Conversation(
        id=m["id"],
        key=ConversationKey(
            platform=m["platform"],
            scope=m["scope"],
            chat=m["chat"],
            thread=m["thread"] or None,
        ),
        agent=m["agent"],
        session_id=m["session_id"],
        epoch=m["epoch"],
        turns=m["turns"],
        input_tokens=m["input_tokens"],
        output_tokens=m["output_tokens"],
        created_at=m["created_at"],
        last_active_at=m["last_active_at"],
    )
