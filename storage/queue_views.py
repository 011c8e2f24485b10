"""Looking at the queue as a whole: what is unfinished, the gauges, the retention purge."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select, update

from bridge.model import InboxMessage
from storage.database import Database, _now
from storage.rows import FINISHED_VALUES, KEY_COLUMNS, UNFINISHED_VALUES, inbox_message
from storage.schema import conversations, messages


@dataclass(frozen=True, slots=True)
class QueueStats:
    """What `/healthz` and the gauges report, across all instances."""

    unfinished: int
    oldest_created_at: datetime | None
    parked: int


class QueueViews(Database):
    """Reads across all conversations, and the purge."""

    async def unfinished(self) -> list[InboxMessage]:
        """Messages pending, running or answered, oldest first."""
        query = (
            select(messages, *KEY_COLUMNS)
            .join(conversations, conversations.c.id == messages.c.conversation_id)
            .where(messages.c.status.in_(UNFINISHED_VALUES))
            .order_by(messages.c.id)
        )
        async with self._read("list unfinished messages") as conn:
            rows = (await conn.execute(query)).all()
        return [inbox_message(row) for row in rows]

    async def count_unfinished(self, *, conversation_ids: Sequence[int] | None = None) -> int:
        query = (
            select(func.count())
            .select_from(messages)
            .where(messages.c.status.in_(UNFINISHED_VALUES))
        )
        if conversation_ids is not None:
            query = query.where(messages.c.conversation_id.in_(list(conversation_ids)))
        async with self._read("count unfinished messages") as conn:
            return int((await conn.execute(query)).scalar_one())

    async def stats(self) -> QueueStats:
        """Unfinished messages, the oldest one's arrival, parked replies."""
        m = messages.c
        c = conversations.c
        summary = select(func.count(), func.min(m.created_at)).where(
            m.status.in_(UNFINISHED_VALUES)
        )
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
                messages.c.status.in_(FINISHED_VALUES),
                messages.c.updated_at < cutoff,
                or_(messages.c.text != "", messages.c.reply_text.is_not(None)),
            )
            .values(text="", reply_text=None, meta={})
        )
        async with self._write("erase old message text") as conn:
            return int((await conn.execute(statement)).rowcount)
