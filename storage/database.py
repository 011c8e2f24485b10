"""The database under the store: engine, lifecycle, transactions, errors.

`Database` holds what every part of the store shares: one SQLAlchemy async
engine on SQLite or PostgreSQL, the migration on open, and the two kinds of
transaction (`_read`, `_write`), which turn every database or driver failure
into a `StorageError` whose message never holds the URL's password (a missing
driver becomes `MissingDriverError`).

SQLite (the default, ``sqlite+aiosqlite:///agent-bridge.db``) runs in WAL mode
with a busy timeout and foreign keys on. Writes take the write lock when they
begin (``BEGIN IMMEDIATE``): a deferred transaction that reads and then writes
can fail at once with "database is locked" when another connection wrote in
between, busy timeout or not. Inside one process, writes also queue on an
`asyncio.Lock` so that they wait in the event loop rather than in SQLite's
busy handler. A new SQLite file (and so its -wal and -shm, which SQLite creates
with the database file's mode) is created 0600, whatever the umask: it holds
people's messages.

Time: on PostgreSQL, lease and heartbeat times are the database's clock
(``now()``), so that instances on several hosts agree whatever their clocks;
on SQLite (one host) the process's.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import sqlite3
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from sqlalchemy import event, func, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    InvalidRequestError,
    SQLAlchemyError,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from bridge.errors import MissingDriverError, StorageError

log = logging.getLogger("storage")

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
#: Seconds after which a PostgreSQL connection is replaced (before the idle
#: timeouts of proxies and firewalls, commonly 1 hour or more, cut it).
PG_POOL_RECYCLE = 1800.0

#: Seconds a SQLite connection waits for another one's write lock.
SQLITE_BUSY_TIMEOUT = 5.0
#: Seconds to wait for a PostgreSQL connection (asyncpg's default is 60).
PG_CONNECT_TIMEOUT = 10.0
#: pg_advisory_xact_lock key serializing schema upgrades of instances that
#: start together against one PostgreSQL ("agbr" in ASCII).
MIGRATION_LOCK_KEY = 0x61676272

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


def _now() -> datetime:
    return datetime.now(UTC)


class Database:
    """A database connection pool with its schema migrated; an async context manager.

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
        engine = self._engine = self._create_engine()
        try:
            # A database already at the newest schema (every start but the first
            # after an upgrade) costs one read, not Alembic's import and run.
            if not migrate or await self.schema_version() == head_revision():
                await self.ping()
            else:
                await self.upgrade()
        except BaseException:
            # close() may have run meanwhile (a caller giving up): dispose of ours.
            await engine.dispose()
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

        # Imported here: a start that needs no migration never pays for Alembic.
        from alembic import command
        from alembic.config import Config as AlembicConfig
        from alembic.util.exc import CommandError

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

    async def schema_version(self) -> str | None:
        """The schema revision the database is at; None for a new database."""
        try:
            async with self._read("read the schema version") as conn:
                row = (await conn.execute(text("SELECT version_num FROM alembic_version"))).first()
        except StorageError:
            # No alembic_version table yet (a new database), or the database does not
            # answer: upgrade() finds out which, with its own message.
            return None
        return None if row is None else str(row[0])

    async def ping(self) -> None:
        """Raise `StorageError` unless the database answers."""
        async with self._read("reach the database") as conn:
            await conn.execute(text("SELECT 1"))

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
            _create_private(url)
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
            # No pre-ping (a round trip before every transaction, 7% of the CPU per
            # message): a connection that died (a PostgreSQL restart) fails the one
            # transaction that finds it, SQLAlchemy then discards the whole pool, and
            # the caller's own retry (the dispatcher's, the platform's redelivery)
            # runs on a fresh connection. Recycling connections before a proxy's or
            # firewall's idle timeout keeps that from happening in quiet hours.
            options["pool_recycle"] = PG_POOL_RECYCLE
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

    def _now(self) -> Any:
        """The current time, as the leases count it: the database's clock on
        PostgreSQL (one clock for every host), the process's on SQLite."""
        if self._backend == "postgresql":
            return func.now()
        return _now()

    def _ago(self, seconds: float) -> Any:
        """The time ``seconds`` ago, on the same clock as `_now`."""
        if self._backend == "postgresql":
            return func.now() - timedelta(seconds=seconds)
        return _now() - timedelta(seconds=seconds)

    def _later(self, seconds: float) -> Any:
        """The time in ``seconds``, on the same clock as `_now`."""
        if self._backend == "postgresql":
            return func.now() + timedelta(seconds=seconds)
        return _now() + timedelta(seconds=seconds)

    def _insert(self, table: Any) -> sqlite.Insert | postgresql.Insert:
        if self._backend == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)


# -- helpers -------------------------------------------------------------


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


def _create_private(url: URL) -> None:
    """Create a missing SQLite file 0600 (an empty file is a valid empty
    database). SQLite gives the -wal and -shm files the database file's mode."""
    database = url.database or ""
    if _is_memory(url) or database.startswith("file:"):
        return
    try:
        fd = os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError:
        return  # SQLite reports the problem with its own words when it opens it
    try:
        os.fchmod(fd, 0o600)  # os.open's mode passes through the umask: set it exactly
    finally:
        os.close(fd)


def _use_wal(cursor: Any) -> None:
    """Switch the database to WAL. The switch needs an exclusive lock and SQLite
    reports "database is locked" at once, without its busy handler, while another
    process (an instance starting beside this one) holds any lock: wait a little
    and try again, as the busy timeout would."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT
    while True:
        try:
            cursor.execute("PRAGMA journal_mode")  # the adapted cursor returns None
            (mode,) = cursor.fetchone()
            if str(mode).lower() != "wal":
                cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)  # on aiosqlite's own thread, not the event loop


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
            _use_wal(cursor)
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    def on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(_WRITE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    event.listen(engine.sync_engine, "connect", on_connect)
    event.listen(engine.sync_engine, "begin", on_begin)


_REVISION = re.compile(r'^(down_revision|revision)\s*=\s*(?:"([^"]*)"|None)', re.MULTILINE)


@functools.cache
def head_revision() -> str:
    """The newest migration's revision, read from the scripts without importing
    Alembic: the one revision no other one revises."""
    revisions: set[str] = set()
    revised: set[str] = set()
    for script in (MIGRATIONS / "versions").glob("*.py"):
        for key, value in _REVISION.findall(script.read_text(encoding="utf-8")):
            if value:
                (revisions if key == "revision" else revised).add(value)
    heads = revisions - revised
    if len(heads) != 1:
        raise StorageError(f"the migrations have {len(heads)} heads: {sorted(heads)}")
    return heads.pop()
