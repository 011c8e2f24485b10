"""The dispatcher: from the inbox to the agent and back, once per message.

Adapters call `Dispatcher.submit()`, which commits the message to the store
before it returns (so the adapter may then acknowledge the event to its
platform) and wakes the claim loop, or, for a conversation nobody works on
while this instance has room, commits it with the conversation's lease taken
and its turn begun and starts that conversation's worker itself. Nothing is
answered from memory: the claim loop takes conversations from the store's work
queue (`storage.queue`) and runs one worker per claimed conversation, which answers that
conversation's unfinished messages one at a time in inbox order, then gives
the conversation back. Several instances on one PostgreSQL share the queue:
a conversation is answered by one instance at a time, so its replies stay in
order and its agent session never forks. Across conversations, up to
``max_concurrency`` workers run at once.

One message goes through these states (the store's docstring draws them)::

    pending -> running -> answered (reply + turn stored together) -> done | failed

- The reply is stored before it is posted, in the same transaction as the
  agent's turn: a crash between the agent's answer and its delivery posts the
  stored reply instead of calling (and billing) the agent again.
- A store error after the agent answered keeps the answer in memory and
  retries the write until the database is back: the agent is never asked
  twice for one message because of a store error.
- A reply the platform refuses is parked: the conversation is released until
  a backoff (1 s growing to 5 minutes) has passed, then claimed again, by
  this instance or another, for as long as the bridge runs. Only a final
  refusal (`ReplyUndeliverable`: bot blocked, chat gone) ends it, as failed.
- A crash during the agent call leaves the message ``running``: whoever
  takes the conversation over runs it again (at most `MAX_ATTEMPTS` times).

Claiming conversations and running their workers (and `submit`'s short way in,
which starts a turn in the accepting transaction) is in `bridge.claiming`; answering
one message (the agent call, storing, posting, parking) is in `bridge.turns`: base
classes of `Dispatcher`. This module is the lifecycle and what adapters call.
That is also the one place where errors become replies: an `AgentError`
becomes its ``user_message``; anything unexpected becomes the generic
``internal_error`` text, and its traceback goes to the log only.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Self

from bridge.access import Access
from bridge.budgets import Budgets
from bridge.claiming import Claiming
from bridge.config import BudgetsConfig, DispatcherConfig, FilesConfig, MessagesConfig
from bridge.errors import (
    StorageError,
)
from bridge.files import FileReader
from bridge.instance import Instance
from bridge.metrics import Metrics
from bridge.model import (
    Conversation,
    ConversationKey,
    InboxMessage,
    IncomingMessage,
    Reply,
    Usage,
    clean_text,
)

if TYPE_CHECKING:
    from bridge.backends.base import AgentBackend
    from bridge.chat import ChatAdapter
    from storage.store import Store

log = logging.getLogger("bridge.dispatcher")

#: Seconds before a refused reply is tried again, growing with each refusal,
#: then every 5 minutes for as long as the bridge runs.
DELIVERY_BACKOFF = (1.0, 3.0, 10.0, 30.0, 60.0, 120.0, 300.0)
#: Seconds between retries of a store write that must not be lost (an answer).
STORE_RETRY = (0.5, 1.0, 2.0, 5.0)
PURGE_INTERVAL = 3600.0


class Dispatcher(Claiming):
    """Answers accepted messages through their conversation's agent.

    Example::

        async with Dispatcher(store, backends, config.dispatcher, config.messages,
                              instance=instance) as d:
            d.register(adapter)
            await d.resume()                 # start claiming work, oldest first
            await d.submit(incoming_message) # committed when this returns
    """

    def __init__(
        self,
        store: Store,
        backends: Mapping[str, AgentBackend],
        config: DispatcherConfig,
        messages: MessagesConfig,
        *,
        instance: Instance,
        metrics: Metrics | None = None,
        retention_days: float = 7.0,
        poll_interval: float = 2.0,
        delivery_backoff: Sequence[float] = DELIVERY_BACKOFF,
        store_retry: Sequence[float] = STORE_RETRY,
        budgets: Budgets | None = None,
        files: FileReader | None = None,
    ) -> None:
        self.messages = messages
        self.budgets = budgets if budgets is not None else Budgets(BudgetsConfig())
        self.metrics = metrics if metrics is not None else Metrics()
        #: Reads a message's attachments in its turn (`bridge.files`).
        self._files = (
            files if files is not None else FileReader(FilesConfig(), metrics=self.metrics)
        )
        self.instance = instance
        self._store = store
        self._backends = dict(backends)
        self._config = config
        self._retention_days = retention_days
        self._poll_interval = poll_interval
        self._delivery_backoff = tuple(
            min(delay, config.delivery_retry_max) for delay in delivery_backoff
        )
        self._store_retry = tuple(store_retry)
        self._adapters: dict[str, ChatAdapter] = {}
        self._workers: dict[int, asyncio.Task[None]] = {}
        #: The agent call in flight per message id, for `cancel`.
        self._calls: dict[
            int, asyncio.Task[tuple[Reply, tuple[int, str | None, Usage] | None]]
        ] = {}
        self._wake = asyncio.Event()
        self._claiming = asyncio.Lock()
        self._changed = asyncio.Condition()
        self._rounds = 0
        self._last_round_claimed = 0
        #: The last claim round took as many conversations as it had room for.
        self._last_round_full = False
        self._accepting = True
        self._in_flight = 0
        self._claimer: asyncio.Task[None] | None = None
        self._purger: asyncio.Task[None] | None = None
        self._timers: set[asyncio.TimerHandle] = set()
        self._no_timers = asyncio.Event()
        self._no_timers.set()
        #: The last store failure the dispatcher saw, until a write succeeds again.
        self.store_problem: str | None = None
        #: The store's allowlist and pairing codes, for the adapters (`bridge.access`).
        self.access = Access(store)

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
        """Route replies for ``adapter.platform`` to ``adapter``; its
        conversations are claimed from now on (once `resume` has run)."""
        self._adapters[adapter.platform] = adapter

    async def resume(self) -> int:
        """Start claiming work: what is unclaimed, or whose owner died, oldest
        first, then whatever arrives. Returns how many unfinished messages the
        first claim took."""
        claimed = 0
        if self._claimer is None and self._accepting:
            try:
                claimed = await self._claim_round(count=True)
            except StorageError as exc:
                self._store_failed(exc)
                log.error("cannot claim work yet: %s", exc)
            if self._claimer is None:  # a submit during that round may have started it
                self._claimer = asyncio.create_task(self._claim_loop(), name="dispatcher-claim")
        if claimed:
            log.info("resuming %d unfinished message(s)", claimed)
        return claimed

    def stop_accepting(self) -> None:
        """From now on, accepted messages are committed but left pending."""
        if self._accepting:
            log.info("no longer starting new agent calls; new messages stay pending")
        self._accepting = False
        self._wake.set()

    async def shutdown(self, grace: float) -> None:
        """Stop claiming; give the conversations being worked on ``grace``
        seconds to finish their current message; cancel the rest. Nothing is
        lost: what did not finish stays pending or running in the store, and
        the leases are given back (by `Instance`) so others take over at once."""
        self.stop_accepting()
        if self._claimer is not None:
            self._claimer.cancel()
            await asyncio.gather(self._claimer, return_exceptions=True)
            self._claimer = None
            async with self._changed:
                self._changed.notify_all()  # wait_idle callers: nothing more comes
        workers = list(self._workers.values())
        if workers:
            log.info("waiting up to %.0fs for %d agent call(s) in flight", grace, self._in_flight)
            if grace > 0:
                _, unfinished = await asyncio.wait(workers, timeout=grace)
            else:
                unfinished = set(workers)
            for task in unfinished:
                task.cancel()
            if unfinished:
                log.warning(
                    "cancelled %d conversation(s) still working; they are answered later",
                    len(unfinished),
                )
            await asyncio.gather(*workers, return_exceptions=True)
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        self._no_timers.set()
        if self._purger is not None:
            self._purger.cancel()
            await asyncio.gather(self._purger, return_exceptions=True)
            self._purger = None

    async def wait_idle(self, *, parked: bool = True) -> None:
        """Wait until a claim round found nothing to take and no conversation
        is being worked on (for tests and tools); with ``parked``, also for the
        retries of refused replies this instance has scheduled."""
        if self._claimer is None:
            while self._workers:
                await asyncio.gather(*list(self._workers.values()), return_exceptions=True)
            return
        while True:
            await self._next_round()
            if self._claimer is None:
                return
            if self._workers:
                await asyncio.gather(*list(self._workers.values()), return_exceptions=True)
            elif self._last_round_claimed == 0:
                if not (parked and self._timers):
                    return
                await self._no_timers.wait()

    async def _next_round(self) -> None:
        seen = self._rounds
        self._wake.set()
        async with self._changed:
            await self._changed.wait_for(lambda: self._rounds > seen or self._claimer is None)

    @property
    def accepting(self) -> bool:
        return self._accepting

    @property
    def queue_depth(self) -> int:
        """Conversations this instance is working on."""
        return len(self._workers)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def max_concurrency(self) -> int:
        """Agent calls in flight at most: what the HTTP pools are sized for."""
        return self._config.max_concurrency

    # --- what adapters call ----------------------------------------------------------

    async def submit(self, msg: IncomingMessage) -> bool:
        """Commit ``msg`` to the inbox; it is answered from there.

        Returns False for a duplicate (already accepted once). Raises
        `StorageError` when the store failed: the adapter must then not
        acknowledge the event, so that the platform delivers it again.
        """
        text = clean_text(msg.text)
        if text != msg.text:
            msg = dataclasses.replace(msg, text=text)
        try:
            stored, started = await self._accept(msg)
        except StorageError as exc:
            self._store_failed(exc)
            raise
        self.store_problem = None
        if stored is None:
            log.info("duplicate %s event %s ignored", msg.key.platform, msg.event_id)
            return False
        self.metrics.received.labels(msg.key.platform).inc()
        log.debug("accepted message %d in %s from %s", stored.id, msg.key, msg.sender)
        log.debug("message %d text: %r", stored.id, msg.text)
        if self._claimer is None and self._accepting:
            # An adapter that takes messages is ready to answer them; the inbox
            # order holds whoever starts claiming first (this or `resume`).
            self._claimer = asyncio.create_task(self._claim_loop(), name="dispatcher-claim")
        if not started:
            self._wake.set()
        return True

    async def reset(self, key: ConversationKey, agent: str) -> None:
        """Give the conversation a fresh agent session (its next turn starts one)."""
        conversation = await self._store.reset_conversation(key)
        if conversation is None:
            await self._store.ensure_conversation(key, agent)
        log.info("conversation %s reset", key)

    async def cancel(self, key: ConversationKey, event_id: str) -> bool:
        """The sender gave up waiting for the answer to ``event_id``: finish the
        message as failed (``cancelled``) unless its answer is stored already,
        and stop its agent call if this instance is making it. It is not asked
        again, here or after a restart. Returns whether it was cancelled."""
        try:
            message_id = await self._store.cancel(key.platform, event_id)
        except StorageError as exc:
            self._store_failed(exc)
            raise
        if message_id is None:
            return False
        call = self._calls.get(message_id)
        if call is not None:
            call.cancel()
        self.metrics.failed.labels(key.platform).inc()
        log.info("message %d in %s cancelled by its sender", message_id, key)
        return True

    async def conversation(self, key: ConversationKey) -> Conversation | None:
        return await self._store.get_conversation(key)

    async def usage_text(self, platform: str, user: str, chat: str, agent: str) -> str:
        """What ``/usage`` answers ``user``: their use today and this month, what is left."""
        return await self.budgets.usage_text(
            self._store, platform=platform, user=user, chat=chat, agent=agent
        )

    async def note_pieces(self, message: InboxMessage, pieces: int) -> None:
        """An adapter posted the first ``pieces`` pieces of a long reply: a retry,
        here or in another process after a crash, starts after them. Best effort:
        if the store fails, only this process remembers."""
        try:
            await self._store.note_pieces(message, self.instance.id, pieces)
        except StorageError as exc:
            self._store_failed(exc)
            log.warning("message %d: could not note the pieces posted: %s", message.id, exc)

    async def record_feedback(self, platform: str, message_id: int, user: str, value: str) -> None:
        """``user`` rated the answer to message ``message_id`` ("good" or "bad"):
        store it (replacing their earlier rating) and count it under the message's
        agent. A message the store does not know (of another platform, or deleted) is
        logged and ignored. Raises `StorageError` when the store failed."""
        try:
            agent = await self._store.record_feedback(message_id, user, value, platform=platform)
        except StorageError as exc:
            self._store_failed(exc)
            raise
        if agent is None:
            log.warning("%s feedback on unknown message %d ignored", platform, message_id)
            return
        self.metrics.feedback.labels(agent, value).inc()
        log.info(
            "%s feedback on message %d (%s): %s by %s", platform, message_id, agent, value, user
        )

    def has_agent(self, name: str) -> bool:
        return name in self._backends

    async def _purge_loop(self) -> None:
        while True:
            try:
                erased = await self._store.purge_text(self._retention_days)
                if erased:
                    log.info("erased the text of %d finished message(s)", erased)
            except StorageError as exc:
                log.warning("retention purge failed: %s", exc)
            await asyncio.sleep(PURGE_INTERVAL)
