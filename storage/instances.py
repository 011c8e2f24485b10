"""Instances and named leases: who is alive, and who holds what.

Each bridge process registers a row in ``instances`` at start and heartbeats
it every few seconds; its leases (conversations it answers, named leases
such as the Telegram poller's) are valid while that heartbeat is younger than
``lease_timeout``. A process that stops cleanly gives everything back and
deletes its row; one that was killed is found dead either by its heartbeat's
age, or at once by a new process of the same machine boot that sees its pid
gone (the common restart of a single instance after a crash).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import delete, or_, select, update

from storage.database import Database, _now
from storage.schema import conversations, instances, leases

log = logging.getLogger("storage")


class Instances(Database):
    """The instance half of the store."""

    async def register_instance(
        self,
        instance_id: str,
        *,
        host: str,
        pid: int,
        is_alive: Callable[[int], bool],
        forget_after: float = 86400.0,
    ) -> list[str]:
        """Add this process's row. Instances of the same ``host`` whose pid is
        not alive (``is_alive``), or is ours, are dead: their rows go, and so
        their leases are free at once. Rows silent for ``forget_after``
        seconds go too. Returns the ids found dead on this host."""
        i = instances.c
        now = _now()
        async with self._write("register this instance") as conn:
            rows = (await conn.execute(select(i.id, i.pid).where(i.host == host))).all()
            dead = [row.id for row in rows if row.pid == pid or not is_alive(row.pid)]
            stale = or_(i.heartbeat_at < self._ago(forget_after), i.id.in_(dead))
            await conn.execute(delete(instances).where(stale))
            if dead:
                await conn.execute(delete(leases).where(leases.c.owner.in_(dead)))
            # A start tries parked replies at once: whatever refused them may
            # have been what the operator restarted for.
            await conn.execute(
                update(conversations)
                .where(conversations.c.not_before.is_not(None))
                .values(not_before=None)
            )
            await conn.execute(
                self._insert(instances).values(
                    id=instance_id, host=host, pid=pid, started_at=now, heartbeat_at=self._now()
                )
            )
        return dead

    async def heartbeat(self, instance_id: str) -> bool:
        """Renew this instance's heartbeat; False if its row was gone (another
        process took it for dead): it is then added again, but whatever it
        held may have been taken over."""
        async with self._write("heartbeat") as conn:
            result = await conn.execute(
                update(instances)
                .where(instances.c.id == instance_id)
                .values(heartbeat_at=self._now())
            )
            if result.rowcount == 1:
                return True
            log.warning("this instance's row was gone from the database; adding it again")
            await conn.execute(
                self._insert(instances).values(
                    id=instance_id, host="?", pid=0, started_at=_now(), heartbeat_at=self._now()
                )
            )
            return False

    async def unregister_instance(self, instance_id: str) -> None:
        """Give back every lease and delete the row (a clean stop)."""
        async with self._write("unregister this instance") as conn:
            await conn.execute(
                update(conversations)
                .where(conversations.c.lease_owner == instance_id)
                .values(lease_owner=None)
            )
            await conn.execute(delete(leases).where(leases.c.owner == instance_id))
            await conn.execute(delete(instances).where(instances.c.id == instance_id))

    async def acquire_lease(self, name: str, owner: str, *, lease_timeout: float) -> bool:
        """Take the named lease if it is free or its owner stopped heartbeating
        ``lease_timeout`` seconds ago; True if ``owner`` holds it now."""
        alive = select(instances.c.id).where(instances.c.heartbeat_at >= self._ago(lease_timeout))
        async with self._write("take a lease") as conn:
            await conn.execute(
                self._insert(leases)
                .values(name=name, owner=owner, acquired_at=_now())
                .on_conflict_do_nothing(index_elements=["name"])
            )
            await conn.execute(
                update(leases)
                .where(
                    leases.c.name == name,
                    leases.c.owner != owner,
                    leases.c.owner.not_in(alive),
                )
                .values(owner=owner, acquired_at=_now())
            )
            holder = (
                await conn.execute(select(leases.c.owner).where(leases.c.name == name))
            ).scalar_one_or_none()
        return holder == owner

    async def release_lease(self, name: str, owner: str) -> None:
        async with self._write("give back a lease") as conn:
            await conn.execute(delete(leases).where(leases.c.name == name, leases.c.owner == owner))
