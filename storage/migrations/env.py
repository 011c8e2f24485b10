"""Alembic environment for agent-bridge.

The store runs migrations itself (`Store.upgrade`, at every start and by
``agent-bridge db upgrade``): it passes an open connection, already inside a
transaction that holds the migration lock, in ``config.attributes``.

For developers, the ``alembic`` command works too, e.g. to write a revision::

    alembic -c storage/alembic.ini -x url=sqlite+aiosqlite:///dev.db \\
        revision --autogenerate -m "add a column"
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from storage.schema import metadata

config = context.config


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=metadata)
    with context.begin_transaction():
        context.run_migrations()


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url"
    )
    if not url:
        raise SystemExit("pass the database URL: alembic -x url=sqlite+aiosqlite:///dev.db ...")
    return url


async def _run_online(url: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
elif context.is_offline_mode():
    context.configure(url=_url(), target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_online(_url()))
