"""The store: the message inbox and the conversations, in SQLite or PostgreSQL.

One class, `Store`, with the same code on both databases (SQLAlchemy Core,
async). Every method is one transaction, committed when it returns; every
database or driver failure leaves it as a `StorageError` (a missing driver as
`MissingDriverError`), whose message never holds the URL's password.

SQLite (the default, ``sqlite+aiosqlite:///agent-bridge.db``) runs in WAL mode
with a busy timeout and foreign keys on. Writes take the write lock when they
begin (``BEGIN IMMEDIATE``): a deferred transaction that reads and then writes
can fail at once with "database is locked" when another connection wrote in
between, busy timeout or not. Inside one process, writes also queue on an
`asyncio.Lock` so that they wait in the event loop rather than in SQLite's
busy handler.

Example::

    async with Store("sqlite+aiosqlite:///agent-bridge.db") as store:
        inbox = await store.accept(incoming)   # None if already seen
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sqlite3
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.util.exc import CommandError
from sqlalchemy import Row, and_, case, event, func, or_, select, text, true, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    InvalidRequestError,
    SQLAlchemyError,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.sql.elements import ColumnElement

from bridge.errors import MissingDriverError, StorageError
from bridge.model import (
    Conversation,
    ConversationKey,
    InboxMessage,
    IncomingMessage,
    MessageStatus,
    Usage,
)
from storage.schema import NO_THREAD, conversations, messages

log = logging.getLogger("storage")

MIGRATIONS = Path(__file__).resolve().parent / "migrations"

#: Seconds a SQLite connection waits for another one's write lock.
SQLITE_BUSY_TIMEOUT = 5.0
#: Seconds to wait for a PostgreSQL connection (asyncpg's default is 60).
PG_CONNECT_TIMEOUT = 10.0
#: pg_advisory_xact_lock key serializing schema upgrades of instances that
#: start together against one PostgreSQL ("agbr" in ASCII).
MIGRATION_LOCK_KEY = 0x61676272

UNFINISHED = (MessageStatus.PENDING, MessageStatus.RUNNING, MessageStatus.ANSWERED)
FINISHED = (MessageStatus.DONE, MessageStatus.FAILED)

_POSTGRES_EXTRA = "pip install 'agent-bridge[postgres]'"
_SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Executions marked with this option begin with BEGIN IMMEDIATE on SQLite.
_WRITE = "agent_bridge_write"

# What a failing database or driver may raise. SQLAlchemy wraps the driver's
# errors in DBAPIError, but not those of connecting: a refused or reset
# connection is a raw OSError (ConnectionRefusedError), a slow one TimeoutError.
_DB_ERRORS: tuple[type[BaseException], ...] = (
    SQLAlchemyError,
    OSError,
    TimeoutError,
    sqlite3.Error,
)


class _Duplicate(Exception):
    """Raised inside `accept` to roll its transaction back."""


def _now() -> datetime:
    return datetime.now(UTC)


class Store:
    """The inbox and the conversations; an async context manager.

    ``schema`` (PostgreSQL only) puts the tables in that schema, through the
    connection's ``search_path``; the schema must exist. The tests use it for
    a throwaway schema per test.
    """

    def __init__(self, url: str, *, schema: str | None = None) -> None:
        self._raw_url = url
        self._schema = schema
        self._engine: AsyncEngine | None = None
        self._closed = False
        self._backend = ""
        self._display_url = _display_url(url)
        self._password: str | None = None
        # SQLite: writes of this process queue here (see the module docstring);
        # an in-memory database has one shared connection, so reads queue too.
        self._write_lock: asyncio.Lock | None = None
        self._read_lock: asyncio.Lock | None = None

    def __repr__(self) -> str:
        return f"Store({self._display_url!r})"

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"`` once open."""
        return self._backend

    # -- lifecycle -------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def open(self, *, migrate: bool = True) -> None:
        """Connect, check the database answers, and migrate it to the newest
        schema unless ``migrate`` is false. Cleans up when it fails."""
        if self._closed:
            raise StorageError("the store is closed; create a new one")
        if self._engine is not None:
            raise StorageError("the store is already open")
        self._engine = self._create_engine()
        try:
            if migrate:
                await self.upgrade()
            else:
                await self.ping()
        except BaseException:
            await self._engine.dispose()
            self._engine = None
            raise
        log.debug("store open: %s", self._display_url)

    async def close(self) -> None:
        """Close every connection. Safe to call twice."""
        self._closed = True
        engine, self._engine = self._engine, None
        if engine is not None:
            with contextlib.suppress(*_DB_ERRORS):
                await engine.dispose()

    async def upgrade(self) -> None:
        """Migrate the database to the newest schema (Alembic ``upgrade head``).

        One transaction: on PostgreSQL it first takes an advisory lock, and
        on SQLite the write lock, so instances starting together take turns
        and the later ones find nothing left to do.
        """

        def run(connection: Connection) -> None:
            config = AlembicConfig()
            config.set_main_option("script_location", str(MIGRATIONS))
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

        try:
            async with self._write("migrate the database") as conn:
                if self._backend == "postgresql":
                    await conn.execute(
                        text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
                    )
                await conn.run_sync(run)
        except CommandError as exc:
            # Typically a revision this version does not know: the database
            # was migrated by a newer agent-bridge.
            raise StorageError(
                f"cannot migrate the database {self._display_url}: {exc}; "
                "was it created by a newer version of agent-bridge?"
            ) from exc

    async def ping(self) -> None:
        """Raise `StorageError` unless the database answers."""
        async with self._read("reach the database") as conn:
            await conn.execute(text("SELECT 1"))

    # -- the inbox -------------------------------------------------------

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

    async def mark_running(self, message_id: int) -> None:
        """Status running; one more attempt."""
        await self._update_message(
            message_id,
            "mark a message running",
            status=MessageStatus.RUNNING.value,
            attempts=messages.c.attempts + 1,
        )

    async def save_reply(self, message_id: int, text: str, *, error_kind: str | None) -> None:
        """Keep the reply before delivering it (status answered), so that a
        restart delivers it without calling the agent again."""
        await self._update_message(
            message_id,
            "save a reply",
            status=MessageStatus.ANSWERED.value,
            reply_text=text,
            error_kind=error_kind,
        )

    async def mark_delivered(self, message_id: int) -> None:
        """Status done, or failed when the saved reply was an error text."""
        await self._update_message(
            message_id,
            "mark a message delivered",
            status=case(
                (messages.c.error_kind.is_(None), MessageStatus.DONE.value),
                else_=MessageStatus.FAILED.value,
            ),
        )

    async def unfinished(self) -> list[InboxMessage]:
        """Messages pending, running or answered, oldest first."""
        query = (
            select(messages, *_KEY_COLUMNS)
            .join(conversations, conversations.c.id == messages.c.conversation_id)
            .where(messages.c.status.in_([s.value for s in UNFINISHED]))
            .order_by(messages.c.id)
        )
        async with self._read("list unfinished messages") as conn:
            rows = (await conn.execute(query)).all()
        return [_inbox_message(row) for row in rows]

    async def count_unfinished(self) -> int:
        query = (
            select(func.count())
            .select_from(messages)
            .where(messages.c.status.in_([s.value for s in UNFINISHED]))
        )
        async with self._read("count unfinished messages") as conn:
            return int((await conn.execute(query)).scalar_one())

    async def purge_text(self, older_than_days: float) -> int:
        """Erase the text and reply of messages finished more than
        ``older_than_days`` ago; return how many were erased."""
        cutoff = _now() - timedelta(days=older_than_days)
        statement = (
            update(messages)
            .where(
                messages.c.status.in_([s.value for s in FINISHED]),
                messages.c.updated_at < cutoff,
                or_(messages.c.text != "", messages.c.reply_text.is_not(None)),
            )
            .values(text="", reply_text=None)
        )
        async with self._write("erase old message text") as conn:
            return int((await conn.execute(statement)).rowcount)

    # -- conversations ---------------------------------------------------

    async def get_conversation(self, key: ConversationKey) -> Conversation | None:
        async with self._read("look up a conversation") as conn:
            row = await self._select_conversation(conn, _key_filter(key))
        return _conversation(row) if row is not None else None

    async def get_conversation_by_id(self, conversation_id: int) -> Conversation:
        async with self._read("look up a conversation") as conn:
            row = await self._select_conversation(conn, conversations.c.id == conversation_id)
        if row is None:
            raise StorageError(f"conversation {conversation_id} does not exist")
        return _conversation(row)

    async def ensure_conversation(self, key: ConversationKey, agent: str) -> Conversation:
        """Find or create the conversation for ``key``.

        A conversation follows the agent it is asked for: when ``agent``
        differs from the stored one, the agent changes and the session is
        reset, since a session id means nothing to another agent."""
        async with self._write("create a conversation") as conn:
            row = await self._find_or_create(conn, key, agent, _now())
        return _conversation(row)

    async def record_turn(
        self, conversation_id: int, *, epoch: int, session_id: str | None, usage: Usage
    ) -> None:
        """Count a turn and its tokens. ``session_id`` is stored only if the
        conversation was not reset since the turn began (same ``epoch``)."""
        c = conversations.c
        statement = (
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
        async with self._write("record a turn") as conn:
            if (await conn.execute(statement)).rowcount == 0:
                raise StorageError(f"conversation {conversation_id} does not exist")

    async def reset_conversation(self, key: ConversationKey) -> Conversation | None:
        """Forget the agent session (the next turn starts a new one); None if
        there is no such conversation."""
        where = _key_filter(key)
        async with self._write("reset a conversation") as conn:
            await conn.execute(_reset(where))
            row = await self._select_conversation(conn, where)
        return _conversation(row) if row is not None else None

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
        return [_conversation(row) for row in rows]

    # -- internals -------------------------------------------------------

    def _create_engine(self) -> AsyncEngine:
        url = self._parse_url()
        self._password = url.password if isinstance(url.password, str) else None
        self._backend = url.get_backend_name()
        options: dict[str, Any] = {"hide_parameters": True}
        if self._backend == "sqlite":
            if self._schema is not None:
                raise StorageError("a database schema can only be chosen on PostgreSQL")
            _check_sqlite_folder(url)
            self._write_lock = asyncio.Lock()
            if _is_memory(url):
                self._read_lock = self._write_lock
        else:
            connect_args: dict[str, Any] = {}
            if "timeout" not in url.query:
                connect_args["timeout"] = PG_CONNECT_TIMEOUT
            if self._schema is not None:
                if not _SCHEMA_NAME.match(self._schema):
                    raise StorageError(f"invalid database schema name {self._schema!r}")
                # asyncpg takes no `options`/`search_path` URL parameter: the
                # search path travels as a server setting at connect.
                connect_args["server_settings"] = {"search_path": self._schema}
            options["connect_args"] = connect_args
            # A daemon outlives connections (a PostgreSQL restart, a proxy's
            # idle timeout): test each one before use.
            options["pool_pre_ping"] = True
        try:
            engine = create_async_engine(url, **options)
        except ImportError as exc:
            raise self._missing_driver(url, exc) from exc
        except (ArgumentError, InvalidRequestError) as exc:
            raise StorageError(
                f"storage.url: cannot use {self._display_url}: {self._scrub(str(exc))}"
            ) from exc
        if self._backend == "sqlite":
            _configure_sqlite(engine)
        return engine

    def _parse_url(self) -> URL:
        try:
            url = make_url(self._raw_url)
        except (ArgumentError, ValueError) as exc:
            raise StorageError(
                "storage.url: cannot parse the database URL; expected e.g. "
                "sqlite+aiosqlite:///agent-bridge.db or postgresql+asyncpg://user@host/db"
            ) from exc
        backend, _, driver = url.drivername.partition("+")
        if backend == "postgres":  # the spelling of Heroku and others
            backend = "postgresql"
        if backend not in ("sqlite", "postgresql"):
            raise StorageError(
                f"storage.url: unsupported database {backend!r}; "
                "use sqlite+aiosqlite:///PATH or postgresql+asyncpg://USER@HOST/DB"
            )
        # A bare "sqlite://" or "postgresql://" means the async driver we ship.
        default_driver = "aiosqlite" if backend == "sqlite" else "asyncpg"
        return url.set(drivername=f"{backend}+{driver or default_driver}")

    def _missing_driver(self, url: URL, exc: ImportError) -> MissingDriverError:
        driver = url.get_driver_name()
        if self._backend == "postgresql":
            if driver == "asyncpg":
                hint = f"install it with: {_POSTGRES_EXTRA}"
            else:
                hint = (
                    "agent-bridge uses postgresql+asyncpg:// for PostgreSQL: "
                    f"{_POSTGRES_EXTRA} and change storage.url"
                )
        else:
            hint = "install it with: pip install aiosqlite"
        return MissingDriverError(
            f"storage.url: the database driver {driver!r} is not installed; {hint}"
        )

    def _scrub(self, message: str) -> str:
        """Remove the password, should a driver ever echo it."""
        if self._password:
            message = message.replace(self._password, "***")
        return message

    def _error(self, action: str, exc: BaseException) -> StorageError:
        cause: BaseException = exc
        if isinstance(exc, DBAPIError) and exc.orig is not None:
            cause = exc.orig
        # The first line only: SQLAlchemy appends the SQL statement.
        detail = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
        reason = f"{type(cause).__name__}: {detail}" if detail else type(cause).__name__
        return StorageError(
            f"cannot {action} (database {self._display_url}): {self._scrub(reason)}"
        )

    def _require_engine(self) -> AsyncEngine:
        if self._engine is None:
            raise StorageError("the store is closed" if self._closed else "the store is not open")
        return self._engine

    @contextlib.asynccontextmanager
    async def _read(self, action: str) -> AsyncIterator[AsyncConnection]:
        engine = self._require_engine()
        lock = self._read_lock or contextlib.nullcontext()
        try:
            async with lock, engine.connect() as conn, conn.begin():
                yield conn
        except _DB_ERRORS as exc:
            raise self._error(action, exc) from exc

    @contextlib.asynccontextmanager
    async def _write(self, action: str) -> AsyncIterator[AsyncConnection]:
        engine = self._require_engine()
        lock = self._write_lock or contextlib.nullcontext()
        try:
            async with lock, engine.connect() as conn:
                await conn.execution_options(**{_WRITE: True})
                async with conn.begin():
                    yield conn
        except _DB_ERRORS as exc:
            raise self._error(action, exc) from exc

    def _insert(self, table: Any) -> sqlite.Insert | postgresql.Insert:
        if self._backend == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)

    async def _is_known(self, conn: AsyncConnection, platform: str, event_id: str) -> bool:
        query = select(messages.c.id).where(
            messages.c.platform == platform, messages.c.event_id == event_id
        )
        return (await conn.execute(query)).first() is not None

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

    async def _update_message(self, message_id: int, action: str, **values: Any) -> None:
        statement = (
            update(messages).where(messages.c.id == message_id).values(updated_at=_now(), **values)
        )
        async with self._write(action) as conn:
            if (await conn.execute(statement)).rowcount == 0:
                raise StorageError(f"cannot {action}: message {message_id} does not exist")


