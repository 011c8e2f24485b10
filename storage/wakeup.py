"""Waking other instances: PostgreSQL ``NOTIFY`` when there may be work, ``LISTEN`` for it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from bridge.errors import StorageError
from storage.database import _DB_ERRORS, Database

log = logging.getLogger("storage")

_LISTEN_ERRORS: tuple[type[BaseException], ...] = (StorageError, *_DB_ERRORS)

#: The PostgreSQL NOTIFY channel that says "there may be work to claim".
WORK_CHANNEL = "agent_bridge_work"


class Wakeup(Database):
    """The store's ``LISTEN``/``NOTIFY`` (no-ops on SQLite: one process)."""

    @contextlib.asynccontextmanager
    async def listen(self, wake: Callable[[], None]) -> AsyncIterator[None]:
        """While open, call ``wake()`` whenever another instance says there is
        work (PostgreSQL ``LISTEN``; reconnects after a drop, calling ``wake()``
        then too, since notifications may have been missed). A no-op on SQLite."""
        if self.dialect != "postgresql":
            yield
            return
        task = asyncio.create_task(self._listen(wake), name="store-listen")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _listen(self, wake: Callable[[], None]) -> None:
        delay = 1.0
        while True:
            try:
                engine = self._require_engine()
                async with engine.connect() as conn:
                    raw = await conn.get_raw_connection()
                    driver: Any = raw.driver_connection
                    lost = asyncio.Event()
                    driver.add_termination_listener(lambda _conn, lost=lost: lost.set())
                    await driver.add_listener(WORK_CHANNEL, lambda *_args: wake())
                    delay = 1.0
                    wake()  # what was notified while we were not listening
                    await lost.wait()
                    log.warning("lost the database connection that listens for work")
            except asyncio.CancelledError:
                raise
            except _LISTEN_ERRORS as exc:
                log.debug("cannot listen for work yet: %s", type(exc).__name__)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    async def _notify(self, conn: AsyncConnection) -> None:
        # Delivered at commit, and only if the transaction commits.
        if self.dialect == "postgresql":
            await conn.execute(text("SELECT pg_notify(:channel, '')"), {"channel": WORK_CHANNEL})
