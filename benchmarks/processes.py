"""The processes under test: spawning, readiness (sd_notify) and /proc readings."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """A run went wrong (no READY, a message not answered): the figures would lie."""


class NotifyListener:
    """A Unix datagram socket standing in for systemd's ``NOTIFY_SOCKET``: records the
    monotonic time of the first ``READY=1``."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.ready_at: float | None = None
        self._ready = asyncio.Event()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(path)
        self._sock.setblocking(False)
        asyncio.get_running_loop().add_reader(self._sock.fileno(), self._read)

    def _read(self) -> None:
        while True:
            try:
                data = self._sock.recv(65536)
            except BlockingIOError:
                return
            if self.ready_at is None and "READY=1" in data.decode("utf-8", "replace").split("\n"):
                self.ready_at = time.monotonic()
                self._ready.set()

    async def wait_ready(self, within: float) -> float:
        async with asyncio.timeout(within):
            await self._ready.wait()
        assert self.ready_at is not None
        return self.ready_at

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self._sock.fileno())
        self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


class Process:
    """One process under test (the bridge or the relay), started with a notify socket."""

    def __init__(self, name: str, argv: Sequence[str], workdir: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.workdir = workdir
        self.log = workdir / f"{name}-{time.monotonic_ns()}.log"
        self.proc: asyncio.subprocess.Process | None = None
        self.spawned_at = 0.0
        self.ready_at = 0.0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self, *, within: float = 60.0) -> float:
        """Spawn and wait for READY=1; returns the seconds from spawn to READY."""
        # AF_UNIX paths are limited to ~107 bytes: keep it in /tmp, not in workdir.
        notify = NotifyListener(f"/tmp/ab-bench-{os.getpid()}-{time.monotonic_ns()}.sock")
        env = child_env()
        env["NOTIFY_SOCKET"] = notify.path
        try:
            with self.log.open("wb") as log:
                self.spawned_at = time.monotonic()
                self.proc = await asyncio.create_subprocess_exec(
                    *self.argv,
                    cwd=str(REPO),
                    env=env,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                )
            ready = asyncio.create_task(notify.wait_ready(within))
            exited = asyncio.create_task(self.proc.wait())
            await asyncio.wait({ready, exited}, return_when=asyncio.FIRST_COMPLETED)
            exited.cancel()
            if not ready.done():
                ready.cancel()
                raise BenchError(f"{self.name} exited before READY:\n{self.tail()}")
            try:
                self.ready_at = ready.result()
            except TimeoutError:
                raise BenchError(f"{self.name}: no READY=1 in {within} s:\n{self.tail()}") from None
        finally:
            notify.close()
        return self.ready_at - self.spawned_at

    def cpu_seconds(self) -> float:
        """utime + stime of the process (all its threads) so far."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS

    def memory_kib(self, key: str) -> int:
        """A line of /proc/PID/status in KiB: ``VmRSS`` (now) or ``VmHWM`` (peak)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
        raise BenchError(f"no {key} in /proc/{self.pid}/status")

    async def stop(self, *, within: float = 30.0) -> int:
        """SIGTERM and wait for the exit (SIGKILL after ``within``); the exit code."""
        if self.proc is None:
            return 0
        if self.proc.returncode is not None:
            return self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(within):
                return await self.proc.wait()
        except TimeoutError:
            self.proc.kill()
            return await self.proc.wait()

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


#: Not inherited: systemd's (we are the "systemd" here), and PYTHONDONTWRITEBYTECODE,
#: which would make every start compile the bridge's modules again (a deployment has
#: its bytecode cached).
_DROPPED_VARS = {
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "JOURNAL_STREAM",
    "PYTHONDONTWRITEBYTECODE",
}


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _DROPPED_VARS}
    env["PYTHONPATH"] = str(REPO)
    return env


def bridge_argv(config: Path) -> list[str]:
    """``agent-bridge run`` (as ``python -m bridge``: the same entry point, from REPO)."""
    return [sys.executable, "-m", "bridge", "run", "--config", str(config)]


def relay_argv(api_url: str, token: str, agent_url: str, agent_id: str, api_key: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "benchmarks.relay",
        "--api-url",
        api_url,
        "--token",
        token,
        "--agent-url",
        agent_url,
        "--agent-id",
        agent_id,
        "--api-key",
        api_key,
    ]


def slack_relay_argv(
    api_url: str, bot_token: str, app_token: str, agent_url: str, agent_id: str, api_key: str
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "benchmarks.relay_slack",
        "--api-url",
        api_url,
        "--bot-token",
        bot_token,
        "--app-token",
        app_token,
        "--agent-url",
        agent_url,
        "--agent-id",
        agent_id,
        "--api-key",
        api_key,
    ]


async def import_seconds(statement: str) -> float:
    """How long ``statement`` (imports) takes in a fresh interpreter, timed inside it."""
    code = f"import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        cwd=str(REPO),
        env=child_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise BenchError(f"{statement!r} failed: {err.decode(errors='replace')}")
    return float(out.decode().strip())
