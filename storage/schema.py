"""The database tables, as SQLAlchemy Core metadata.

This is the schema the code expects; ``storage/migrations`` creates it, and a
test checks that the two never drift apart (Alembic's ``compare_metadata``).

Two details shape the columns:

- ``conversations.thread`` is ``""`` for a chat without threads, never NULL:
  SQL treats NULLs as distinct, so a unique key with a NULL thread would let
  two rows exist for the same chat. The store maps ``""`` back to ``None``.
- Timestamps are stored in UTC. SQLite has no time zone type and gives back
  naive values; `UTCDateTime` makes every value aware UTC on the way in and out.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.types import TypeDecorator

#: Constraint names are part of the schema (migrations refer to them), so
#: they follow one convention instead of each database's defaults.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: 64-bit ids on PostgreSQL; SQLite needs exactly INTEGER for an
#: auto-incrementing rowid primary key (its INTEGER is 64-bit anyway).
Id = BigInteger().with_variant(Integer(), "sqlite")

#: ``conversations.thread`` for a chat without threads.
NO_THREAD = ""
#: The statuses of a message not yet finished, as SQL (the partial index's condition).
UNFINISHED_SQL = "status IN ('pending', 'running', 'answered')"


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        # SQLite's DATETIME ignores tzinfo; keep what it stores unambiguous.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


metadata = MetaData(naming_convention=NAMING_CONVENTION)

conversations = Table(
    "conversations",
    metadata,
    Column("id", Id, primary_key=True),
    Column("platform", String, nullable=False),
    Column("scope", String, nullable=False),
    Column("chat", String, nullable=False),
    Column("thread", String, nullable=False, server_default=NO_THREAD),
    Column("agent", String, nullable=False),
    Column("session_id", String, nullable=True),
    Column("epoch", Integer, nullable=False, server_default="0"),
    Column("turns", Integer, nullable=False, server_default="0"),
    Column("input_tokens", BigInteger, nullable=False, server_default="0"),
    Column("output_tokens", BigInteger, nullable=False, server_default="0"),
    Column("created_at", UTCDateTime, nullable=False),
    Column("last_active_at", UTCDateTime, nullable=False),
    #: The instance answering this conversation's messages now (its lease), or
    #: NULL. Valid while that instance heartbeats (see ``instances``).
    Column("lease_owner", String, nullable=True),
    #: A reply the platform refused waits until then before it is tried again;
    #: the conversation's later messages wait behind it (order).
    Column("not_before", UTCDateTime, nullable=True),
    UniqueConstraint("platform", "scope", "chat", "thread"),
)

messages = Table(
    "messages",
    metadata,
    Column("id", Id, primary_key=True),
    Column("platform", String, nullable=False),
    Column("event_id", String, nullable=False),
    Column(
        "conversation_id",
        Id,
        ForeignKey("conversations.id", ondelete="CASCADE"),
        nullable=False,
    ),
    #: The agent the adapter asked for (the conversation follows it).
    Column("agent", String, nullable=False),
    Column("sender", String, nullable=False),
    Column("text", Text, nullable=False),
    Column("reply_to", String, nullable=True),
    Column("meta", JSON, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("error_kind", String, nullable=True),
    Column("reply_text", Text, nullable=True),
    #: Times posting the reply was begun (>0: an earlier attempt may have posted).
    Column("delivery_attempts", Integer, nullable=False, server_default="0"),
    #: Pieces of a long reply already posted (a retry starts after them).
    Column("delivered_pieces", Integer, nullable=False, server_default="0"),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # The inbox's dedupe: one row per platform event, however often delivered.
    UniqueConstraint("platform", "event_id"),
    # unfinished(): status IN (...) ORDER BY id; purge_text(): status + age.
    Index(None, "status", "id"),
    Index(None, "status", "updated_at"),
    Index(None, "conversation_id"),
    # claim(): the unfinished messages in inbox order, without walking the
    # finished ones (the bulk of the table in a long-lived database).
    Index(
        "ix_messages_unfinished",
        "id",
        postgresql_where=text(UNFINISHED_SQL),
        sqlite_where=text(UNFINISHED_SQL),
    ),
    # ...and each conversation's oldest unfinished message, in one probe.
    Index(
        "ix_messages_unfinished_conversation",
        "conversation_id",
        "id",
        postgresql_where=text(UNFINISHED_SQL),
        sqlite_where=text(UNFINISHED_SQL),
    ),
)

#: One row per running bridge process; its heartbeat keeps its leases valid.
instances = Table(
    "instances",
    metadata,
    Column("id", String, primary_key=True),
    #: hostname + boot id: processes of one machine boot share it, so one can
    #: tell that another with a vanished pid is dead without waiting.
    Column("host", String, nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("heartbeat_at", UTCDateTime, nullable=False),
)

#: Named leases beside the conversations' (e.g. "telegram-poller:<bot id>"):
#: held by one live instance at a time.
leases = Table(
    "leases",
    metadata,
    Column("name", String, primary_key=True),
    Column("owner", String, nullable=False),
    Column("acquired_at", UTCDateTime, nullable=False),
)

#: The turns of threads whose agent API remembers nothing (OpenAI Chat
#: Completions): the bridge resends them (``storage/history.py``). Keyed by the
#: session id the backend made for the thread, not by the conversation: a reset
#: gives the thread a new session id, and so an empty history.
history = Table(
    "history",
    metadata,
    Column("id", Id, primary_key=True),
    Column("session_id", String, nullable=False, index=True),
    Column("user_text", Text, nullable=False),
    Column("reply_text", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

#: Feedback on agent answers (the Slack buttons): one row per (message, user), a
#: changed mind replaces the value (``storage/feedback.py``). ``agent`` is the
#: message's, copied so that the listing needs no join; the row goes with its message.
feedback = Table(
    "feedback",
    metadata,
    Column("id", Id, primary_key=True),
    Column(
        "message_id",
        Id,
        ForeignKey("messages.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("agent", String, nullable=False),
    Column("user_id", String, nullable=False),
    #: "good" or "bad".
    Column("value", String(8), nullable=False),
    #: When the value was given (a changed mind: the newest click).
    Column("created_at", UTCDateTime, nullable=False, index=True),
    UniqueConstraint("message_id", "user_id"),
)

#: Admin alerts (``storage/alerts.py``): one row per problem kind and subject (an
#: agent's name, or "bridge"), kept after the problem clears so that
#: ``alerts.repeat_after`` spaces its alerts even when it comes and goes.
#: ``since`` is when the problem began (NULL: not present now); ``sent_at`` when
#: its last alert went out (NULL: never, or the send failed). Instances decide
#: who sends with conditional UPDATEs on this row.
alerts = Table(
    "alerts",
    metadata,
    Column("kind", String(32), primary_key=True),
    Column("subject", String, primary_key=True),
    Column("since", UTCDateTime, nullable=True),
    Column("sent_at", UTCDateTime, nullable=True),
    #: What was seen last (health reasons), for the alert's text; never a secret.
    Column("detail", Text, nullable=False),
)

#: The allowlist kept in the store, beside the config's (``storage/access.py``):
#: people approved by a pairing code or ``agent-bridge users allow``.
access_allowed = Table(
    "access_allowed",
    metadata,
    Column("platform", String, primary_key=True),
    Column("user_id", String, primary_key=True),
    #: What the platform called them when they asked (``@mallory``), or "".
    Column("name", String, nullable=False),
    #: ``cli:<OS user>``, ``telegram:<admin id>`` or ``slack:<admin id>``.
    Column("added_by", String, nullable=False),
    Column("added_at", UTCDateTime, nullable=False),
)

#: Pairing codes handed out with a refusal: one per person (asking again gives
#: the same code while it is valid); the row goes when the code is used.
access_codes = Table(
    "access_codes",
    metadata,
    Column("code", String(16), primary_key=True),
    Column("platform", String, nullable=False),
    Column("user_id", String, nullable=False),
    Column("name", String, nullable=False),
    #: Where to tell them they were approved (a Telegram private chat), or NULL.
    Column("chat", String, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    UniqueConstraint("platform", "user_id"),
)

#: Every change of the store's allowlist, with who made it.
access_audit = Table(
    "access_audit",
    metadata,
    Column("id", Id, primary_key=True),
    Column("at", UTCDateTime, nullable=False, index=True),
    #: "approve", "allow" or "deny".
    Column("action", String(16), nullable=False),
    Column("platform", String, nullable=False),
    Column("user_id", String, nullable=False),
    Column("actor", String, nullable=False),
)

#: Usage accounting (``storage/usage.py``): one row per turn the agent was asked
#: for, charged one message at the turn's start, its tokens when its answer is
#: stored. No foreign key: the record outlives the message's text and the message.
usage = Table(
    "usage",
    metadata,
    Column("id", Id, primary_key=True),
    #: One charge per message, whichever instance or attempt made it.
    Column("message_id", Id, nullable=False, unique=True),
    #: The UTC day the turn began (YYYY-MM-DD), the unit of the report and budgets.
    Column("day", String(10), nullable=False, index=True),
    #: ``platform:user id`` and ``platform:chat id``.
    Column("user_id", String, nullable=False),
    Column("chat", String, nullable=False),
    Column("agent", String, nullable=False),
    Column("input_tokens", BigInteger, nullable=False, server_default="0"),
    Column("output_tokens", BigInteger, nullable=False, server_default="0"),
    Column("created_at", UTCDateTime, nullable=False),
)

#: The budgets' counters: per subject (``user:telegram:123``, ``chat:slack:C1``,
#: ``agent:default``) and period (a day, YYYY-MM-DD, or a month, YYYY-MM). A turn's
#: charge and check lock its rows (an upsert's row locks on PostgreSQL), so two
#: instances cannot both take the last message of a budget.
usage_counters = Table(
    "usage_counters",
    metadata,
    Column("subject", String, primary_key=True),
    Column("period", String(10), primary_key=True),
    Column("messages", BigInteger, nullable=False, server_default="0"),
    Column("input_tokens", BigInteger, nullable=False, server_default="0"),
    Column("output_tokens", BigInteger, nullable=False, server_default="0"),
)

#: Files users sent, for the per-user limits across instances (``storage/files.py``):
#: a row per file admitted (``files`` 1, its declared size) and a row for what its
#: download turned out to add (``files`` 0). Files in the last minute and bytes today
#: are sums over a user's rows; rows older than two days are deleted by the purge.
file_uses = Table(
    "file_uses",
    metadata,
    Column("id", Id, primary_key=True),
    #: "platform:user id".
    Column("user_key", String, nullable=False),
    Column("files", Integer, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Index(None, "user_key", "created_at"),
)
