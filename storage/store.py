"""The store: the message inbox and the conversations, in SQLite or PostgreSQL.

One class, `Store`, with the same code on both databases (SQLAlchemy Core,
async), assembled from its parts along their seams:

- `storage.database.Database`: the engine, migrations, transactions and the
  translation of every database failure into `StorageError`;
- `storage.conversations.Conversations`: chat threads and agent sessions;
- `storage.queue.Queue`: the inbox as a claimed work queue (a message's
  states, and every statement that moves it);
- `storage.instances.Instances`: live instances and named leases.

Every method is one transaction, committed when it returns.

Example::

    async with Store("sqlite+aiosqlite:///agent-bridge.db") as store:
        inbox = await store.accept(incoming)   # None if already seen
"""

from __future__ import annotations

from storage.database import MIGRATION_LOCK_KEY, MIGRATIONS, SQLITE_BUSY_TIMEOUT
from storage.instances import Instances
from storage.queue import FINISHED, UNFINISHED, Claim, Queue, QueueStats


class Store(Queue, Instances):
    """The inbox, the conversations and the instances; an async context manager.

    ``schema`` (PostgreSQL only) puts the tables in that schema, through the
    connection's ``search_path``; the schema must exist. The tests use it for
    a throwaway schema per test.
    """


__all__ = [
    "FINISHED",
    "MIGRATIONS",
    "MIGRATION_LOCK_KEY",
    "SQLITE_BUSY_TIMEOUT",
    "UNFINISHED",
    "Claim",
    "QueueStats",
    "Store",
]
