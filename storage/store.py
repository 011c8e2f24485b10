"""The store: the message inbox and the conversations, in SQLite or PostgreSQL.

One class, `Store`, with the same code on both databases (SQLAlchemy Core,
async), assembled from its parts along their seams:

- `storage.database.Database`: the engine, migrations, transactions and the
  translation of every database failure into `StorageError`;
- `storage.conversations.Conversations`: chat threads and agent sessions;
- `storage.queue.Queue`: the inbox as a claimed work queue (a message's
  states, and every statement that moves it);
- `storage.instances.Instances`: live instances and named leases;
- `storage.history.History`: the turns of stateless agents' threads (the
  core's `bridge.history.ConversationHistory`);
- `storage.feedback.Feedback`: users' feedback on the agent's answers;
- `storage.alerts.Alerts`: the admin alerts' problems, and who sends them;
- `storage.access.AccessLists`: the allowlist kept in the store and its pairing codes;
- `storage.usage.UsageStore`: usage accounting and the budgets' counters;
- `storage.files.FileUses`: the files users sent, for the per-user file limits.

Every method is one transaction, committed when it returns.

Example::

    async with Store("sqlite+aiosqlite:///agent-bridge.db") as store:
        inbox = await store.accept(incoming)   # None if already seen
"""

from __future__ import annotations

import logging

from storage.access import AccessLists
from storage.alerts import Alerts
from storage.database import MIGRATION_LOCK_KEY, MIGRATIONS, SQLITE_BUSY_TIMEOUT
from storage.feedback import Feedback, FeedbackEntry
from storage.files import FileUses
from storage.history import History
from storage.instances import Instances
from storage.queue import FINISHED, UNFINISHED, Claim, Queue, QueueStats
from storage.usage import UsageRow, UsageStore

log = logging.getLogger("storage")


class Store(Queue, Instances, History, Feedback, Alerts, AccessLists, UsageStore, FileUses):
    """The inbox, the conversations, the instances, the history and the feedback;
    an async context manager.

    ``schema`` (PostgreSQL only) puts the tables in that schema, through the
    connection's ``search_path``; the schema must exist. The tests use it for
    a throwaway schema per test.
    """

    async def purge_text(self, older_than_days: float) -> int:
        """Erase the text and reply of messages finished more than ``older_than_days``
        ago, and delete the history turns recorded before then; return how many
        messages were erased (the history's count is logged)."""
        # The queue erases the messages' text first (super), then the history's copy
        # of the same words goes by the same retention: a turn kept there would
        # outlive the message it came from.
        erased = await super().purge_text(older_than_days)
        deleted = await self.purge_history(older_than_days)
        if deleted:
            log.info("deleted %d history turn(s) older than the retention", deleted)
        # Files sent: kept only as long as a per-user limit looks back.
        await self.purge_file_uses()
        return erased


__all__ = [
    "FINISHED",
    "MIGRATIONS",
    "MIGRATION_LOCK_KEY",
    "SQLITE_BUSY_TIMEOUT",
    "UNFINISHED",
    "Claim",
    "FeedbackEntry",
    "QueueStats",
    "Store",
    "UsageRow",
]
