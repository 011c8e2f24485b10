"""Feedback on agent answers: the store's half of the feedback buttons.

One row per (message, user): `record_feedback` inserts it, or replaces the value
(and its time) when the user changes their mind. The row names the message's agent,
and goes when its message does (``ON DELETE CASCADE``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from storage.database import Database, _now
from storage.schema import conversations, feedback, messages

#: The values a click may record.
FEEDBACK_VALUES = ("good", "bad")


@dataclass(frozen=True, slots=True)
class FeedbackEntry:
    """One user's feedback on the answer to one message."""

    message_id: int
    platform: str
    chat: str
    agent: str
    user_id: str
    value: str
    created_at: datetime


class Feedback(Database):
    """The feedback half of the store."""

    async def record_feedback(
        self, message_id: int, user: str, value: str, *, platform: str | None = None
    ) -> str | None:
        """Store ``user``'s ``value`` ("good" or "bad") for the answer to message
        ``message_id`` (of ``platform``, when given), replacing their earlier one;
        return the message's agent, or None (nothing stored) for an unknown message."""
        if value not in FEEDBACK_VALUES:
            raise ValueError(f"feedback value must be one of {FEEDBACK_VALUES}, not {value!r}")
        m = messages.c
        query = select(m.agent).where(m.id == message_id)
        if platform is not None:
            query = query.where(m.platform == platform)
        async with self._write("record feedback") as conn:
            agent = (await conn.execute(query)).scalar_one_or_none()
            if agent is None:
                return None
            now = _now()
            statement = (
                self._insert(feedback)
                .values(
                    message_id=message_id, agent=agent, user_id=user, value=value, created_at=now
                )
                .on_conflict_do_update(
                    index_elements=["message_id", "user_id"],
                    set_={"value": value, "created_at": now},
                )
            )
            await conn.execute(statement)
            return str(agent)

    async def list_feedback(self, since: datetime | None = None) -> list[FeedbackEntry]:
        """Every feedback given at or after ``since`` (all of it when None), oldest first."""
        f, m, c = feedback.c, messages.c, conversations.c
        query = (
            select(f.message_id, m.platform, c.chat, f.agent, f.user_id, f.value, f.created_at)
            .join(messages, m.id == f.message_id)
            .join(conversations, c.id == m.conversation_id)
            .order_by(f.created_at, f.id)
        )
        if since is not None:
            query = query.where(f.created_at >= since)
        async with self._read("list feedback") as conn:
            rows = (await conn.execute(query)).all()
        return [
            FeedbackEntry(
                message_id=row.message_id,
                platform=row.platform,
                chat=row.chat,
                agent=row.agent,
                user_id=row.user_id,
                value=row.value,
                created_at=row.created_at,
            )
            for row in rows
        ]
