"""``agent-bridge run``: every configured chat adapter in one event loop, as a
well-behaved systemd service.

One lifespan (an `AsyncExitStack`) opens, in order: the core (store migrated,
shared HTTP client, backends, dispatcher; `bridge.app.open_core`), each chat
adapter, then resumes what the store holds unfinished, then the optional
health server; it closes them in reverse. A failure while starting closes what
was opened and exits 1 with the reason in one line
(``cannot start: telegram: Unauthorized: check telegram.bot_token``).

systemd (``Type=notify``; see `bridge.notify`): ``READY=1`` once the store is
migrated and every adapter is connected, ``STATUS=`` along the way,
``WATCHDOG=1`` from the event loop, ``STOPPING=1`` on shutdown.

Shutdown, on SIGTERM or SIGINT: stop taking new messages (adapters still
commit what arrives, as pending), give agent calls in flight
``daemon.shutdown_grace`` seconds to finish and post their replies, leave the
rest in the store for the next start, close everything, exit 0. A second
signal exits at once (128 + its number): what was accepted is in the store,
pending or running, and is resumed at the next start.

Exit codes: 0 stopped by a signal; 1 could not start, or failed; 2 nothing to
run (no ``[telegram]`` or ``[slack]`` section).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import importlib
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bridge.config import Config
from bridge.errors import BridgeError
from bridge.health import HealthServer
from bridge.logs import setup_logging
from bridge.metrics import Metrics
from bridge.notify import Notifier

if TYPE_CHECKING:
    from bridge.app import Core
    from bridge.chat import ChatAdapter
    from bridge.dispatcher import Dispatcher

log = logging.getLogger("bridge.daemon")

#: Config section -> (module, class). Imported only when the section is
#: configured, so the core never imports a platform SDK it does not need.
ADAPTERS: dict[str, tuple[str, str]] = {
    "telegram": ("adapters.telegram", "TelegramAdapter"),
    "slack": ("adapters.slack", "SlackAdapter"),
}

#: How long to wait, after an adapter's start() returned, for it to report
#: CONNECTED before announcing READY anyway.
CONNECT_WAIT = 30.0

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_NOTHING_TO_RUN = 2


class Phase(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"


async def run(config: Config, *, config_path: Path | None) -> int:
    """Run the bridge until SIGTERM/SIGINT; return the process exit code."""
    platforms = [name for name in ADAPTERS if getattr(config, name) is not None]
    if not platforms:
        where = f" to {config_path}" if config_path is not None else ""
        print(
            "agent-bridge run: no chat platform is configured: add a [telegram] section "
            "(bot_token, allowed_users) or a [slack] section (bot_token, app_token)"
            f"{where}; config.example.toml shows both",
            file=sys.stderr,
        )
        return EXIT_NOTHING_TO_RUN
    setup_logging(config.daemon)
    notifier = Notifier.from_environ()
    try:
        return await Daemon(config, platforms, notifier).run()
    finally:
        notifier.close()


def load_adapter_class(platform: str) -> Callable[..., ChatAdapter]:
    """The adapter class for a config section, imported now (and only now)."""
    module_name, class_name = ADAPTERS[platform]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BridgeError(f"{platform}: cannot load the adapter: {exc}") from exc
    cls: Callable[..., ChatAdapter] = getattr(module, class_name)
    return cls


class Daemon:
    def __init__(self, config: Config, platforms: list[str], notifier: Notifier) -> None:
        self.config = config
        self.platforms = platforms
        self.notifier = notifier
        self.metrics = Metrics()
        self.phase = Phase.STARTING
        self.adapters: list[ChatAdapter] = []
        self.core: Core | None = None
        self.health: HealthServer | None = None
        self._stop = asyncio.Event()
        self._signals = 0
        #: The signal that cancelled the main task (startup aborted, or a
        #: second signal during shutdown), if one did.
        self._cancelled_by: int | None = None
        self._main: asyncio.Task[Any] | None = None
        self._status = "Starting"

    # --- the lifespan -------------------------------------------------------------

    async def run(self) -> int:
        self._main = asyncio.current_task()
        installed = self._install_signal_handlers()
        try:
            async with self.notifier.watchdog(self._status_line):
                return await self._serve()
        except asyncio.CancelledError:
            if self._cancelled_by is None or self._main is None:
                raise
            self._main.uncancel()
            if self.phase is Phase.STARTING:
                log.info("start interrupted by %s", signal.Signals(self._cancelled_by).name)
                return EXIT_OK
            log.warning(
                "stopped at once by a second signal; unfinished messages stay in the store "
                "and are resumed at the next start"
            )
            return 128 + self._cancelled_by
        finally:
            self._remove_signal_handlers(installed)

    async def _serve(self) -> int:
        try:
            async with contextlib.AsyncExitStack() as stack:
                await self._start(stack)
                self.phase = Phase.RUNNING
                await self._stop.wait()
                self.phase = Phase.STOPPING
                await self._drain()
                self._set_status("Stopping: closing the connections")
        except BridgeError as exc:
            # An expected failure (bad token, database unreachable...): the reason
            # in one line, no traceback.
            reason = " ".join(str(exc).split())
            if self.phase is Phase.STARTING:
                log.error("cannot start: %s", reason)
            else:
                log.error("stopped on an error: %s", reason)
            return EXIT_FAILED
        except Exception:
            # A bug: everything opened is closed by now; keep the traceback.
            what = "cannot start" if self.phase is Phase.STARTING else "stopped"
            log.critical("%s: unexpected error", what, exc_info=True)
            return EXIT_FAILED
        log.info("stopped")
        return EXIT_OK

    async def _start(self, stack: contextlib.AsyncExitStack) -> None:
        from bridge.app import open_core

        self._set_status("Starting: opening the store")
        core = await stack.enter_async_context(open_core(self.config, metrics=self.metrics))
        self.core = core
        for platform in self.platforms:
            adapter = load_adapter_class(platform)(core.dispatcher, getattr(self.config, platform))
            core.dispatcher.register(adapter)
            self._set_status(f"Starting: connecting to {platform}")
            await stack.enter_async_context(adapter)
            self.adapters.append(adapter)
        await self._wait_connected()

        self._set_status("Starting: resuming unfinished messages")
        resumed = await core.dispatcher.resume()
        if self.config.daemon.http_listen is not None:
            self.health = await stack.enter_async_context(
                HealthServer(
                    self.config.daemon.http_listen,
                    store=core.store,
                    dispatcher=core.dispatcher,
                    adapters=self.adapters,
                    metrics=self.metrics,
                    stuck_after=self.config.daemon.stuck_after,
                    instance_id=core.instance.id,
                )
            )
        names = ", ".join(self.platforms)
        log.info("ready: %s; resumed %d unfinished messages", names, resumed)
        self._status = f"Ready: {names}; {resumed} resumed"
        self.notifier.ready(self._status)

    async def _wait_connected(self) -> None:
        """Announce READY only once every adapter says CONNECTED (most do on
        returning from start(); one that connects in the background gets a moment)."""
        try:
            async with asyncio.timeout(CONNECT_WAIT):
                # An adapter's state is a plain attribute (no event to await).
                while not all(adapter.healthy for adapter in self.adapters):  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
        except TimeoutError:
            late = [a.platform for a in self.adapters if not a.healthy]
            log.warning("not connected yet after %g s: %s", CONNECT_WAIT, ", ".join(late))

    async def _drain(self) -> None:
        assert self.core is not None
        dispatcher: Dispatcher = self.core.dispatcher
        grace = self.config.daemon.shutdown_grace
        if self.health is not None:
            self.health.stopping = True
        self._status = (
            f"Stopping: letting {dispatcher.in_flight} agent calls finish (up to {grace:g} s)"
        )
        self.notifier.stopping(self._status)
        log.info(
            "stopping: %d agent calls in flight, %d queued; grace %g s",
            dispatcher.in_flight,
            dispatcher.queue_depth,
            grace,
        )
        await dispatcher.shutdown(grace)

    # --- status -------------------------------------------------------------------

    def _set_status(self, text: str) -> None:
        self._status = text
        self.notifier.status(text)
        log.debug("%s", text)

    def _status_line(self) -> str:
        if self.phase is not Phase.RUNNING or self.core is None:
            return self._status
        states = ", ".join(f"{a.platform} {a.state}" for a in self.adapters)
        dispatcher = self.core.dispatcher
        return (
            f"Running: {states}; {dispatcher.queue_depth} queued, {dispatcher.in_flight} in flight"
        )

    # --- signals ------------------------------------------------------------------

    def _install_signal_handlers(self) -> list[signal.Signals]:
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
                continue
            installed.append(sig)
        return installed

    def _remove_signal_handlers(self, installed: list[signal.Signals]) -> None:
        loop = asyncio.get_running_loop()
        for sig in installed:
            loop.remove_signal_handler(sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        self._signals += 1
        if self._signals == 1 and self.phase is not Phase.STARTING:
            log.info("received %s: shutting down", sig.name)
            self._stop.set()
            return
        # During startup there is nothing to drain; a second signal means "now".
        if self._signals == 1:
            log.info("received %s while starting: stopping", sig.name)
        else:
            log.warning("received %s again: stopping at once", sig.name)
        self._cancelled_by = int(sig)
        if self._main is not None:
            self._main.cancel()

    def request_stop(self) -> None:
        """Start a graceful shutdown, as SIGTERM does (for embedding and tests)."""
        self._on_signal(signal.SIGTERM)
