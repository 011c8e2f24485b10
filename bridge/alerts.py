"""Admin alerts (``[alerts]``): a message to an administrators' Telegram chat or
Slack channel when something needs a person, and another when it clears.

Problems, by kind (the first four per agent, from the turns' error kinds;
`Alerter.observe`):

- ``insufficient_balance``: the agent answered 402: top up its balance;
- ``unauthorized``: 401 or 403: check ``agents.NAME.api_key``;
- ``not_found``: 404: check the agent's id (``agents.NAME.agent_id``...);
- ``budget_agent_cap``: the agent's overall budget cap is reached;
- ``degraded`` (subject ``bridge``): /healthz has reported a problem
  (`bridge.health`: a platform disconnected, work stuck...) for longer than
  ``alerts.degraded_after``.

An answer from the agent clears its problems; health coming back clears
``degraded``. A problem is announced at most once per ``alerts.repeat_after``
per kind and subject, whichever instance sees it: the store decides who sends
(`AlertStore`), and a recovery message follows an announced problem.

Nothing here holds up a turn: `observe` only queues, and one worker task sends,
in order. A failed send is logged, and the next occurrence tries again (a failed
recovery message is only logged: its problem is gone).

``degraded`` is one problem for all instances: each watches its own health (the
/healthz report, every ``HEALTH_INTERVAL`` at most); an instance clears it only if
it saw it itself, or has just started (its predecessor's may still be open), so an
instance that was healthy all along does not clear another's problem.

Example::

    async with Alerter(config.alerts, store, adapters, metrics, agents=config.agents) as alerts:
        dispatcher.alerts = alerts
        alerts.observe("default", "insufficient_balance")
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self

from bridge.errors import AdapterError, BridgeError

if TYPE_CHECKING:
    from bridge.chat import ChatAdapter
    from bridge.config import AlertsConfig
    from bridge.metrics import Metrics

log = logging.getLogger("bridge.alerts")

#: The kinds an agent's turn can raise, and that its next answer clears.
AGENT_KINDS = ("insufficient_balance", "unauthorized", "not_found", "budget_agent_cap")
DEGRADED = "degraded"
#: The subject of the bridge-wide problem.
BRIDGE = "bridge"
#: The ``kind`` label of `Metrics.alerts_sent` for a recovery message.
RECOVERY = "recovery"
#: A problem's name in the alert and its recovery message.
TITLES = {
    "insufficient_balance": "out of credit",
    "unauthorized": "API key refused",
    "not_found": "agent not found",
    "budget_agent_cap": "budget cap reached",
}
#: The key that names an agent's id, per backend (the 404 alert's hint).
ID_KEYS = {"thinnest": "agent_id", "peaka": "project_id", "openai": "model", "http": "url"}
#: How often the health is looked at, at most (a smaller ``degraded_after`` looks
#: more often).
HEALTH_INTERVAL = 30.0


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """A problem as the store keeps it: since when it is present, when its
    last alert was sent (the claim), and what was seen (health reasons)."""

    kind: str
    subject: str
    since: datetime
    sent_at: datetime | None
    detail: str = ""


class AlertStore(Protocol):
    """The store's half (``storage/alerts.py``): atomic, across instances."""

    async def claim_alert(
        self, kind: str, subject: str, *, repeat_after: float, detail: str = ""
    ) -> AlertRecord | None: ...

    async def release_alert(self, record: AlertRecord) -> None: ...

    async def clear_alerts(self, subject: str, kinds: Collection[str]) -> list[AlertRecord]: ...


#: What `Alerter` reads the health from: (all well, the /healthz body).
HealthProbe = Callable[[], Awaitable[tuple[bool, dict[str, Any]]]]


@dataclass(frozen=True, slots=True)
class _Occurred:
    kind: str
    subject: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class _Cleared:
    subject: str
    kinds: tuple[str, ...]


