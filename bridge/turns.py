"""One turn of a conversation: a message to the agent, its answer stored, the
reply posted. The `Dispatcher`'s workers (`bridge.dispatcher`) call `_handle`
for each message they take from their claimed conversation, in inbox order.

Here every error becomes a reply (an `AgentError` its ``user_message``,
anything else the ``internal_error`` text, the traceback in the log only), the
answer and the agent's turn are stored in one transaction before the reply is
posted, a store error after the agent answered is retried with the answer
kept, and a refused reply is parked with backoff (`Queue.park`) for any
instance to post later.

A streaming agent (`AgentBackend.streams`) is read event by event: where the
adapter offers a live view (`ChatAdapter.live`), the text so far is shown at
most every ``LIVE_INTERVAL`` seconds by a small pump task (`bridge.live_view`; the stream is never
held up by the platform), and the last text is shown before the answer is
stored. The stored reply is then posted with ``send_reply`` exactly as an
answer that was not streamed (the adapter may finish the live view in place),
and the view is closed. An `AgentError` after some text keeps that text and
adds the error's friendly text.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypeVar

from bridge.budgets import StartedTurn
from bridge.chat import LIVE_REF
from bridge.config import DispatcherConfig, MessagesConfig
from bridge.errors import (
    AdapterError,
    AgentError,
    AgentSessionExpired,
    ReplyUndeliverable,
    StorageError,
)
from bridge.files import FileReader, Prepared
from bridge.instance import Instance
from bridge.live_view import Shown, close_live, read_stream
from bridge.metrics import Metrics
from bridge.model import (
    AgentReply,
    Conversation,
    Finished,
    InboxMessage,
    MessageStatus,
    Reply,
    TurnContext,
    Usage,
    agent_input,
)
from bridge.turn_budgets import TurnBudgets

if TYPE_CHECKING:
    from bridge.alerts import Alerter
    from bridge.backends.base import AgentBackend
    from bridge.chat import ChatAdapter
    from bridge.stream import LiveAnswer
    from storage.store import Store

log = logging.getLogger("bridge.dispatcher")

#: A message whose agent call was interrupted this often (crash, kill) is
#: answered with the internal-error text instead of being tried again forever.
MAX_ATTEMPTS = 3

T = TypeVar("T")

#: The turn to record with an answer: (epoch, session id, usage).
Turn = tuple[int, str | None, Usage]


class Next(enum.Enum):
    """What a worker does after one message."""

    CONTINUE = "continue"  # on to the conversation's next message
    RELEASED = "released"  # nothing left: the conversation was given back
    STOP = "stop"  # lease lost, reply parked, or shutting down: give the conversation up


class _Cancelled(Exception):
    """The message was cancelled (`Dispatcher.cancel`) during its agent call."""


class Turns(TurnBudgets):
    """The part of the `Dispatcher` that answers one message (a base class of it:
    the state below is the dispatcher's)."""

    messages: MessagesConfig
    metrics: Metrics
    instance: Instance
    store_problem: str | None
    _store: Store
    _backends: dict[str, AgentBackend]
    _config: DispatcherConfig
    _delivery_backoff: tuple[float, ...]
    _store_retry: tuple[float, ...]
    _calls: dict[int, asyncio.Task[tuple[Reply, Turn | None]]]
    _in_flight: int
    _wake: asyncio.Event
    _timers: set[asyncio.TimerHandle]
    _no_timers: asyncio.Event
    #: Told how each turn ended, for the admin alerts (set by the daemon with [alerts]).
    alerts: Alerter | None = None
    _files: FileReader

    def note_refused(self, platform: str) -> None:
        self.metrics.refused.labels(platform).inc()

    async def note_live(self, message: InboxMessage, ref: str) -> None:
        """An adapter began showing ``message``'s answer live as ``ref``, the
        platform's id of it (Slack: the streamed message's ts). Stored in the
        message's ``meta[LIVE_REF]``, so that the delivery after a crash finishes
        or replaces that message instead of posting a copy beside it. Best effort:
        if the store fails, only this process knows."""
        try:
            await self._store.note_live(message, self.instance.id, ref)
        except StorageError as exc:
            self._store_failed(exc)
            log.warning("message %d: could not note its %s: %s", message.id, LIVE_REF, exc)

    def _wake_later(self, delay: float) -> None:
        """Look for claimable work again in ``delay`` seconds (a parked reply's turn)."""
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._timers.discard(handle)
            self._wake.set()
            if not self._timers:
                self._no_timers.set()

        handle = loop.call_later(delay, fire)
        self._timers.add(handle)
        self._no_timers.clear()

    async def _handle(
        self, adapter: ChatAdapter, message: InboxMessage, started: StartedTurn | None = None
    ) -> Next:
        """Answer ``message``; ``started``: its turn was begun as it was accepted."""
        owner = self.instance.id
        if message.status is MessageStatus.ANSWERED and message.reply_text is not None:
            # Answered earlier (perhaps by a process that died), not yet delivered.
            if not await self._store.begin_delivery(message, owner):
                return Next.STOP
            stored = Reply(message.reply_text, error_kind=message.error_kind)
            return await self._deliver(adapter, message, stored)
        if not self.instance.fresh:
            # Our heartbeat is late: another instance may be taking over. Start nothing.
            return Next.STOP
        live = adapter.live(message)
        try:
            try:
                reply, turn = await self._answer(adapter, message, live, started)
            except _Cancelled:
                return Next.CONTINUE  # finished by `cancel`, which stored it as failed
            if reply is None:
                return Next.STOP
            if self.alerts is not None:
                self.alerts.observe(message.agent, reply.error_kind)  # queued: no wait
            if not await self._save_answer(message, reply, turn):
                return Next.STOP
            return await self._deliver(
                adapter, dataclasses.replace(message, status=MessageStatus.ANSWERED), reply
            )
        finally:
            if live is not None:
                await close_live(live, message)

    async def _answer(
        self,
        adapter: ChatAdapter,
        message: InboxMessage,
        live: LiveAnswer | None = None,
        started: StartedTurn | None = None,
    ) -> tuple[Reply | None, tuple[int, str | None, Usage] | None]:
        """The reply and the turn to record; (None, None) if the lease is gone."""
        if started is not None:
            # Marked running and charged as it was accepted (`Dispatcher.submit`).
            return await self._started(adapter, message, live, started)
        if message.attempts >= MAX_ATTEMPTS:
            log.error(
                "message %d was interrupted %d times; answering with an error",
                message.id,
                message.attempts,
            )
            return Reply(self.messages.render("internal_error"), error_kind="interrupted"), None
        if len(message.text) > self._config.max_input_chars:
            self.note_refused(message.key.platform)
            text = self.messages.render(
                "input_too_long",
                length=len(message.text),
                max_chars=self._config.max_input_chars,
            )
            return Reply(text, error_kind="input_too_long"), None
        # Marked running and charged to its budgets in one transaction, before the call.
        begun = await self._store.start_charged_turn(
            message, self.instance.id, self._budget(message)
        )
        if begun is None:
            return None, None
        conversation, exceeded = begun
        return await self._started(adapter, message, live, StartedTurn(conversation, exceeded))

    async def _started(
        self,
        adapter: ChatAdapter,
        message: InboxMessage,
        live: LiveAnswer | None,
        started: StartedTurn,
    ) -> tuple[Reply | None, tuple[int, str | None, Usage] | None]:
        """The turn, once begun: refused over a budget, or the agent's answer."""
        conversation = started.conversation
        if started.exceeded is not None:
            return self._over_budget(message, conversation, started.exceeded), None
        self._in_flight += 1
        self.metrics.in_flight.set(self._in_flight)
        call = asyncio.create_task(
            self._ask_agent(message, conversation, live, adapter), name=f"message-{message.id}"
        )
        self._calls[message.id] = call
        try:
            # Most answers come within a second; only a slower one gets the indicator.
            done, _ = await asyncio.wait({call}, timeout=self._config.working_after)
            if done:
                return call.result()
            async with adapter.working(message):
                return await call
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the worker itself is cancelled (shutdown)
            raise _Cancelled from None
        finally:
            self._calls.pop(message.id, None)
            if not call.done():
                call.cancel()
            self._in_flight -= 1
            self.metrics.in_flight.set(self._in_flight)

    async def _ask_agent(
        self,
        message: InboxMessage,
        conversation: Conversation,
        live: LiveAnswer | None = None,
        adapter: ChatAdapter | None = None,
    ) -> tuple[Reply, tuple[int, str | None, Usage] | None]:
        name = self._agent_of(message, conversation)
        backend = self._backends.get(name)
        if backend is None:
            log.error(
                "message %d: agent %r is not configured (conversation %s)",
                message.id,
                conversation.agent,
                conversation.key,
            )
            return Reply(self.messages.render("internal_error"), error_kind="no_agent"), None
        # Files are fetched and read here, inside the claimed turn: a crash repeats
        # this, never the user's message (`bridge.files`).
        prepared = None
        if adapter is not None:
            prepared = await self._files.prepare(
                adapter, message, takes_images=backend.takes_images
            )
        before = prepared.before_answer() if prepared is not None else ""
        if prepared is not None and not prepared.has_input(message.text):
            text = before or self.messages.render("internal_error")
            return Reply(text, error_kind="attachment"), None
        session = conversation.session_id or backend.new_session_id()
        note = ""
        shown = Shown()
        try:
            try:
                result = await self._call(backend, message, session, live, shown, prepared)
            except AgentSessionExpired as exc:
                log.info("message %d: %s; starting a fresh session", message.id, exc)
                session = backend.new_session_id()
                note = self.messages.render("session_restarted")
                result = await self._call(backend, message, session, live, shown, prepared)
        except AgentError as exc:
            log.warning("message %d in %s: %s", message.id, message.key, exc)
            said = exc.user_message
            if shown.text:
                # The user saw the start of an answer: keep it, say why it stops.
                said = f"{shown.text}\n\n{said}"
            if before:
                said = f"{before}\n\n{said}"
            return Reply(said, error_kind=exc.kind), None
        except Exception:
            log.exception("message %d: agent %r failed unexpectedly", message.id, name)
            return Reply(self.messages.render("internal_error"), error_kind="internal"), None
        text = result.text
        limit = self._config.max_reply_chars
        if len(text) > limit:
            log.warning(
                "message %d: the agent's reply of %d characters is cut", message.id, len(text)
            )
            cut = self.messages.render("reply_truncated", max_chars=limit)
            text = f"{text[:limit].rstrip()}\n\n{cut}"
        if note:
            text = f"{note}\n\n{text}"
        if before:
            text = f"{before}\n\n{text}"
        turn = (conversation.epoch, result.session_id or session, result.usage)
        return Reply(text), turn

    async def _call(
        self,
        backend: AgentBackend,
        message: InboxMessage,
        session: str | None,
        live: LiveAnswer | None = None,
        shown: Shown | None = None,
        prepared: Prepared | None = None,
    ) -> AgentReply:
        started = time.monotonic()
        try:
            # Earlier messages an adapter gave (``meta["context"]``) go before the text;
            # max_input_chars has applied to what the user typed only. Documents and
            # transcripts (`bridge.files`) have their own cap, files.max_chars.
            context = message.meta.get("context")
            text = (
                agent_input(message.text, context)
                if prepared is None
                else prepared.agent_text(message.text, context)
            )
            who = TurnContext(
                user_id=message.sender, user_name=str(message.meta.get("username") or "")
            )
            if backend.streams:
                # Closed on the way out, also when reading stops early (cancelled, an
                # error): the agent's HTTP response is released at once.
                async with contextlib.aclosing(
                    backend.stream(text, session, context=who)
                ) as events:
                    result = await read_stream(events, live, shown or Shown())
            else:
                result = await backend.chat(text, session, context=who)
        except AgentError as exc:
            self.metrics.agent_errors.labels(backend.name, exc.kind).inc()
            raise
        finally:
            self.metrics.agent_latency.labels(backend.name).observe(time.monotonic() - started)
        self.metrics.tokens.labels(backend.name, "input").inc(result.usage.input_tokens)
        self.metrics.tokens.labels(backend.name, "output").inc(result.usage.output_tokens)
        log.debug(
            "message %d: agent %s answered in %.2fs (session %s)",
            message.id,
            backend.name,
            time.monotonic() - started,
            result.session_id or session,
        )
        return result

    async def _save_answer(
        self, message: InboxMessage, reply: Reply, turn: tuple[int, str | None, Usage] | None
    ) -> bool:
        """Store the reply and the turn; retry a store failure until it
        succeeds (the answer is kept meanwhile); False if the lease is gone."""
        saved = await self._until_stored(
            message,
            "store the answer",
            lambda: self._store.save_answer(
                message, self.instance.id, reply.text, error_kind=reply.error_kind, turn=turn
            ),
        )
        if not saved:
            log.warning(
                "message %d: this instance lost the conversation while the agent answered "
                "(its heartbeat was late); its successor answers it",
                message.id,
            )
        return saved

    async def _deliver(self, adapter: ChatAdapter, message: InboxMessage, reply: Reply) -> Next:
        owner = self.instance.id
        platform = message.key.platform
        undeliverable: str | None = None
        try:
            await adapter.send_reply(message, reply)
        except ReplyUndeliverable as exc:
            log.warning("message %d: the reply can never be posted: %s", message.id, exc.reason)
            undeliverable = "undeliverable"
        except Exception as exc:
            attempts = message.delivery_attempts + 1
            delay = self._delivery_backoff[min(attempts, len(self._delivery_backoff)) - 1]
            log.warning(
                "message %d: could not post the reply (attempt %d), trying again in %gs: %s",
                message.id,
                attempts,
                delay,
                exc,
                exc_info=not isinstance(exc, AdapterError),
            )
            await self._store.park(message, owner, retry_in=delay)
            self._wake_later(delay)
            return Next.STOP
        # Posted: from here on it is never posted again by this process, whatever
        # the store does; a failing write is retried until it lands.
        finished = await self._until_stored(
            message,
            "record the post",
            lambda: self._store.finish_and_release(message, owner, undeliverable=undeliverable),
        )
        if reply.error_kind is None and undeliverable is None:
            self.metrics.answered.labels(platform).inc()
        else:
            self.metrics.failed.labels(platform).inc()
        # The one INFO line of a message's life (the steps before it are at DEBUG).
        log.info(
            "message %d in %s from %s %s in %s",
            message.id,
            message.key,
            message.sender,
            "answered" if reply.error_kind is None else f"answered ({reply.error_kind})",
            _since(message.created_at),
        )
        if finished is Finished.KEPT:
            return Next.CONTINUE
        if finished is Finished.RELEASED_WITH_WORK:
            self._wake.set()
        return Next.RELEASED

    async def _until_stored(
        self, message: InboxMessage, what: str, write: Callable[[], Awaitable[T]]
    ) -> T:
        """Run a store write that must not be lost (the answer, the record of a
        post) until it lands: a store error is retried with backoff, never dropped."""
        attempt = 0
        while True:
            try:
                result = await write()
            except StorageError as exc:
                self._store_failed(exc)
                delay = self._store_retry[min(attempt, len(self._store_retry) - 1)]
                attempt += 1
                log.warning(
                    "message %d: cannot %s yet (retrying in %gs): %s", message.id, what, delay, exc
                )
                await asyncio.sleep(delay)
                continue
            self.store_problem = None
            return result

    def _store_failed(self, exc: StorageError) -> None:
        self.metrics.store_errors.inc()
        self.store_problem = str(exc)


def _since(created_at: datetime | None) -> str:
    """``"0.42s"`` since the message was accepted (``"?"`` if not known)."""
    if created_at is None:
        return "?"
    return f"{(datetime.now(UTC) - created_at).total_seconds():.2f}s"
