"""Admin alerts: the store's half of `bridge.alerts`.

One row per (kind, subject): the problem's ``since`` (NULL while it is not
present) and its last alert's ``sent_at``. Several instances on one database
decide who sends with the row itself, no coordinator:

- `claim_alert`: the problem occurs. An upsert opens it (``since``), then one
  conditional UPDATE takes the right to send: it sets ``sent_at`` only when no
  alert went out within ``repeat_after``. Of instances racing, one changes the
  row (PostgreSQL re-checks the condition on the row the winner committed;
  SQLite's writes are serialized), and only that one gets the claim.
- `release_alert`: the send failed: ``sent_at`` goes back to NULL (if it is still
  the claim's), so the next occurrence, on any instance, tries again.
- `clear_alerts`: the problem is gone: ``since`` becomes NULL. The row is locked
  while it is read and changed, so one instance learns that an announced problem
  (an alert sent since it began) cleared, and sends the recovery message.
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import and_, func, or_, select, update

from bridge.alerts import AlertRecord
from storage.database import Database
from storage.schema import alerts


class Alerts(Database):
    """The alerts half of the store."""

    async def claim_alert(
        self, kind: str, subject: str, *, repeat_after: float, detail: str = ""
    ) -> AlertRecord | None:
        """``kind`` of problem occurs for ``subject``; the record to announce if
        this caller is to send its alert (none sent within ``repeat_after``
        seconds), else None."""
        a = alerts.c
        key = and_(a.kind == kind, a.subject == subject)
        async with self._write("note an alert") as conn:
            now = self._now()  # one value: the same time in `since` and `sent_at`
            await conn.execute(
                self._insert(alerts)
                .values(kind=kind, subject=subject, since=now, sent_at=None, detail=detail)
                .on_conflict_do_update(
                    index_elements=["kind", "subject"],
                    set_={"since": func.coalesce(a.since, now), "detail": detail},
                )
            )
            row = (
                await conn.execute(
                    update(alerts)
                    .where(key, or_(a.sent_at.is_(None), a.sent_at <= self._ago(repeat_after)))
                    .values(sent_at=now)
                    .returning(a.since, a.sent_at)
                )
            ).one_or_none()
        if row is None:
            return None
        return AlertRecord(kind, subject, since=row.since, sent_at=row.sent_at, detail=detail)

    async def release_alert(self, record: AlertRecord) -> None:
        """The alert of ``record`` could not be sent: let the next occurrence try again."""
        a = alerts.c
        async with self._write("release an alert") as conn:
            await conn.execute(
                update(alerts)
                .where(a.kind == record.kind, a.subject == record.subject)
                .where(a.sent_at == record.sent_at)
                .values(sent_at=None)
            )

    async def clear_alerts(self, subject: str, kinds: Collection[str]) -> list[AlertRecord]:
        """The problems ``kinds`` of ``subject`` are gone; return those whose alert
        was sent (the caller announces their recovery), to this caller only."""
        a = alerts.c
        where = and_(a.subject == subject, a.kind.in_(list(kinds)), a.since.is_not(None))
        # Most calls find nothing open: a read, without taking SQLite's write lock.
        async with self._read("look for open alerts") as conn:
            if (await conn.execute(select(a.kind).where(where).limit(1))).first() is None:
                return []
        async with self._write("clear alerts") as conn:
            rows = (
                await conn.execute(
                    select(a.kind, a.since, a.sent_at, a.detail).where(where).with_for_update()
                )
            ).all()
            if not rows:
                return []  # another instance cleared them meanwhile
            await conn.execute(
                update(alerts).where(where, a.kind.in_([r.kind for r in rows])).values(since=None)
            )
        return [
            AlertRecord(r.kind, subject, since=r.since, sent_at=r.sent_at, detail=r.detail)
            for r in rows
            # Announced: an alert went out since the problem began (not one of an
            # earlier time it was present, nor a failed send).
            if r.sent_at is not None and r.sent_at >= r.since
        ]
