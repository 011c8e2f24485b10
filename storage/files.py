"""The files users sent: the store's half of the per-user file limits
(`bridge.file_limits.FileUseLog`), shared by every instance on the same database.

Each admitted file is a row (``files`` 1, its declared size), and what its
download added beyond that another (``files`` 0); the limits are sums over a
user's rows since a time. Two instances admitting one user's files at the same
moment may both pass a limit by one: they are soft limits, not quotas.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import case, delete, func, select

from storage.database import Database, _now
from storage.schema import file_uses


class FileUses(Database):
    """The file-use half of the store."""

    async def file_uses(
        self, user: str, *, files_since: datetime, bytes_since: datetime
    ) -> tuple[int, int]:
        """(files ``user`` sent since ``files_since``, bytes since ``bytes_since``)."""
        f = file_uses.c
        since = min(files_since, bytes_since)
        query = select(
            func.coalesce(func.sum(case((f.created_at >= files_since, f.files), else_=0)), 0),
            func.coalesce(func.sum(case((f.created_at >= bytes_since, f.size), else_=0)), 0),
        ).where(f.user_key == user, f.created_at >= since)
        async with self._read("count file uses") as conn:
            files, size = (await conn.execute(query)).one()
        return int(files), int(size)

    async def record_file_use(self, user: str, *, files: int, size: int) -> None:
        async with self._write("record a file use") as conn:
            await conn.execute(
                file_uses.insert().values(user_key=user, files=files, size=size, created_at=_now())
            )

    async def purge_file_uses(self, older_than_days: float = 2.0) -> int:
        """Delete the rows older than any limit looks back; return how many."""
        cutoff = _now() - timedelta(days=older_than_days)
        async with self._write("purge file uses") as conn:
            result = await conn.execute(delete(file_uses).where(file_uses.c.created_at < cutoff))
        return int(result.rowcount or 0)
