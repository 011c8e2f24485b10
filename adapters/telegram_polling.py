"""`Poller`: Telegram long polling, one update at a time, by one instance per bot token.

Nothing accepted is lost. PTB's `Updater` confirms an update to Telegram (the
next getUpdates offset) whether or not its handler has finished, so the bridge
polls itself: it fetches a batch, hands each update to the adapter (which
commits a message to the store before returning), and only then asks for the
next batch with an offset past it, which is what confirms the batch. A crash
before that point means Telegram delivers the update again and the store's
dedupe (``event_id``) drops the second copy. If the store fails, the offset
stays at that update.

One bad update never blocks the rest. `Bot.get_updates` parses the whole batch
at once: one update PTB cannot parse fails the call (the same batch comes back
forever) and PTB logs the whole batch, other users' text, at CRITICAL. So the
batch is fetched raw and each update is parsed on its own; one that cannot be
parsed is logged, counted and skipped, and the offset moves past it.

One poller per token. Telegram allows one getUpdates consumer per bot token: a
newer getUpdates terminates a pending older one with 409 Conflict. Instances
that share one database elect the poller with a lease (``telegram-poller:<bot
id>``) of the core's `dispatcher.instance`; the others stand by and take over
within the lease timeout when the poller dies. A poller that is not
coordinated (another database, another program) is caught by the first poll,
which `start()` makes short, and then fails the start with `CONFLICT_HINT`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from telegram.error import Conflict, RetryAfter, TelegramError
from telegram.request import HTTPXRequest

from bridge.chat import AdapterState
from bridge.errors import PollingConflict, StorageError
from bridge.logs import ThrottledLog

if TYPE_CHECKING:
    from telegram.ext import ExtBot

log = logging.getLogger("adapters.telegram")

PLATFORM = "telegram"
#: Seconds one getUpdates call waits on Telegram's side for an update.
POLL_TIMEOUT = 30
#: The first poll, inside start(): a competing poller answers it with 409 within
#: this long (its own next poll terminates ours), so start() can fail on it.
START_POLL_TIMEOUT = 2.0
#: Seconds between retries of a failing getUpdates, growing with each failure.
POLL_BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
#: Retry after a 409 this soon, below START_POLL_TIMEOUT: a second poller that
#: starts while we poll sees its first poll terminated and fails its start.
CONFLICT_RETRY = 1.0
#: getUpdates failing for longer than this is a `problem` for /healthz.
STUCK_AFTER = 60.0
UPDATE_TYPES = [
    "message",
    "edited_message",
    "channel_post",
    "edited_channel_post",
    "my_chat_member",
]
CONFLICT_HINT = (
    "another process is polling this bot token (409 Conflict): stop it, or run all "
    'instances on one PostgreSQL database (docs/scaling.md), or use mode = "webhook"'
)
#: Telegram's update ids are positive 32-bit-ish integers; anything else is junk.
_MAX_UPDATE_ID = 2**53


class Instance(Protocol):
    """What the poller needs of the core's `dispatcher.instance` (named leases)."""

    lease_timeout: float

    async def acquire(self, name: str) -> bool: ...
    def holds(self, name: str) -> bool: ...
    async def release(self, name: str) -> None: ...


class PollRequest(HTTPXRequest):
    """The getUpdates connection. `BaseRequest.parse_json_payload` is PTB's documented
    hook for decoding; the default logs an unreadable body (other users' messages)
    at ERROR. Here the body goes to DEBUG only."""

    @staticmethod
    def parse_json_payload(payload: bytes) -> Any:
        try:
            return json.loads(payload.decode("utf-8", "replace"))
        except ValueError:
            log.debug("unreadable getUpdates body: %.2000r", payload)
            raise TelegramError("Invalid server response") from None


def update_id_of(raw: object) -> int | None:
    """The update's ``update_id``, if it has a plausible one."""
    if not isinstance(raw, dict):
        return None
    value = raw.get("update_id")
    if type(value) is not int or not 0 <= value < _MAX_UPDATE_ID:
        return None
    return value


