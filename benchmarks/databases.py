"""Scratch databases for the bridge under test: a SQLite file in a fresh folder, or a
PostgreSQL database of its own (``bench_<pid>_<n>``) created for one run and dropped
after, so that nothing collides with the tests' ``test`` database."""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path

PG_HOST, PG_PORT, PG_USER, PG_ADMIN_DB = "127.0.0.1", 5432, "postgres", "test"
SQLITE = "SQLite"
POSTGRES = "PostgreSQL"

_numbers = itertools.count(1)


async def postgres_version() -> str | None:
    """The server's version when PostgreSQL answers on 127.0.0.1:5432, else None."""
    try:
        socket.create_connection((PG_HOST, PG_PORT), timeout=2).close()
        import asyncpg  # type: ignore[import-untyped]
    except (OSError, ImportError):
        return None
    try:
        conn = await asyncpg.connect(
            host=PG_HOST, port=PG_PORT, user=PG_USER, database=PG_ADMIN_DB, timeout=5
        )
    except Exception:
        return None
    try:
        version: str = await conn.fetchval("SHOW server_version")
    finally:
        await conn.close()
    return version.split()[0]


@contextlib.asynccontextmanager
async def scratch_database(kind: str, workdir: Path) -> AsyncIterator[str]:
    """A fresh, empty database of ``kind``; yields its SQLAlchemy URL."""
    if kind == SQLITE:
        folder = workdir / f"sqlite-{next(_numbers)}"
        folder.mkdir()
        # Relative to the config file's folder, which is `workdir`.
        yield f"sqlite+aiosqlite:///{folder.name}/bridge.db"
        return
    import asyncpg

    name = f"bench_{os.getpid()}_{next(_numbers)}"
    admin = await asyncpg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, database=PG_ADMIN_DB, timeout=5
    )
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
