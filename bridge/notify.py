"""systemd's notify protocol (``sd_notify``), written by hand.

Under ``Type=notify`` systemd passes ``NOTIFY_SOCKET``, the path of a Unix
datagram socket (``@name`` for the abstract namespace), and each datagram we
send there is a list of ``KEY=VALUE`` lines: ``READY=1``, ``STATUS=...``,
``WATCHDOG=1``, ``STOPPING=1``, ``RELOADING=1``, ``EXTEND_TIMEOUT_USEC=...``
(sd_notify(3)). With ``WatchdogSec=`` it also
passes ``WATCHDOG_USEC`` (and ``WATCHDOG_PID``, the process meant to ping): a
service that does not send ``WATCHDOG=1`` within that interval is restarted.

Why not a library: the ``sdnotify`` package on PyPI has not been maintained
since 2017, and ``systemd-python`` needs the libsystemd headers and a compiler
at install time. The protocol is one ``sendto`` per message.

Outside systemd (no ``NOTIFY_SOCKET``) every call is a no-op.

A reload (SIGHUP) follows sd_notify(3)'s protocol: ``RELOADING=1`` with
``MONOTONIC_USEC=`` (the ``CLOCK_MONOTONIC`` time it began, which systemd 253+
uses to match it to the reload it asked for), then ``READY=1`` when done. A
start that waits for a platform sends ``EXTEND_TIMEOUT_USEC=`` before each
wait, so that ``TimeoutStartSec=`` bounds one attempt, not the whole outage.

Example::

    notifier = Notifier.from_environ()
    notifier.status("Starting: opening the store")
    ...
    notifier.ready("Ready: telegram; 0 pending")
    async with notifier.watchdog():      # WATCHDOG=1 every WATCHDOG_USEC / 2
        await stop.wait()
    notifier.stopping()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Callable, Mapping

log = logging.getLogger("bridge.notify")


class Notifier:
    def __init__(self, address: str | None, *, watchdog_usec: int | None = None) -> None:
        #: The socket address as systemd gave it ("@..." for the abstract namespace).
        self.address = address
        #: The watchdog interval in microseconds, when this process must ping.
        self.watchdog_usec = watchdog_usec
        self._sock: socket.socket | None = None
        self._last_status: str | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET") or None
        watchdog: int | None = None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        # WATCHDOG_PID names the process systemd expects pings from; a child
        # that inherited the variables must not ping on its parent's behalf.
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            watchdog = int(usec)
        return cls(address, watchdog_usec=watchdog)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *assignments: str) -> bool:
        """Send one datagram of ``KEY=VALUE`` lines; False if it could not be sent.

        Never raises: a missing systemd must not take the bridge down.
        """
        if self.address is None:
            return False
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        payload = "\n".join(assignments).encode("utf-8", "replace")
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto(payload, target)
        except OSError as exc:
            log.warning("cannot notify systemd at %s: %s", self.address, exc.strerror or exc)
            return False
        return True

    def status(self, text: str) -> None:
        """``STATUS=``: one line shown by ``systemctl status``; repeats are not resent."""
        line = " ".join(text.split())
        if line != self._last_status:
            self._last_status = line
            self.notify(f"STATUS={line}")

    def ready(self, status: str) -> None:
        line = " ".join(status.split())
        self._last_status = line
        self.notify("READY=1", f"STATUS={line}")

    def reloading(self, status: str = "Reloading") -> None:
        line = " ".join(status.split())
        self._last_status = line
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}", f"STATUS={line}")

    def extend_timeout(self, seconds: float) -> None:
        """``EXTEND_TIMEOUT_USEC=``: the start (or stop) may take ``seconds`` more
        from now; systemd times it out only if no word comes within that long, and
        only past the unit's own ``TimeoutStartSec=`` (systemd 236+; older ones
        ignore it)."""
        self.notify(f"EXTEND_TIMEOUT_USEC={max(int(seconds * 1_000_000), 1)}")

    def stopping(self, status: str = "Stopping") -> None:
        line = " ".join(status.split())
        self._last_status = line
        self.notify("STOPPING=1", f"STATUS={line}")

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between two ``WATCHDOG=1``: half the timeout, as sd_watchdog_enabled(3)
        recommends; None when no watchdog is asked for."""
        if self.watchdog_usec is None or not self.enabled:
            return None
        return self.watchdog_usec / 2_000_000

    @contextlib.asynccontextmanager
    async def watchdog(
        self, status: Callable[[], str] | None = None, *, every: float = 5.0
    ) -> AsyncIterator[None]:
        """While open, ping the watchdog from the event loop (so a blocked loop
        stops the pings and systemd restarts the service), and refresh ``STATUS``
        from ``status()`` whenever it changes."""
        if not self.enabled:
            yield
            return
        interval = self.watchdog_interval
        tick = min(interval, every) if interval is not None else every
        task = asyncio.create_task(self._tick(tick, status), name="sd-notify-watchdog")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _tick(self, seconds: float, status: Callable[[], str] | None) -> None:
        while True:
            if self.watchdog_usec is not None:
                self.notify("WATCHDOG=1")
            if status is not None:
                try:
                    self.status(status())
                except Exception:  # a status callback must never stop the pings
                    log.exception("cannot compute the systemd status line")
            await asyncio.sleep(seconds)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