class Poller:
    """Polls getUpdates for one bot and hands every raw update to ``handle``, which
    raises only `StorageError` (then the update is not confirmed)."""

    def __init__(
        self,
        bot: ExtBot[Any],
        request: HTTPXRequest,
        handle: Callable[[object], Awaitable[None]],
        set_state: Callable[[AdapterState], None],
        reason: Callable[[Exception], str],
        *,
        instance: Instance | None,
        poll_timeout: float,
        start_poll_timeout: float = START_POLL_TIMEOUT,
    ) -> None:
        self._bot = bot
        self._request = request
        self._handle = handle
        self._set_state = set_state
        self._reason = reason
        self._instance = instance
        self._lease = f"telegram-poller:{bot.id}"
        self.poll_timeout = poll_timeout
        self.start_poll_timeout = start_poll_timeout
        self.stuck_after = STUCK_AFTER
        self.offset: int | None = None
        self._confirmed: int | None = None
        self._task: asyncio.Task[None] | None = None
        #: True while this instance is the poller (holds the lease, or needs none).
        self.polling = False
        self._failures = 0
        self._failing_since: float | None = None
        self._last_error = ""
        self._conflict = False
        self._conflict_log = ThrottledLog(log, "Telegram getUpdates failed", level=logging.ERROR)

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Take the poller's lease (or stand by) and begin. Raises `AdapterError`
        when another, uncoordinated process polls this token."""
        first: list[Any] | None = None
        if await self._acquire():
            first = await self._first_poll()
        else:
            log.info("another instance polls Telegram for this bot; this one stands by")
        self._task = asyncio.create_task(self._run(first), name="telegram-poll")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.polling:
            await self._confirm_offset()
            self.polling = False
            if self._instance is not None:
                try:
                    await self._instance.release(self._lease)
                except Exception as exc:  # it expires anyway
                    log.warning("could not release %s: %s", self._lease, exc)

    @property
    def problem(self) -> str | None:
        if not self.polling:
            return None
        if self._conflict:
            return f"polling conflict: {self._last_error}"
        since = self._failing_since
        if since is not None and time.monotonic() - since > self.stuck_after:
            seconds = time.monotonic() - since
            return f"polling stuck: getUpdates failing for {seconds:.0f} s ({self._last_error})"
        return None

    # --- election --------------------------------------------------------------------

    def _holds(self) -> bool:
        return self._instance is None or self._instance.holds(self._lease)

    async def _acquire(self) -> bool:
        if self._instance is None:
            self.polling = True
            return True
        try:
            held = await self._instance.acquire(self._lease)
        except Exception as exc:  # the database is away: try again later
            log.warning("could not take %s: %s", self._lease, exc)
            held = False
        self.polling = held
        return held

    async def _run(self, first: list[Any] | None) -> None:
        while True:
            if not self.polling:
                assert self._instance is not None
                retry = max(self._instance.lease_timeout / 3, 0.05)
                while True:  # standby
                    if await self._acquire():
                        break
                    await asyncio.sleep(retry)
                log.info("this instance now polls Telegram (took %s)", self._lease)
            if self._instance is None:
                await self._poll(first)
                return
            poll = asyncio.create_task(self._poll(first), name="telegram-poll-loop")
            first = None
            check = max(min(1.0, self._instance.lease_timeout / 10), 0.01)
            try:
                while not poll.done() and self._holds():
                    await asyncio.wait({poll}, timeout=check)
            finally:
                poll.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await poll
            # Our heartbeat went stale: another instance may be polling already.
            log.warning("lost %s; standing by", self._lease)
            self.polling = False
            self._failing_since = None
            self._conflict = False

    # --- polling ---------------------------------------------------------------------

    async def fetch(self, wait: float, limit: int | None = None) -> list[Any]:
        """getUpdates, unparsed. `Bot._post` is the call `Bot.get_updates` makes
        before it parses the batch (defaults, the rate limiter, PTB's error mapping:
        Conflict, RetryAfter...); the parsing is what we must do per update."""
        data: dict[str, Any] = {
            "offset": self.offset,
            "timeout": wait,
            "limit": limit,
            "allowed_updates": UPDATE_TYPES,
        }
        read_timeout = (self._request.read_timeout or 0) + wait
        result = await self._bot._post("getUpdates", data, read_timeout=read_timeout)
        if not isinstance(result, list):
            raise TelegramError(f"getUpdates returned a {type(result).__name__}, not a list")
        return result

    async def _first_poll(self) -> list[Any]:
        try:
            batch = await self.fetch(self.start_poll_timeout)
        except Conflict as exc:
            self.polling = False
            raise PollingConflict(PLATFORM, f"{CONFLICT_HINT} ({self._reason(exc)})") from None
        except TelegramError as exc:
            self._failed(exc)  # the loop goes on retrying
            return []
        self._succeeded()
        return batch

    async def _poll(self, first: list[Any] | None) -> None:
        batch = first
        while True:
            if batch is None:
                try:
                    batch = await self.fetch(self.poll_timeout)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    await asyncio.sleep(self._failed(exc))
                    continue
                self._succeeded()
            stored = await self._handle_batch(batch)
            batch = None
            if not stored:
                await asyncio.sleep(POLL_BACKOFF[1])

    async def _handle_batch(self, batch: list[Any]) -> bool:
        """Handle each update; False when the store failed (the offset stays there)."""
        without_id = 0
        for raw in batch:
            update_id = update_id_of(raw)
            try:
                await self._handle(raw)
            except StorageError as exc:
                # Leave the offset here: Telegram delivers this update again.
                log.error("could not store Telegram update %s: %s", update_id, exc)
                return False
            except Exception as exc:  # handle() skips bad updates itself; belt and braces
                log.error("Telegram update %s failed (%s); skipped", update_id, type(exc).__name__)
                log.debug("Telegram update %s failure", update_id, exc_info=exc)
            if update_id is None:
                without_id += 1
            elif self.offset is None or update_id >= self.offset:
                self.offset = update_id + 1
        if without_id:
            log.warning("%d Telegram update(s) without a usable update_id", without_id)
        return True

    def _succeeded(self) -> None:
        self._confirmed = self.offset
        if self._failures:
            log.info("Telegram reachable again after %d failed attempt(s)", self._failures)
        self._failures = 0
        self._failing_since = None
        self._conflict = False
        self._set_state(AdapterState.CONNECTED)

    def _failed(self, exc: Exception) -> float:
        """Record a failed getUpdates; return the seconds to wait before the next."""
        self._failures += 1
        if self._failing_since is None:
            self._failing_since = time.monotonic()
        reason = self._reason(exc)
        self._last_error = reason
        delay = POLL_BACKOFF[min(self._failures, len(POLL_BACKOFF)) - 1]
        if isinstance(exc, RetryAfter):
            retry = exc.retry_after
            delay = max(delay, retry if isinstance(retry, int) else retry.total_seconds())
        self._set_state(AdapterState.DISCONNECTED)
        if isinstance(exc, Conflict):
            self._conflict = True
            self._conflict_log.note(f"{reason}: {CONFLICT_HINT}")
            return CONFLICT_RETRY
        self._conflict = False
        failures = self._failures
        if failures in (1, 5) or failures % 30 == 0:
            log.warning(
                "Telegram getUpdates failed (%d in a row): %s; retrying in %.0fs",
                failures,
                reason,
                delay,
            )
        else:
            log.debug("Telegram getUpdates failed again: %s", reason)
        return delay

    async def _confirm_offset(self) -> None:
        """Tell Telegram which updates are done, so a restart does not fetch them again
        (harmless if it did: the store drops duplicates)."""
        if self.offset is None or self.offset == self._confirmed:
            return
        try:
            async with asyncio.timeout(3):
                await self.fetch(0, limit=1)
            self._confirmed = self.offset
        except Exception as exc:
            log.debug("could not confirm the last updates: %s", self._reason(exc))
