"""`Instance`: this process among the bridge processes that share one database.

Each process gets an id at start (a uuid, logged with the host and pid),
registers it in the store and heartbeats it every ``lease_timeout / 3``
seconds. Its leases (the conversations it answers, and named leases such as
the Telegram poller's) are valid while the heartbeat is younger than
``lease_timeout``: when a process dies, another takes its work over after that
long, or at once if it runs on the same machine (it sees the pid gone).

The coordination is the database's: row locks and ``SKIP LOCKED`` when
claiming, ``LISTEN/NOTIFY`` to wake, rows for leases. Nothing else coordinates.

Example::

    async with Instance(store, lease_timeout=30) as instance:
        if await instance.acquire("telegram-poller:123"):
            while instance.holds("telegram-poller:123"):
                ...  # poll
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self

from bridge.errors import StorageError

if TYPE_CHECKING:
    from storage.store import Store

log = logging.getLogger("bridge.instance")

#: A lease is trusted locally only for this share of the timeout after the last
#: heartbeat that reached the database: the others count the full timeout from
#: the heartbeat's own time, which was a little earlier.
TRUST_SHARE = 0.8


def host_identity() -> str:
    """This machine boot: the host name and the kernel's boot id. Two processes
    with the same identity can see each other's pids."""
    name = socket.gethostname()
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = "?"
    return f"{name}/{boot}"


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


class Instance:
    """This process's identity, heartbeat and named leases; an async context manager."""

    def __init__(self, store: Store, *, lease_timeout: float) -> None:
        self.store = store
        self.lease_timeout = lease_timeout
        self.id = uuid.uuid4().hex
        self.host = host_identity()
        self.pid = os.getpid()
        self._held: set[str] = set()
        self._last_ok = 0.0
        self._beat: asyncio.Task[None] | None = None
        self.heartbeat_error: str | None = None

    def __repr__(self) -> str:
        return f"Instance({self.id[:8]} on {self.host.split('/')[0]}, pid {self.pid})"

    async def __aenter__(self) -> Self:
        started = time.monotonic()
        dead = await self.store.register_instance(
            self.id, host=self.host, pid=self.pid, is_alive=pid_alive
        )
        self._last_ok = started
        log.info(
            "instance %s on %s, pid %d%s",
            self.id,
            socket.gethostname(),
            self.pid,
            f"; {len(dead)} dead instance(s) of this machine cleared" if dead else "",
        )
        self._beat = asyncio.create_task(self._heartbeat_loop(), name="instance-heartbeat")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._beat is not None:
            self._beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beat
            self._beat = None
        self._held.clear()
        try:
            await self.store.unregister_instance(self.id)
        except StorageError as exc:
            log.warning(
                "could not give back this instance's leases (others take them over in %g s): %s",
                self.lease_timeout,
                exc,
            )

    @property
    def fresh(self) -> bool:
        """Whether the last heartbeat is recent enough that no other instance
        can have taken over what this one holds."""
        return time.monotonic() - self._last_ok < self.lease_timeout * TRUST_SHARE

    async def acquire(self, name: str) -> bool:
        """Take the named lease if free or its owner is dead; True if held now."""
        held = await self.store.acquire_lease(name, self.id, lease_timeout=self.lease_timeout)
        if held:
            self._held.add(name)
        else:
            self._held.discard(name)
        return held

    def holds(self, name: str) -> bool:
        """Whether this instance holds ``name`` and its heartbeat is fresh (no
        database call): stop using the lease as soon as this turns False."""
        return name in self._held and self.fresh

    async def release(self, name: str) -> None:
        self._held.discard(name)
        try:
            await self.store.release_lease(name, self.id)
        except StorageError as exc:
            log.warning("could not give back the lease %s: %s", name, exc)

    async def beat(self) -> bool:
        """One heartbeat now; False if it did not reach the database."""
        # Counted from before the call: the others count from the row's time.
        started = time.monotonic()
        try:
            kept = await self.store.heartbeat(self.id)
        except StorageError as exc:
            if self.heartbeat_error is None:
                log.warning("heartbeat failed: %s", exc)
            self.heartbeat_error = str(exc)
            return False
        if not kept:
            # Another process took us for dead: whatever we held may be theirs now.
            self._held.clear()
        if self.heartbeat_error is not None:
            log.info("heartbeat reaches the database again")
        self.heartbeat_error = None
        self._last_ok = started
        return True

    async def _heartbeat_loop(self) -> None:
        interval = self.lease_timeout / 3
        while True:
            await asyncio.sleep(interval)
            await self.beat()
