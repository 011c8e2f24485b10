"""Fixtures for the daemon's tests: a real sd_notify socket, free ports, and the
bridge run as a subprocess (``python -m bridge run``) the way systemd runs it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Notification:
    """One sd_notify datagram: its ``KEY=VALUE`` lines, and when it arrived."""

    fields: dict[str, str]
    at: float = field(default_factory=time.monotonic)
    #: What ``NotifyListener.probe()`` returned when the datagram was read.
    seen: object = None


class NotifyListener:
    """A Unix datagram socket standing in for systemd's notify socket."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.received: list[Notification] = []
        #: Called as each datagram is read, to record what the fakes saw by then.
        self.probe: Callable[[], object] | None = None
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        bind_to = "\0" + path[1:] if path.startswith("@") else path
        self._sock.bind(bind_to)
        self._sock.setblocking(False)
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._read())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._sock.close()
        if not self.path.startswith("@"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await loop.sock_recv(self._sock, 65536)
            lines = data.decode().split("\n")
            fields = dict(line.split("=", 1) for line in lines if "=" in line)
            async with self._changed:
                seen = self.probe() if self.probe is not None else None
                self.received.append(Notification(fields, seen=seen))
                self._changed.notify_all()

    def with_key(self, key: str, value: str | None = None) -> list[Notification]:
        return [
            n
            for n in self.received
            if key in n.fields and (value is None or n.fields[key] == value)
        ]

    async def wait_for(
        self, key: str, value: str | None = None, *, count: int = 1, within: float = 15.0
    ) -> list[Notification]:
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(lambda: len(self.with_key(key, value)) >= count)
        return self.with_key(key, value)


@pytest.fixture
async def notify_socket(tmp_path: Path) -> AsyncIterator[NotifyListener]:
    # AF_UNIX paths are limited to ~107 bytes; pytest's tmp_path can be longer.
    path = f"/tmp/ab-notify-{os.getpid()}-{time.monotonic_ns()}.sock"
    listener = NotifyListener(path)
    listener.start()
    try:
        yield listener
    finally:
        await listener.close()


class BridgeProcess:
    """``python -m bridge run --config PATH`` in a subprocess; stderr collected."""

    def __init__(self, config: Path, env: dict[str, str]) -> None:
        self.config = config
        self.env = env
        self.proc: asyncio.subprocess.Process | None = None
        self.stderr_lines: list[str] = []
        self._reader: asyncio.Task[None] | None = None
        self._changed = asyncio.Condition()

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bridge",
            "run",
            "--config",
            str(self.config),
            cwd=str(REPO),
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        async for raw in self.proc.stderr:
            async with self._changed:
                self.stderr_lines.append(raw.decode(errors="replace").rstrip("\n"))
                self._changed.notify_all()

    @property
    def stderr(self) -> str:
        return "\n".join(self.stderr_lines)

    async def wait_log(self, predicate: Callable[[str], bool], *, within: float = 15.0) -> str:
        def found() -> str | None:
            return next((line for line in self.stderr_lines if predicate(line)), None)

        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(lambda: found() is not None)
        line = found()
        assert line is not None
        return line

    def signal(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def wait(self, within: float = 30.0) -> int:
        assert self.proc is not None
        async with asyncio.timeout(within):
            code = await self.proc.wait()
            if self._reader is not None:
                await self._reader
        return code

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await self._reader


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for a bridge subprocess: ours without the inherited systemd
    variables, this checkout on the path, unbuffered output, then ``extra``."""
    systemd = {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM"}
    env = {k: v for k, v in os.environ.items() if k not in systemd}
    env["PYTHONPATH"] = str(REPO)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


@pytest.fixture
def bridge_env(tmp_path: Path) -> dict[str, str]:
    """The environment for a bridge subprocess: no inherited systemd variables."""
    return subprocess_env()


@pytest.fixture
async def spawn(bridge_env: dict[str, str]) -> AsyncIterator[Callable[..., BridgeProcess]]:
    """``spawn(config_path, **extra_env)`` starts a bridge; every one is killed at the end."""
    started: list[BridgeProcess] = []

    def make(config: Path, **extra_env: str) -> BridgeProcess:
        process = BridgeProcess(config, {**bridge_env, **extra_env})
        started.append(process)
        return process

    try:
        yield make
    finally:
        for process in started:
            await process.kill()


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Undo what setup_logging() does to the root and SDK loggers."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    from bridge.logs import NOISY_LOGGERS

    levels = {name: logging.getLogger(name).level for name in NOISY_LOGGERS}
    try:
        yield
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()
        root.setLevel(level)
        for name, old in levels.items():
            logging.getLogger(name).setLevel(old)
