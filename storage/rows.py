"""What the parts of the queue share: the message states, and a message read back."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Row, literal_column
from sqlalchemy.sql.elements import ColumnElement

from bridge.model import ConversationKey, InboxMessage, MessageStatus
from storage.schema import conversations

UNFINISHED = (MessageStatus.PENDING, MessageStatus.RUNNING, MessageStatus.ANSWERED)
FINISHED = (MessageStatus.DONE, MessageStatus.FAILED)
UNFINISHED_VALUES = [s.value for s in UNFINISHED]
FINISHED_VALUES = [s.value for s in FINISHED]


def unfinished_condition(table: Any) -> ColumnElement[bool]:
    """``status IN ('pending', 'running', 'answered')`` with the values written into
    the SQL, not bound: only then can the databases prove that the partial indexes
    of unfinished messages apply (PostgreSQL's generic plans and SQLite's planner
    cannot see through parameters)."""
    return table.c.status.in_([literal_column(f"'{s}'") for s in UNFINISHED_VALUES])  # type: ignore[no-any-return]


KEY_COLUMNS = (
    conversations.c.scope.label("conv_scope"),
    conversations.c.chat.label("conv_chat"),
    conversations.c.thread.label("conv_thread"),
)


def inbox_message(row: Row[Any]) -> InboxMessage:
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
