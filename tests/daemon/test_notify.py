"""sd_notify against a real Unix datagram socket (filesystem and abstract)."""

from __future__ import annotations

import asyncio
import itertools
import os
import statistics
import time
from pathlib import Path

from bridge.notify import Notifier
from tests.daemon.conftest import NotifyListener


async def test_ready_status_stopping_reach_the_socket(notify_socket: NotifyListener) -> None:
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": notify_socket.path})
    try:
        assert notifier.enabled
        notifier.status("Starting: opening the store")
        notifier.ready("Ready: telegram; 0 resumed")
        notifier.stopping("Stopping: letting 1 agent calls finish")
        stopping = await notify_socket.wait_for("STOPPING", "1", within=5)
    finally:
        notifier.close()
    fields = [n.fields for n in notify_socket.received]
    assert fields[0] == {"STATUS": "Starting: opening the store"}
    assert fields[1] == {"READY": "1", "STATUS": "Ready: telegram; 0 resumed"}
    assert stopping[0].fields["STATUS"] == "Stopping: letting 1 agent calls finish"


async def test_abstract_namespace_socket() -> None:
    listener = NotifyListener(f"@agent-bridge-test-{os.getpid()}-{time.monotonic_ns()}")
    listener.start()
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": listener.path})
    try:
        notifier.ready("Ready")
        [ready] = await listener.wait_for("READY", "1", within=5)
    finally:
        notifier.close()
        await listener.close()
    assert ready.fields["STATUS"] == "Ready"


async def test_repeated_status_is_sent_once(notify_socket: NotifyListener) -> None:
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": notify_socket.path})
    try:
        notifier.status("Running: telegram connected")
        notifier.status("Running:  telegram\nconnected")  # same line once whitespace is folded
        notifier.status("Running: telegram disconnected")
        await notify_socket.wait_for("STATUS", "Running: telegram disconnected", within=5)
    finally:
        notifier.close()
    assert [n.fields["STATUS"] for n in notify_socket.received] == [
        "Running: telegram connected",
        "Running: telegram disconnected",
    ]


async def test_watchdog_pings_at_half_the_interval(notify_socket: NotifyListener) -> None:
    notifier = Notifier.from_environ(
        {"NOTIFY_SOCKET": notify_socket.path, "WATCHDOG_USEC": "200000"}
    )
    assert notifier.watchdog_interval == 0.1
    try:
        async with notifier.watchdog(lambda: "Running"):
            pings = await notify_socket.wait_for("WATCHDOG", "1", count=4, within=5)
    finally:
        notifier.close()
    gaps = [b.at - a.at for a, b in itertools.pairwise(pings)]
    # Every WATCHDOG_USEC/2 (0.1 s): well inside the 0.2 s systemd would allow.
    assert 0.08 < statistics.median(gaps) < 0.15, gaps
    assert notify_socket.with_key("STATUS", "Running")


async def test_watchdog_stops_when_the_loop_is_blocked(notify_socket: NotifyListener) -> None:
    notifier = Notifier.from_environ(
        {"NOTIFY_SOCKET": notify_socket.path, "WATCHDOG_USEC": "100000"}
    )
    try:
        async with notifier.watchdog():
            await notify_socket.wait_for("WATCHDOG", count=2, within=5)
            time.sleep(0.3)  # noqa: ASYNC251 -- a stuck event loop: no ping may go out meanwhile
            blocked_at = time.monotonic()
            count = len(notify_socket.with_key("WATCHDOG"))
            await notify_socket.wait_for("WATCHDOG", count=count + 1, within=5)
    finally:
        notifier.close()
    pings = notify_socket.with_key("WATCHDOG")
    longest = max(b.at - a.at for a, b in itertools.pairwise(pings))
    assert longest >= 0.3  # systemd would have seen the silence and restarted us
    assert pings[-1].at >= blocked_at


async def test_watchdog_for_another_pid_is_ignored(notify_socket: NotifyListener) -> None:
    notifier = Notifier.from_environ(
        {
            "NOTIFY_SOCKET": notify_socket.path,
            "WATCHDOG_USEC": "100000",
            "WATCHDOG_PID": str(os.getpid() + 1),
        }
    )
    assert notifier.watchdog_interval is None
    mine = Notifier.from_environ(
        {
            "NOTIFY_SOCKET": notify_socket.path,
            "WATCHDOG_USEC": "100000",
            "WATCHDOG_PID": str(os.getpid()),
        }
    )
    assert mine.watchdog_interval == 0.05
    notifier.close()
    mine.close()


async def test_without_systemd_everything_is_a_no_op() -> None:
    notifier = Notifier.from_environ({"WATCHDOG_USEC": "100000"})
    assert not notifier.enabled
    assert notifier.watchdog_interval is None
    assert notifier.notify("READY=1") is False
    async with notifier.watchdog():
        await asyncio.sleep(0)
    notifier.close()


async def test_a_vanished_socket_does_not_raise(tmp_path: Path) -> None:
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    try:
        assert notifier.notify("READY=1") is False
    finally:
        notifier.close()
