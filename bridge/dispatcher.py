"""The dispatcher: from the inbox to the agent and back, once per message.

Adapters call `Dispatcher.submit()`, which commits the message to the store
before it returns (so the adapter may then acknowledge the event to its
platform) and schedules it. Each conversation has at most one worker task,
which answers its messages one at a time in arrival order; across
conversations, workers run in parallel, bounded by ``max_concurrency`` agent
calls in flight.

One message goes through these states in the store::

    pending -> running -> answered (reply stored) -> done | failed (reply delivered)

The reply is stored before it is posted, so a crash between the agent's
answer and its delivery re-posts the stored reply at the next start instead
of calling (and billing) the agent again. A crash during the agent call
leaves the message ``running``; `resume()` runs it again at the next start.

This is also the one place where errors become replies: an `AgentError`
becomes its ``user_message``; anything unexpected becomes the generic
``internal_error`` text, and its traceback goes to the log only.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Self

from bridge.config import DispatcherConfig, MessagesConfig
from bridge.errors import AdapterError, AgentError, AgentSessionExpired, StorageError
from bridge.metrics import Metrics
from bridge.model import (
    AgentReply,
    Conversation,
    ConversationKey,
    InboxMessage,
    IncomingMessage,
    MessageStatus,
    Reply,
)

if TYPE_CHECKING:
    from bridge.chat import ChatAdapter
    from bridge.backends.base import AgentBackend
    from storage.store import Store

log = logging.getLogger("bridge.dispatcher")

#: A message whose agent call was interrupted this often (crash, kill) is
#: answered with the internal-error text instead of being tried again forever.
MAX_ATTEMPTS = 3
#: Seconds between attempts to post a reply the platform refused.
DELIVERY_BACKOFF = (1.0, 3.0, 10.0, 30.0)
PURGE_INTERVAL = 3600.0


class Dispatcher:
    """Answers accepted messages through their conversation's agent.

    Example::

        async with Dispatcher(store, backends, config.dispatcher, config.messages) as d:
            d.register(adapter)
            await d.resume()                 # what a previous run left unanswered
            await d.submit(incoming_message) # committed when this returns
    """

    def __init__(
        self,
        store: Store,
        backends: Mapping[str, AgentBackend],
        config: DispatcherConfig,
        messages: MessagesConfig,
        *,
        metrics: Metrics | None = None,
        retention_days: float = 7.0,
        delivery_backoff: Sequence[float] = DELIVERY_BACKOFF,
    ) -> None:
        self.messages = messages
        self.metrics = metrics if metrics is not None else Metrics()
        self._store = store
        self._backends = dict(backends)
        self._config = config
        self._retention_days = retention_days
        self._delivery_backoff = tuple(delivery_backoff)
        self._adapters: dict[str, ChatAdapter] = {}
        self._slots = asyncio.Semaphore(config.max_concurrency)
        self._queues: dict[int, collections.deque[InboxMessage]] = {}
        self._workers: dict[int, asyncio.Task[None]] = {}
        self._scheduled: set[int] = set()
        self._accepting = True
        self._in_flight = 0
        self._purger: asyncio.Task[None] | None = None

    # --- lifecycle -------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._purger = asyncio.create_task(self._purge_loop(), name="dispatcher-purge")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.shutdown(0)

    def register(self, adapter: ChatAdapter) -> None:
        """Route replies for ``adapter.platform`` to ``adapter``."""
        self._adapters[adapter.platform] = adapter

    def stop_accepting(self) -> None:
        """From now on, accepted messages are committed but left pending."""
        if self._accepting:
            log.info("no longer starting new agent calls; new messages stay pending")
        self._accepting = False

    async def shutdown(self, grace: float) -> None:
        """Stop starting agent calls; give those in flight ``grace`` seconds to
        finish and post their replies; cancel the rest. Nothing is lost: what
        did not finish stays pending or running in the store."""
        self.stop_accepting()
        workers = list(self._workers.values())
        if workers:
            log.info("waiting up to %.0fs for %d agent call(s) in flight", grace, self._in_flight)
            _, unfinished = (
                await asyncio.wait(workers, timeout=grace)
                if grace > 0
                else (
                    set(),
                    set(workers),
                )
            )
            for task in unfinished:
                task.cancel()
            if unfinished:
                log.warning(
                    "cancelled %d conversation(s) still working; they resume at the next start",
                    len(unfinished),
                )
            await asyncio.gather(*workers, return_exceptions=True)
        if self._purger is not None:
            self._purger.cancel()
            await asyncio.gather(self._purger, return_exceptions=True)
            self._purger = None

    async def wait_idle(self) -> None:
        """Wait until no message is queued or being answered (for tests and tools)."""
        while self._workers:
            await asyncio.gather(*list(self._workers.values()), return_exceptions=True)

    @property
    def accepting(self) -> bool:
        return self._accepting

    @property
    def queue_depth(self) -> int:
        """Messages scheduled in this process and not yet started."""
        return sum(len(q) for q in self._queues.values())

    @property
    def in_flight(self) -> int:
        return self._in_flight

    # --- what adapters call ----------------------------------------------------------

    async def submit(self, msg: IncomingMessage) -> bool:
        """Commit ``msg`` to the inbox and schedule its answer.

        Returns False for a duplicate (already accepted once). Raises
        `StorageError` when the store failed: the adapter must then not
        acknowledge the event, so that the platform delivers it again.
        """
        stored = await self._store.accept(msg)
        if stored is None:
            log.info("duplicate %s event %s ignored", msg.key.platform, msg.event_id)
            return False
        self.metrics.received.labels(msg.key.platform).inc()
        log.info("accepted message %d in %s from %s", stored.id, msg.key, msg.sender)
        log.debug("message %d text: %r", stored.id, msg.text)
        if self._accepting:
            self._schedule(stored)
        else:
            log.info("message %d left pending: shutting down", stored.id)
        return True

    async def resume(self) -> int:
        """Schedule what a previous run left unanswered; returns how many."""
        count = 0
        skipped: collections.Counter[str] = collections.Counter()
        for message in await self._store.unfinished():
            if message.key.platform not in self._adapters:
                skipped[message.key.platform] += 1
                continue
            if self._schedule(message):
                count += 1
        for platform, n in skipped.items():
            log.warning("%d pending %s message(s) wait for the %s adapter", n, platform, platform)
        if count:
            log.info("resuming %d message(s) left from the previous run", count)
        return count

    async def reset(self, key: ConversationKey, agent: str) -> None:
        """Give the conversation a fresh agent session (its next turn starts one)."""
        conversation = await self._store.reset_conversation(key)
        if conversation is None:
            await self._store.ensure_conversation(key, agent)
        log.info("conversation %s reset", key)

    async def conversation(self, key: ConversationKey) -> Conversation | None:
        return await self._store.get_conversation(key)

    def note_refused(self, platform: str) -> None:
        self.metrics.refused.labels(platform).inc()

    def has_agent(self, name: str) -> bool:
        return name in self._backends

    # --- the work ---------------------------------------------------------------------

    def _schedule(self, message: InboxMessage) -> bool:
        if message.id in self._scheduled:
            return False
        self._scheduled.add(message.id)
        queue = self._queues.setdefault(message.conversation_id, collections.deque())
        # Arrival order is inbox id order. resume() runs after the adapters have
        # connected, so a message from the previous run can be scheduled after a
        # newer one of the same conversation: put it back in its place.
        position = len(queue)
        while position and queue[position - 1].id > message.id:
            position -= 1
        queue.insert(position, message)
        self.metrics.queue_depth.set(self.queue_depth)
        if message.conversation_id not in self._workers:
            self._workers[message.conversation_id] = asyncio.create_task(
                self._work(message.conversation_id), name=f"conversation-{message.conversation_id}"
            )
        return True

    async def _work(self, conversation_id: int) -> None:
        queue = self._queues[conversation_id]
        try:
            while queue and self._accepting:
                async with self._slots:
                    if not self._accepting:
                        break
                    message = queue.popleft()
                    self.metrics.queue_depth.set(self.queue_depth)
                    try:
                        await self._handle(message)
                    except StorageError as exc:
                        log.error(
                            "message %d: store failed, left for the next start: %s", message.id, exc
                        )
                    except Exception:
                        log.exception("message %d: unexpected error", message.id)
                    finally:
                        self._scheduled.discard(message.id)
        finally:
            # Whatever is still queued stays pending in the store for the next start.
            for left in queue:
                self._scheduled.discard(left.id)
            self._queues.pop(conversation_id, None)
            self._workers.pop(conversation_id, None)
            self.metrics.queue_depth.set(self.queue_depth)

    async def _handle(self, message: InboxMessage) -> None:
        adapter = self._adapters.get(message.key.platform)
        if adapter is None:
            log.warning("message %d: no %s adapter; left pending", message.id, message.key.platform)
            return
        if message.status is MessageStatus.ANSWERED and message.reply_text is not None:
            # Answered before a restart, not yet delivered: post the stored reply.
            reply = Reply(message.reply_text, error_kind=message.error_kind)
        else:
            reply = await self._answer(adapter, message)
            # Stored before it is posted: a crash from here on re-posts it at the
            # next start instead of asking (and billing) the agent again.
            await self._store.save_reply(message.id, reply.text, error_kind=reply.error_kind)
        await self._deliver(adapter, message, reply)

    async def _answer(self, adapter: ChatAdapter, message: InboxMessage) -> Reply:
        if message.attempts >= MAX_ATTEMPTS:
            log.error(
                "message %d was interrupted %d times; answering with an error",
                message.id,
                message.attempts,
            )
            return Reply(self.messages.render("internal_error"), error_kind="interrupted")
        if len(message.text) > self._config.max_input_chars:
            self.note_refused(message.key.platform)
            return Reply(
                self.messages.render(
                    "input_too_long",
                    length=len(message.text),
                    max_chars=self._config.max_input_chars,
                ),
                error_kind="input_too_long",
            )
        await self._store.mark_running(message.id)
        self._in_flight += 1
        self.metrics.in_flight.set(self._in_flight)
        try:
            async with adapter.working(message):
                reply = await self._ask_agent(message)
        finally:
            self._in_flight -= 1
            self.metrics.in_flight.set(self._in_flight)
        return reply

    async def _ask_agent(self, message: InboxMessage) -> Reply:
        conversation = await self._store.get_conversation_by_id(message.conversation_id)
        name = conversation.agent if conversation.agent in self._backends else message.agent
        backend = self._backends.get(name)
        if backend is None:
            log.error(
                "message %d: agent %r is not configured (conversation %s)",
                message.id,
                conversation.agent,
                conversation.key,
            )
            return Reply(self.messages.render("internal_error"), error_kind="no_agent")
        session = conversation.session_id or backend.new_session_id()
        note = ""
        try:
            try:
                result = await self._call(backend, message, session)
            except AgentSessionExpired as exc:
                log.info("message %d: %s; starting a fresh session", message.id, exc)
                session = backend.new_session_id()
                note = self.messages.render("session_restarted")
                result = await self._call(backend, message, session)
        except AgentError as exc:
            log.warning("message %d in %s: %s", message.id, message.key, exc)
            return Reply(exc.user_message, error_kind=exc.kind)
        except Exception:
            log.exception("message %d: agent %r failed unexpectedly", message.id, name)
            return Reply(self.messages.render("internal_error"), error_kind="internal")
        await self._store.record_turn(
            conversation.id,
            epoch=conversation.epoch,
            session_id=result.session_id or session,
            usage=result.usage,
        )
        text = result.text if not note else f"{note}\n\n{result.text}"
        return Reply(text)

    async def _call(
        self, backend: AgentBackend, message: InboxMessage, session: str | None
    ) -> AgentReply:
        started = time.monotonic()
        try:
            result = await backend.chat(message.text, session)
        except AgentError as exc:
            self.metrics.agent_errors.labels(backend.name, exc.kind).inc()
            raise
        finally:
            self.metrics.agent_latency.labels(backend.name).observe(time.monotonic() - started)
        self.metrics.tokens.labels(backend.name, "input").inc(result.usage.input_tokens)
        self.metrics.tokens.labels(backend.name, "output").inc(result.usage.output_tokens)
        log.info(
            "message %d: agent %s answered in %.2fs (session %s)",
            message.id,
            backend.name,
            time.monotonic() - started,
            result.session_id or session,
        )
        return result

    async def _deliver(self, adapter: ChatAdapter, message: InboxMessage, reply: Reply) -> None:
        platform = message.key.platform
        for attempt, delay in enumerate((0.0, *self._delivery_backoff), start=1):
            if delay:
                await asyncio.sleep(delay)
            try:
                await adapter.send_reply(message, reply)
            except AdapterError as exc:
                log.warning("message %d: delivery attempt %d failed: %s", message.id, attempt, exc)
                continue
            except Exception:
                log.exception("message %d: delivery attempt %d failed", message.id, attempt)
                continue
            await self._store.mark_delivered(message.id)
            if reply.error_kind is None:
                self.metrics.answered.labels(platform).inc()
            else:
                self.metrics.failed.labels(platform).inc()
            log.info("message %d answered in %s", message.id, message.key)
            return
        log.error(
            "message %d: could not post the reply to %s; it is kept and posted at the next start",
            message.id,
            message.key,
        )

    async def _purge_loop(self) -> None:
        while True:
            try:
                erased = await self._store.purge_text(self._retention_days)
                if erased:
                    log.info("erased the text of %d finished message(s)", erased)
            except StorageError as exc:
                log.warning("retention purge failed: %s", exc)
            await asyncio.sleep(PURGE_INTERVAL)
