"""Fixtures for the black-box multi-instance tests: a fresh PostgreSQL database per test.

These tests run only when ``AGENT_BRIDGE_TEST_DATABASE_URL`` names a PostgreSQL server,
e.g. ``postgresql+asyncpg://postgres@127.0.0.1:5432/test``. Each test gets its own
database, ``ab_e2e_<random>``, created on that server (the URL's database is only used
to issue ``CREATE DATABASE``) and dropped ``WITH (FORCE)`` afterwards, so that the
connections of a SIGKILLed bridge do not keep it alive.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from sqlalchemy.engine import URL, make_url

PG_URL = os.environ.get("AGENT_BRIDGE_TEST_DATABASE_URL", "")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "multi_instance: black-box tests of several `agent-bridge run` processes on one "
        "PostgreSQL (need AGENT_BRIDGE_TEST_DATABASE_URL)",
    )


def _asyncpg_dsn(url: URL) -> str:
    # asyncpg speaks libpq-style DSNs; SQLAlchemy's driver suffix is not one.
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


@asynccontextmanager
async def fresh_database(prefix: str = "ab_e2e") -> AsyncIterator[URL]:
    """A fresh PostgreSQL database on the test server, dropped ``WITH (FORCE)`` after
    (a SIGKILLed bridge's connections must not keep it alive); skips without one."""
    if not PG_URL.startswith("postgresql"):
        pytest.skip("set AGENT_BRIDGE_TEST_DATABASE_URL to a PostgreSQL URL to run this")
    import asyncpg  # type: ignore[import-untyped]

    admin_url = make_url(PG_URL)
    name = f"{prefix}_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(_asyncpg_dsn(admin_url))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield admin_url.set(database=name)
    finally:
        admin = await asyncpg.connect(_asyncpg_dsn(admin_url))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture
async def pg_database() -> AsyncIterator[str]:
    """The SQLAlchemy URL of a fresh, empty PostgreSQL database (dropped after the test)."""
    async with fresh_database() as url:
        yield url.render_as_string(hide_password=False)
