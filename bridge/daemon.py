"""``agent-bridge run``: every configured chat adapter in one event loop, as a
well-behaved systemd service.

One lifespan (an `AsyncExitStack`) opens, in order: the core (store migrated,
shared HTTP client, backends, dispatcher; `bridge.app.open_core`), the chat
adapters (side by side), then resumes what the store holds unfinished, then the
optional health server; it closes them in reverse.

A start rides out what may pass. The core, and each adapter on its own, is
tried again after 1, 2, 5, 10, then every 30 s (`START_BACKOFF`) while it fails
for a reason that may pass: the network, a platform's 5xx or 429, the database
away. ``STATUS=`` says what it waits for (``Starting: telegram unavailable
(httpx.ConnectError: ...), retrying in 10 s``); SIGTERM during the wait exits
0. What no retry can fix ends the start at once, in one line, with its own exit
code: a token the platform refused (`CredentialsRejected`), a config the store
cannot use (``storage.url: ...``).

systemd (``Type=notify``; see `bridge.notify`): ``READY=1`` once the store is
migrated and every adapter is connected, ``STATUS=`` along the way,
``EXTEND_TIMEOUT_USEC=`` before each wait to retry, ``WATCHDOG=1`` from the
event loop, ``STOPPING=1`` on shutdown.

SIGHUP re-reads the config file without dropping a connection: the adapters'
allowlists (`ChatAdapter.reloadable`) and ``[messages]`` take effect at once; a
change to anything else is logged as waiting for a restart; a config with
errors is logged and ignored (the running one stays). systemd hears
``RELOADING=1``, then ``READY=1``.

Shutdown, on SIGTERM or SIGINT: stop taking new messages (adapters still
commit what arrives, as pending), give agent calls in flight
``daemon.shutdown_grace`` seconds to finish and post their replies, leave the
rest in the store for the next start, close everything, exit 0. A second
signal exits at once (128 + its number): what was accepted is in the store,
pending or running, and is resumed at the next start.

Exit codes (the unit's ``RestartPreventExitStatus=2 3`` stops the restarts of
what a restart cannot fix):

    0  stopped by a signal
    1  failed (a bug, or an error after the start); systemd restarts it
    2  the config is wrong or runs nothing (also `bridge.cli`'s code for a
       config error); fix the config
    3  a platform refused a credential (``cannot start: telegram:
       Unauthorized: check telegram.bot_token``); fix the token
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import importlib
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

from bridge import __version__
from bridge.alerts import Alerter
from bridge.backends.http import HttpAgentBackend
from bridge.checks import config_warnings
from bridge.config import Config, load_config
from bridge.errors import (
    AdapterError,
    BridgeError,
    ConfigError,
    CredentialsRejected,
    MissingDriverError,
    PollingConflict,
    StorageError,
)
from bridge.health import HealthServer
from bridge.logs import setup_logging
from bridge.metrics import Metrics
from bridge.notify import Notifier

if TYPE_CHECKING:
    from bridge.app import Core
    from bridge.chat import ChatAdapter
    from bridge.dispatcher import Dispatcher

log = logging.getLogger("bridge.daemon")

T = TypeVar("T")

#: Config section -> (module, class). Imported only when the section is
#: configured, so the core never imports a platform SDK it does not need.
ADAPTERS: dict[str, tuple[str, str]] = {
    "telegram": ("adapters.telegram", "TelegramAdapter"),
    "slack": ("adapters.slack", "SlackAdapter"),
}

#: How long to wait, after an adapter's start() returned, for it to report
#: CONNECTED before announcing READY anyway.
CONNECT_WAIT = 30.0

#: Seconds between two attempts to start the core or one adapter, after a
#: failure that may pass; the last one repeats for as long as it fails.
START_BACKOFF: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0, 30.0)
#: For tests only (not a config key): a comma-separated START_BACKOFF, e.g.
#: "0.2,0.5", so that tests/daemon/test_start_retry.py needs no 30 s waits.
START_BACKOFF_ENV = "AGENT_BRIDGE_TEST_START_BACKOFF"
#: How long one attempt may take, beyond the wait before it, in the
#: EXTEND_TIMEOUT_USEC sent to systemd (Slack's auth.test alone may retry a 429
#: for a minute).
ATTEMPT_ALLOWANCE = 120.0

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_NOTHING_TO_RUN = EXIT_CONFIG
EXIT_REJECTED = 3

#: The config sections SIGHUP applies (the adapters' own keys are theirs to say).
RELOADABLE_SECTIONS = frozenset({"messages"})


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
    for warning in config_warnings(config):  # what `check` warns about, in the journal too
        log.warning("config: %s", warning)
    notifier = Notifier.from_environ()
    daemon = Daemon(
        config,
        platforms,
        notifier,
        config_path=config_path,
        start_backoff=_backoff_from(os.environ),
    )
    try:
        return await daemon.run()
    finally:
        notifier.close()


def _backoff_from(environ: Mapping[str, str]) -> tuple[float, ...]:
    raw = environ.get(START_BACKOFF_ENV, "")
    try:
        backoff = tuple(float(part) for part in raw.split(",") if part.strip())
    except ValueError:
        backoff = ()
    return backoff if backoff and all(d >= 0 for d in backoff) else START_BACKOFF


def exit_code_for(exc: BridgeError) -> int | None:
    """The exit code of a start failure that no retry can fix; None when it may pass."""
    if isinstance(exc, CredentialsRejected | PollingConflict):
        return EXIT_REJECTED
    if isinstance(exc, ConfigError | MissingDriverError):
        return EXIT_CONFIG
    # The store names the key when the URL itself is unusable (a folder that does
    # not exist, an unknown database); anything else (refused, timed out,
    # locked) may pass.
    if isinstance(exc, StorageError) and str(exc).startswith("storage.url:"):
        return EXIT_CONFIG
    return None


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
    def __init__(
        self,
        config: Config,
        platforms: list[str],
        notifier: Notifier,
        *,
        config_path: Path | None = None,
        start_backoff: Sequence[float] = START_BACKOFF,
    ) -> None:
        #: The config running now: as read at start, plus what SIGHUP applied.
        self.config = config
        self.config_path = config_path
        self.platforms = platforms
        self.notifier = notifier
        self.start_backoff = tuple(start_backoff) or START_BACKOFF
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
        #: What each part being started is doing, for the STATUS line (in order).
        self._starting: dict[str, str] = {}
        self._reloads: set[asyncio.Task[None]] = set()
        self._reload_lock = asyncio.Lock()
        self._reload_pending = False

    # --- the lifespan -------------------------------------------------------------

    async def run(self) -> int:
        self._main = asyncio.current_task()
        log.info("agent-bridge %s starting: %s", __version__, ", ".join(self.platforms))
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
                if self._reload_pending:
                    self._reload_pending = False
                    self.request_reload()
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
                return exit_code_for(exc) or EXIT_FAILED
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

        self._starting = {"store": "opening the store"}
        self._show_starting()
        core = await self._retrying(
            "store",
            "database",
            lambda: stack.enter_async_context(open_core(self.config, metrics=self.metrics)),
        )
        self.core = core
        for platform in self.platforms:
            adapter = load_adapter_class(platform)(core.dispatcher, getattr(self.config, platform))
            core.dispatcher.register(adapter)
            self.adapters.append(adapter)
        self._starting = {a.platform: f"connecting to {a.platform}" for a in self.adapters}
        self._show_starting()
        await self._start_adapters(stack)
        await self._wait_connected()

        # Built without http_listen too: the alerts read its report (it then never listens).
        health = HealthServer(
            self.config.daemon.http_listen or "127.0.0.1:0",
            store=core.store,
            dispatcher=core.dispatcher,
            adapters=self.adapters,
            metrics=self.metrics,
            stuck_after=self.config.daemon.stuck_after,
            instance_id=core.instance.id,
        )
        if self.config.alerts is not None:
            # Before resuming, so that the resumed turns are seen too.
            core.dispatcher.alerts = await stack.enter_async_context(
                Alerter(
                    self.config.alerts,
                    core.store,
                    {a.platform: a for a in self.adapters},
                    self.metrics,
                    agents=self.config.agents,
                    probe=health.health,
                )
            )
        self._set_status("Starting: resuming unfinished messages")
        resumed = await core.dispatcher.resume()
        if self.config.daemon.http_listen is not None:
            self.health = await stack.enter_async_context(health)
        names = ", ".join(self.platforms)
        log.info("ready: %s; resumed %d unfinished messages", names, resumed)
        self._status = f"Ready: {names}; {resumed} resumed"
        self.notifier.ready(self._status)

    async def _start_adapters(self, stack: contextlib.AsyncExitStack) -> None:
        """Start every adapter side by side, each retried on its own: one platform
        down does not hold back the others, which take and answer messages
        meanwhile (the dispatcher claims work from the first submit). The first
        failure no retry can fix
        stops the others and ends the start."""

        async def start(adapter: ChatAdapter) -> None:
            # The adapter's __aenter__ stops it again when start() fails, so each
            # attempt begins from STOPPED; only a started one is on the stack.
            await self._retrying(
                adapter.platform, adapter.platform, lambda: stack.enter_async_context(adapter)
            )
            self._starting[adapter.platform] = f"{adapter.platform} connected"
            self._show_starting()

        try:
            async with asyncio.TaskGroup() as group:
                for adapter in self.adapters:
                    group.create_task(start(adapter), name=f"start-{adapter.platform}")
        except BaseExceptionGroup as failed:
            raise _first_error(failed) from None

    async def _retrying(self, part: str, what: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """``attempt()`` until it succeeds, waiting `start_backoff` between tries
        while it fails for a reason that may pass; a reason that will not (see
        `exit_code_for`) and anything but a `BridgeError` propagate at once."""
        failures = 0
        while True:
            try:
                result = await attempt()
            except BridgeError as exc:
                if exit_code_for(exc) is not None:
                    raise
                delay = self.start_backoff[min(failures, len(self.start_backoff) - 1)]
                failures += 1
                reason = " ".join(str(exc).split())
                if isinstance(exc, AdapterError):
                    reason = " ".join(exc.reason.split())
                self._starting[part] = f"{what} unavailable ({reason}), retrying in {delay:g} s"
                self._show_starting()
                # The first few, then every 10th (every 5 min at 30 s).
                if failures <= 5 or failures % 10 == 0:
                    log.warning(
                        "cannot start %s yet (attempt %d): %s; retrying in %g s",
                        what,
                        failures,
                        reason,
                        delay,
                    )
                self.notifier.extend_timeout(delay + ATTEMPT_ALLOWANCE)
                await asyncio.sleep(delay)
                continue
            if failures:
                log.info("%s started after %d failed attempt(s)", what, failures)
            return result

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

    def _show_starting(self) -> None:
        self._set_status("Starting: " + "; ".join(self._starting.values()))

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
        handlers: list[tuple[signal.Signals, Callable[..., None]]] = [
            (signal.SIGTERM, self._on_signal),
            (signal.SIGINT, self._on_signal),
            (signal.SIGHUP, self._on_reload_signal),
        ]
        for sig, handler in handlers:
            try:
                loop.add_signal_handler(sig, handler, sig)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
                continue
            installed.append(sig)
        return installed

    def _remove_signal_handlers(self, installed: list[signal.Signals]) -> None:
        loop = asyncio.get_running_loop()
        for sig in installed:
            loop.remove_signal_handler(sig)
        for task in self._reloads:
            task.cancel()

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

    # --- reload (SIGHUP) ------------------------------------------------------------

    def _on_reload_signal(self, sig: signal.Signals) -> None:
        if self.phase is Phase.STOPPING:
            log.info("received %s while stopping: not reloading", sig.name)
            return
        if self.phase is Phase.STARTING:
            # The adapters may not exist yet: reload once the start is done.
            log.info("received %s while starting: reloading once ready", sig.name)
            self._reload_pending = True
            return
        log.info("received %s: re-reading the config", sig.name)
        self.request_reload()

    def request_reload(self) -> None:
        """Re-read the config and apply what can change while running, as SIGHUP does."""
        task = asyncio.create_task(self.reload(), name="reload-config")
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def reload(self) -> None:
        """Re-read the config file; apply its allowlists and ``[messages]`` if it is
        valid, else log its problems and keep the running config."""
        async with self._reload_lock:
            self.notifier.reloading("Reloading: re-reading the config")
            try:
                await self._reload()
            finally:
                self.notifier.ready(self._status_line())

    async def _reload(self) -> bool:
        if self.config_path is None:
            log.warning("reload: the config was not read from a file; nothing to re-read")
            return False
        try:
            new = await asyncio.to_thread(load_config, self.config_path)
        except ConfigError as exc:
            for line in exc.problems:
                log.error("reload: config: %s", line)
            log.error(
                "reload refused: %s has %d problem(s); still running with the config as it was",
                self.config_path,
                len(exc.problems),
            )
            return False
        applied: list[str] = []
        waiting: list[str] = []
        updates: dict[str, Any] = {}
        if new.messages != self.config.messages:
            applied.append("messages")
            updates["messages"] = new.messages
        for adapter in self.adapters:
            platform = adapter.platform
            old_section: BaseModel = getattr(self.config, platform)
            new_section: BaseModel | None = getattr(new, platform)
            if new_section is None:
                waiting.append(f"[{platform}] (removed)")
                continue
            keys = adapter.reloadable
            changed = _changed_keys(old_section, new_section)
            applied += [f"{platform}.{key}" for key in changed if key in keys]
            waiting += [f"{platform}.{key}" for key in changed if key not in keys]
            if any(key in keys for key in changed):
                section = old_section.model_copy(
                    update={key: getattr(new_section, key) for key in keys}
                )
                adapter.reload(section)
                updates[platform] = section
        for name in type(new).model_fields:
            if name in RELOADABLE_SECTIONS or name in updates or name in self.platforms:
                continue
            if getattr(new, name) != getattr(self.config, name):
                waiting.append(f"[{name}]" if name not in ADAPTERS else f"[{name}] (added)")
        if "messages" in updates and self.core is not None:
            self.core.dispatcher.messages = new.messages
            for backend in self.core.backends.values():
                if isinstance(backend, HttpAgentBackend):  # agent errors' texts
                    backend.messages = new.messages
        self.config = self.config.model_copy(update=updates)
        if applied:
            log.info("config reloaded: %s changed", ", ".join(applied))
        else:
            log.info("config reloaded: nothing to change")
        if waiting:
            log.warning(
                "reload: a restart is needed for the change to %s to take effect",
                ", ".join(waiting),
            )
        return True


def _changed_keys(old: BaseModel, new: BaseModel) -> list[str]:
    """The fields of two config sections that differ (secrets compare by value)."""
    return [key for key in type(old).model_fields if getattr(old, key) != getattr(new, key)]


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error that ended a group of starts: a `BridgeError` if one is there."""
    leaves: list[BaseException] = []

    def collect(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                collect(inner)
        else:
            leaves.append(exc)

    collect(group)
    return next((e for e in leaves if isinstance(e, BridgeError)), leaves[0])
