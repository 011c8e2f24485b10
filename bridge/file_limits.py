"""Per-user file limits: ``files.max_per_minute`` files in the last minute and
``files.max_bytes_per_day`` bytes since midnight UTC (`bridge.files` asks before
each download).

They are counted in a `FileUseLog`, a port of the core: the store implements it
(``storage/files.py``), so that every instance on one database counts the same
files; `MemoryFileUses` counts in this process for a bridge without a store.

Example::

    limits = FileLimits(config.files, store)
    refused = await limits.admit("telegram:1001", declared=51234)   # None, "per_minute"...
    await limits.downloaded("telegram:1001", 51234, size_on_disk)
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol

from bridge.config import FilesConfig


class FileUseLog(Protocol):
    """Where the files users sent are counted (a port: `storage.Store` implements it,
    so that every instance on one database counts the same files)."""

    async def file_uses(
        self, user: str, *, files_since: datetime, bytes_since: datetime
    ) -> tuple[int, int]:
        """(files ``user`` sent since ``files_since``, bytes since ``bytes_since``)."""
        ...

    async def record_file_use(self, user: str, *, files: int, size: int) -> None: ...


class MemoryFileUses:
    """A `FileUseLog` in this process (a bridge without a store: tests, tools)."""

    def __init__(self) -> None:
        self._uses: defaultdict[str, list[tuple[datetime, int, int]]] = defaultdict(list)

    async def file_uses(
        self, user: str, *, files_since: datetime, bytes_since: datetime
    ) -> tuple[int, int]:
        uses = self._uses[user]
        # Nothing looks back further than a day (and a minute).
        keep = min(files_since, bytes_since)
        uses[:] = [u for u in uses if u[0] >= keep]
        files = sum(n for at, n, _ in uses if at >= files_since)
        size = sum(b for at, _, b in uses if at >= bytes_since)
        return files, size

    async def record_file_use(self, user: str, *, files: int, size: int) -> None:
        self._uses[user].append((datetime.now(UTC), files, size))


class FileLimits:
    """Per-user limits: ``files.max_per_minute`` files in the last minute and
    ``files.max_bytes_per_day`` bytes since midnight UTC, counted in ``log``.
    Soft limits: two instances admitting one user's files at once may both pass."""

    def __init__(
        self,
        config: FilesConfig,
        log: FileUseLog | None = None,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._config = config
        self._log: FileUseLog = log if log is not None else MemoryFileUses()
        self._now = now

    async def admit(self, user: str, declared: int | None) -> str | None:
        """Count one file of ``declared`` bytes (None: not known) for ``user`` and
        return None, or return why it is refused ("per_minute", "per_day")
        without counting it."""
        now = self._now()
        midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
        files, size = await self._log.file_uses(
            user, files_since=now - timedelta(minutes=1), bytes_since=midnight
        )
        per_minute, per_day = self._config.max_per_minute, self._config.max_bytes_per_day
        if per_minute and files >= per_minute:
            return "per_minute"
        if per_day and (size >= per_day or size + (declared or 0) > per_day):
            return "per_day"
        await self._log.record_file_use(user, files=1, size=declared or 0)
        return None

    async def downloaded(self, user: str, declared: int | None, size: int) -> None:
        """Add what the download weighed beyond what was declared."""
        extra = size - (declared or 0)
        if extra:
            await self._log.record_file_use(user, files=0, size=extra)