# -- helpers -------------------------------------------------------------

_KEY_COLUMNS = (
    conversations.c.scope.label("conv_scope"),
    conversations.c.chat.label("conv_chat"),
    conversations.c.thread.label("conv_thread"),
)


def _display_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparsable url>"


def _is_memory(url: URL) -> bool:
    database = url.database or ""
    return database in ("", ":memory:") or "mode=memory" in database


def _check_sqlite_folder(url: URL) -> None:
    database = url.database or ""
    if _is_memory(url) or database.startswith("file:"):
        return
    folder = Path(database).absolute().parent
    if not folder.is_dir():
        raise StorageError(
            f"storage.url: the folder {folder} for the SQLite database does not exist; "
            "create it or change storage.url"
        )


def _configure_sqlite(engine: AsyncEngine) -> None:
    """WAL, busy timeout, foreign keys, and transactions that SQLAlchemy
    begins itself (SQLAlchemy's documented recipe for pysqlite/aiosqlite)."""

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Stop the driver from emitting its own BEGIN (it would skip it
        # before SELECT and DDL): on_begin below emits it.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            # busy_timeout first: switching to WAL may wait for a lock.
            cursor.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT * 1000)}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    def on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(_WRITE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    event.listen(engine.sync_engine, "connect", on_connect)
    event.listen(engine.sync_engine, "begin", on_begin)


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


def _conversation(row: Row[Any]) -> Conversation:
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
    )
