"""Store fixtures: every store test runs on SQLite, and on PostgreSQL when
``AGENT_BRIDGE_TEST_DATABASE_URL`` names one, e.g.::

    AGENT_BRIDGE_TEST_DATABASE_URL=postgresql+asyncpg://postgres@127.0.0.1:5432/test

On PostgreSQL each test gets a throwaway schema, ``ab_test_<run token>_<n>``,
created before the test and dropped (CASCADE) after it. The store reaches it
through ``Store(url, schema=...)``, which sets the connection's
``search_path`` as an asyncpg *server setting* (``connect_args=
{"server_settings": {"search_path": ...}}``). The URL cannot carry it:
SQLAlchemy hands every URL query parameter to ``asyncpg.connect()`` as a
keyword argument, and asyncpg has neither ``search_path=`` nor libpq's
``options=-csearch_path=...``.
"""

from __future__ import annotations

import itertools
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from storage import Store

PG_URL = os.environ.get("AGENT_BRIDGE_TEST_DATABASE_URL", "")
RUN_TOKEN = secrets.token_hex(4)
_schema_numbers = itertools.count()

BACKENDS = [
    "sqlite",
    pytest.param(
        "postgresql",
        marks=pytest.mark.skipif(
            not PG_URL, reason="set AGENT_BRIDGE_TEST_DATABASE_URL to run on PostgreSQL"
        ),
    ),
]


@dataclass(frozen=True)
class Database:
    """One empty database (a SQLite file, or a PostgreSQL schema)."""

    backend: str
    url: str
    schema: str | None = None

    def store(self) -> Store:
        return Store(self.url, schema=self.schema)

    @asynccontextmanager
    async def engine(self) -> AsyncIterator[AsyncEngine]:
        """A separate engine on the same database, to look behind the store."""
        connect_args = {"server_settings": {"search_path": self.schema}} if self.schema else {}
        engine = create_async_engine(self.url, connect_args=connect_args, poolclass=NullPool)
        try:
            yield engine
        finally:
            await engine.dispose()

    async def execute(self, sql: str, **params: object) -> list[tuple[object, ...]]:
        async with self.engine() as engine, engine.begin() as conn:
            result = await conn.execute(text(sql), params)
            return [tuple(row) for row in result] if result.returns_rows else []


async def _pg_admin(sql: str) -> None:
    engine = create_async_engine(PG_URL, poolclass=NullPool)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(sql))
    finally:
        await engine.dispose()


@pytest.fixture(params=BACKENDS)
async def db(request: pytest.FixtureRequest, tmp_path: os.PathLike[str]) -> AsyncIterator[Database]:
    if request.param == "sqlite":
        yield Database("sqlite", f"sqlite+aiosqlite:///{tmp_path}/bridge.db")
        return
    schema = f"ab_test_{RUN_TOKEN}_{next(_schema_numbers)}"
    await _pg_admin(f'CREATE SCHEMA "{schema}"')
    try:
        yield Database("postgresql", PG_URL, schema)
    finally:
        await _pg_admin(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
async def store(db: Database) -> AsyncIterator[Store]:
    async with db.store() as opened:
        yield opened
