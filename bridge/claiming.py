"""Claiming conversations and working on them: the part of the `Dispatcher` that
takes work from the store's queue (`storage.queue`) and runs one worker per claimed
conversation, which answers that conversation's unfinished messages one at a time in
inbox order (`bridge.turns`), then gives the conversation back.

Work comes two ways. The claim loop takes what is unclaimed, or whose owner died,
oldest first, whenever it is woken (a message accepted here, a NOTIFY from another
instance, a parked reply's time) or every ``poll_interval``. And `submit` itself, for a
message to a conversation nobody works on while this instance has room, commits the
message with the lease taken and the turn started (`Store.accept_and_start`) and starts
the worker at once: no claim round, two transactions less on the way in.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from bridge.budgets import StartedTurn
from bridge.errors import StorageError
from bridge.model import InboxMessage, IncomingMessage
from bridge.turns import Next, Turns

if TYPE_CHECKING:
    from bridge.chat import ChatAdapter

log = logging.getLogger("bridge.dispatcher")


class Claiming(Turns):
    """Claims, the workers, and `submit`'s short way in (a base class of the
    `Dispatcher`: the state below is the dispatcher's)."""

    _adapters: dict[str, ChatAdapter]
    _workers: dict[int, asyncio.Task[None]]
    _claiming: asyncio.Lock
    _changed: asyncio.Condition
    _rounds: int
    _last_round_claimed: int
    #: The last claim round took as many conversations as it had room for.
    _last_round_full: bool
    _accepting: bool
    _claimer: asyncio.Task[None] | None
    _poll_interval: float

    async def _accept(self, msg: IncomingMessage) -> tuple[InboxMessage | None, bool]:
        """Commit ``msg`` (None: a duplicate); True if its turn started at once."""
        if not self._may_start(msg):
            return await self._store.accept(msg), False
        # The short way in: nobody works on the conversation and this instance has
        # room, so the accepting transaction also takes the lease and starts the turn
        # (`storage.inbox`); no claim round is needed. Under the claim lock: a round
        # running meanwhile could claim the conversation (ours by then) and start a
        # second worker on it.
        async with self._claiming:
            if not self._may_start(msg):
                return await self._store.accept(msg), False
            accepted = await self._store.accept_and_start(msg, self.instance.id, self._budget)
            if accepted is None:
                return None, False
            stored, started = accepted
            if started is None:
                return stored, False
            self._start_worker(stored.conversation_id, stored, started)
            return stored, True

    def _may_start(self, msg: IncomingMessage) -> bool:
        """Whether `submit` may take ``msg``'s conversation and start its turn itself:
        claiming has begun (`resume`, or an earlier submit), this instance answers the
        platform and is fresh, it has room, its last claim round left nothing
        claimable behind (a backlog is the claim loop's, oldest first), and the text is
        within ``max_input_chars`` (a refusal needs no turn)."""
        return (
            self._claimer is not None
            and self._accepting
            and self.instance.fresh
            and msg.key.platform in self._adapters
            and len(self._workers) < self._config.max_concurrency
            and not self._last_round_full
            and len(msg.text) <= self._config.max_input_chars
        )

    # --- claiming --------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        self._wake.set()  # a first round at once
        while self._accepting:
            try:
                async with asyncio.timeout(self._poll_interval):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            if not self._accepting:
                break
            try:
                await self._claim_round()
            except StorageError as exc:
                self._store_failed(exc)
                log.warning("cannot claim work: %s", exc)
                async with self._changed:
                    self._rounds += 1
                    self._last_round_claimed = 0
                    self._changed.notify_all()

    async def _claim_round(self, *, count: bool = False) -> int:
        """Claim what this instance has room for; start a worker per conversation.
        With ``count``, returns how many unfinished messages the claimed
        conversations hold (for the start-up log line)."""
        # One round at a time: `resume` and the claim loop (started by an early
        # `submit`) may both want one, and a conversation this instance holds
        # is claimable by it again; two rounds at once would start it twice.
        async with self._claiming:
            return await self._claim_round_locked(count=count)

    async def _claim_round_locked(self, *, count: bool) -> int:
        claimed: list[int] = []
        room = self._config.max_concurrency - len(self._workers)
        if room <= 0:
            self._last_round_full = True
        if room > 0 and self._accepting and self.instance.fresh:
            claims = await self._store.claim(
                self.instance.id,
                platforms=sorted(self._adapters),
                limit=room,
                lease_timeout=self.instance.lease_timeout,
                exclude=list(self._workers),
            )
            self.store_problem = None
            for claim in claims:
                if claim.taken_from is not None:
                    self.metrics.takeovers.inc()
                    log.warning(
                        "took over conversation %d from instance %s, which is gone "
                        "(it stopped heartbeating, or its process exited)",
                        claim.conversation_id,
                        claim.taken_from,
                    )
                self._start_worker(claim.conversation_id, claim.first)
                claimed.append(claim.conversation_id)
            # Full: more may wait; `submit` then leaves new work to the next round.
            self._last_round_full = len(claims) >= room
        self.metrics.leases_held.set(len(self._workers))
        async with self._changed:
            self._rounds += 1
            self._last_round_claimed = len(claimed)
            self._changed.notify_all()
        if not (claimed and count):
            return len(claimed)
        return await self._store.count_unfinished(conversation_ids=claimed)

    def _start_worker(
        self,
        conversation_id: int,
        first: InboxMessage | None = None,
        started: StartedTurn | None = None,
    ) -> None:
        if conversation_id in self._workers:  # pragma: no cover - excluded from claims
            return
        self._workers[conversation_id] = asyncio.create_task(
            self._work(conversation_id, first, started), name=f"conversation-{conversation_id}"
        )
        self.metrics.leases_held.set(len(self._workers))

    # --- the work ---------------------------------------------------------------------

    async def _work(
        self,
        conversation_id: int,
        first: InboxMessage | None = None,
        started: StartedTurn | None = None,
    ) -> None:
        """Answer the conversation's messages in order while this instance holds it;
        ``first`` is its oldest unfinished message as the claim read it, or as `submit`
        accepted it with its turn ``started``."""
        owner = self.instance.id
        release = True
        try:
            while self._accepting:
                message: InboxMessage | None
                if first is not None:
                    message, first = first, None
                else:
                    message = await self._store.next_message(conversation_id, owner)
                if message is None:
                    break
                adapter = self._adapters.get(message.key.platform)
                if adapter is None:  # pragma: no cover - claims are by registered platform
                    break
                outcome = await self._handle(adapter, message, started)
                started = None
                if outcome is Next.RELEASED:
                    # Given back with the last delivery. Wake the claim loop if work
                    # may be waiting for this place: this worker held the last free
                    # one, or the last round filled every place it had (a backlog).
                    # Waking only in the first case left places freed in between
                    # empty until the next poll: with 1,000 conversations queued and
                    # a 2 s agent, about half of max_concurrency stayed busy.
                    if self._last_round_full or len(self._workers) >= self._config.max_concurrency:
                        self._wake.set()
                    return
                if outcome is Next.STOP:
                    release = False  # parked (given back) or lost
                    break
        except StorageError as exc:
            # The lease stays ours; the claim loop takes the conversation again
            # once the database answers.
            self._store_failed(exc)
            log.error("conversation %d: store failed, retried shortly: %s", conversation_id, exc)
            release = False
            self._wake_later(self._store_retry[0])
        except Exception:
            log.exception("conversation %d: unexpected error", conversation_id)
            release = False
            self._wake_later(self._delivery_backoff[0])
        finally:
            self._workers.pop(conversation_id, None)
            self.metrics.leases_held.set(len(self._workers))
        if release and self._accepting:
            try:
                if await self._store.release(conversation_id, owner):
                    self._wake.set()  # a message arrived while we answered
            except StorageError as exc:
                self._store_failed(exc)  # still ours: the claim loop takes it again
        else:
            self._wake.set()