class Alerter:
    """Sends the admin alerts; an async context manager (its worker task, and the
    health watch when given a ``probe``)."""

    def __init__(
        self,
        config: AlertsConfig,
        store: AlertStore,
        adapters: Mapping[str, ChatAdapter],
        metrics: Metrics,
        *,
        agents: Mapping[str, object] | None = None,
        probe: HealthProbe | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._store = store
        self._adapters = dict(adapters)
        self._metrics = metrics
        self._agents = dict(agents or {})
        self._probe = probe
        self._clock = clock
        self._queue: asyncio.Queue[_Occurred | _Cleared] = asyncio.Queue()
        #: What is queued already (`_key`): a burst of turns is one look at the
        #: store, and the queue stays short while the store is away.
        self._queued: set[tuple[str, ...]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._unhealthy_since: float | None = None
        #: Whether this process may have to clear ``degraded``: it saw it, or it
        #: has just started (a predecessor's may still be open).
        self._may_clear_degraded = True
        #: Set whenever the worker has handled everything queued (for tests).
        self.idle = asyncio.Event()
        self.idle.set()

    def destinations(self) -> list[tuple[str, str]]:
        """(platform, chat or channel id) of every configured destination."""
        out: list[tuple[str, str]] = []
        if self.config.telegram_chat is not None:
            out.append(("telegram", str(self.config.telegram_chat)))
        if self.config.slack_channel is not None:
            out.append(("slack", self.config.slack_channel))
        return out

    async def __aenter__(self) -> Self:
        self._tasks.append(asyncio.create_task(self._work(), name="alerts"))
        if self._probe is not None:
            self._tasks.append(asyncio.create_task(self._watch_health(), name="alerts-health"))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    # --- what the core tells it ------------------------------------------------------

    def observe(self, agent: str, error_kind: str | None) -> None:
        """A turn of ``agent`` ended with ``error_kind`` (None: the agent answered).
        Never blocks, never raises: the work is queued."""
        if error_kind in AGENT_KINDS:
            self._put(_Occurred(error_kind, agent))
        elif error_kind is None:
            self._put(_Cleared(agent, AGENT_KINDS))

    def _put(self, item: _Occurred | _Cleared) -> None:
        key = _key(item)
        if key in self._queued:
            return
        self._queued.add(key)
        self.idle.clear()
        self._queue.put_nowait(item)

    # --- the worker ------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            item = await self._queue.get()
            self._queued.discard(_key(item))  # one coming meanwhile is looked at again
            try:
                if isinstance(item, _Occurred):
                    await self._occurred(item)
                else:
                    await self._cleared(item)
            except BridgeError as exc:  # the store is away: the next occurrence retries
                log.warning("alerts: %s", exc)
            except Exception:
                log.exception("alerts: unexpected error")
            finally:
                self._queue.task_done()
                if self._queue.empty():
                    self.idle.set()

    async def _occurred(self, item: _Occurred) -> None:
        record = await self._store.claim_alert(
            item.kind, item.subject, repeat_after=self.config.repeat_after, detail=item.detail
        )
        if record is None:
            return  # announced lately, here or by another instance
        if await self._send(self._alert_text(record)):
            self._metrics.alerts_sent.labels(record.kind).inc()
            log.info("alert sent: %s of %s", record.kind, record.subject)
        else:
            await self._store.release_alert(record)

    async def _cleared(self, item: _Cleared) -> None:
        for record in await self._store.clear_alerts(item.subject, item.kinds):
            if await self._send(self._recovery_text(record)):
                self._metrics.alerts_sent.labels(RECOVERY).inc()
                log.info("recovery sent: %s of %s", record.kind, record.subject)

    async def _send(self, text: str) -> bool:
        """Post ``text`` to every destination; True if one of them took it."""
        sent = False
        for platform, chat in self.destinations():
            adapter = self._adapters.get(platform)
            if adapter is None:
                log.warning("alerts: no %s adapter runs to send an alert to %s", platform, chat)
                continue
            try:
                await adapter.post_notice(chat, text)
            except Exception as exc:  # whatever it is, the claim must be released
                log.warning(
                    "alerts: could not send an alert to %s %s: %s",
                    platform,
                    chat,
                    exc,
                    exc_info=not isinstance(exc, AdapterError),
                )
                continue
            sent = True
        return sent

    # --- the health watch ------------------------------------------------------------

    async def _watch_health(self) -> None:
        assert self._probe is not None
        interval = min(HEALTH_INTERVAL, self.config.degraded_after / 4)
        while True:
            await asyncio.sleep(interval)
            try:
                _, body = await self._probe()
            except Exception:
                log.warning("alerts: could not read the health", exc_info=True)
                continue
            self.health_seen([p for p in body.get("problems", []) if p != "stopping"])

    def health_seen(self, problems: list[str]) -> None:
        """The health now: ``problems`` as /healthz names them (none: healthy)."""
        now = self._clock()
        if not problems:
            self._unhealthy_since = None
            if self._may_clear_degraded:
                self._may_clear_degraded = False
                self._put(_Cleared(BRIDGE, (DEGRADED,)))
            return
        if self._unhealthy_since is None:
            self._unhealthy_since = now
        if now - self._unhealthy_since >= self.config.degraded_after:
            self._may_clear_degraded = True
            self._put(_Occurred(DEGRADED, BRIDGE, "; ".join(problems)))

    # --- the texts -------------------------------------------------------------------

    def _alert_text(self, record: AlertRecord) -> str:
        name = record.subject
        since = _when(record.since)
        if record.kind == DEGRADED:
            return (
                f"⚠️ **agent-bridge is degraded** since {since}: {record.detail}.\n"
                "What to do: look at /healthz and the bridge's log; a platform may be "
                "down, or refuse the connection."
            )
        title = TITLES.get(record.kind, record.kind)
        what, todo = {
            "insufficient_balance": (
                "The agent answered 402 (insufficient balance): users get the "
                "out-of-credit text instead of answers.",
                "top up the balance with the agent's provider.",
            ),
            "unauthorized": (
                "The agent refused the bridge's API key (401/403).",
                f"check the key `agents.{name}.api_key` (and that it may use this agent).",
            ),
            "not_found": (
                "The agent's provider does not know this agent (404).",
                f"check the agent id `agents.{name}.{self._id_key(name)}`.",
            ),
            "budget_agent_cap": (
                "Its overall budget cap is reached: users get the budget text, the "
                "agent is not called.",
                "raise the agent's cap in [budgets], or wait until it resets.",
            ),
        }.get(record.kind, ("", "look at the bridge's log."))
        return f"⚠️ **Agent `{name}`: {title}** since {since}.\n{what}\nWhat to do: {todo}"

    def _recovery_text(self, record: AlertRecord) -> str:
        since = _when(record.since)
        lasted = _duration(datetime.now(UTC) - record.since)
        if record.kind == DEGRADED:
            return f"✅ **agent-bridge is healthy again**, after {lasted} (degraded since {since})."
        title = TITLES.get(record.kind, record.kind)
        return (
            f"✅ **Agent `{record.subject}` answers again**, after {lasted} "
            f"({title} since {since})."
        )

    def _id_key(self, agent: str) -> str:
        backend = getattr(self._agents.get(agent), "backend", "")
        return ID_KEYS.get(str(backend), "agent_id")


def _key(item: _Occurred | _Cleared) -> tuple[str, ...]:
    if isinstance(item, _Occurred):
        return ("occurred", item.kind, item.subject)
    return ("cleared", item.subject, *item.kinds)


def _duration(span: timedelta) -> str:
    minutes = max(0, round(span.total_seconds() / 60))
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
