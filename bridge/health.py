"""The daemon's small HTTP server: ``/healthz`` and ``/metrics``.

Off unless ``[daemon] http_listen = "host:port"`` is set. Bind it to
127.0.0.1 (or a private interface): it needs no authentication because it
reveals no message, no secret, only states and counters.

``/healthz`` says what users feel: 200 when every adapter is connected and
well, the database answers and takes writes, and no message waits too long;
503 otherwise, with a small JSON body naming each problem::

    {"status": "ok", "adapters": {"telegram": "connected"}, "database": "ok",
     "queue_depth": 0, "in_flight": 0, "unfinished": 0, "oldest_wait": 0,
     "instance": "3f2a...", "problems": []}

Problems: an adapter not connected, or reporting one (``telegram: polling
stuck: ...``); the database unreachable; the last store write failed (``store:
cannot save a reply ...``, until a write succeeds again); the oldest unfinished
message (any instance's) waiting longer than ``daemon.stuck_after``
(``stuck: the oldest unanswered message has waited 412 s``); shutting down.

``/metrics``: the Prometheus text exposition of `bridge.metrics.Metrics`; the
queue gauges (unfinished, oldest age, parked replies, leases, in flight) are
read at scrape time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self

from bridge.config import split_listen
from bridge.errors import BridgeError
from bridge.metrics import CONTENT_TYPE, Metrics
from bridge.web import ListenError, serve

if TYPE_CHECKING:
    from aiohttp import web

log = logging.getLogger("bridge.health")

#: How long /healthz waits for the database before calling it unreachable.
PING_TIMEOUT = 3.0


class HealthServerError(BridgeError):
    """The health server could not listen (address in use, bad interface)."""


class _QueueStats(Protocol):
    @property
    def unfinished(self) -> int: ...

    @property
    def oldest_created_at(self) -> datetime | None: ...

    @property
    def parked(self) -> int: ...


class _Store(Protocol):
    async def ping(self) -> None: ...

    async def stats(self) -> _QueueStats: ...


class _Adapter(Protocol):
    @property
    def platform(self) -> str: ...

    @property
    def state(self) -> object: ...

    @property
    def healthy(self) -> bool: ...

    @property
    def problem(self) -> str | None: ...


class _Dispatcher(Protocol):
    @property
    def queue_depth(self) -> int: ...

    @property
    def in_flight(self) -> int: ...

    @property
    def store_problem(self) -> str | None: ...


class HealthServer:
    """``async with HealthServer(...)`` listens; leaving the block stops it."""

    def __init__(
        self,
        listen: str,
        *,
        store: _Store,
        dispatcher: _Dispatcher,
        adapters: Sequence[_Adapter],
        metrics: Metrics,
        stuck_after: float = 300.0,
        instance_id: str = "",
    ) -> None:
        self.listen = listen
        self.host, self.port = split_listen(listen)
        self.store = store
        self.dispatcher = dispatcher
        self.adapters = list(adapters)
        self.metrics = metrics
        self.stuck_after = stuck_after
        self.instance_id = instance_id
        #: Set by the daemon when it starts shutting down: /healthz then says 503
        #: so that a balancer or a probe stops counting on this instance.
        self.stopping = False
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        from aiohttp import web  # only with http_listen set (`bridge.web`)

        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        try:
            self._runner = await serve(app, self.listen)
        except ListenError as exc:
            raise HealthServerError(f"daemon.http_listen: {exc}") from exc
        log.info("serving /healthz and /metrics on http://%s", self.listen)

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def health(self) -> tuple[bool, dict[str, Any]]:
        """The health report: (all well, JSON body)."""
        problems: list[str] = []
        adapters: dict[str, str] = {}
        for adapter in self.adapters:
            adapters[adapter.platform] = str(adapter.state)
            if not adapter.healthy:
                problems.append(f"{adapter.platform}: {adapter.state}")
            elif adapter.problem:
                problems.append(f"{adapter.platform}: {adapter.problem}")
        stats = None
        try:
            async with asyncio.timeout(PING_TIMEOUT):
                await self.store.ping()
                stats = await self.store.stats()
            database = "ok"
        except TimeoutError:
            database = f"unreachable: no answer within {PING_TIMEOUT:g} s"
        except BridgeError as exc:
            database = f"unreachable: {exc}"
        if database != "ok":
            problems.append(f"database: {database}")
        if self.dispatcher.store_problem:
            problems.append(f"store: {self.dispatcher.store_problem}")
        oldest_wait = 0.0
        if stats is not None:
            oldest_wait = self._refresh_gauges(stats)
            if oldest_wait > self.stuck_after:
                problems.append(
                    f"stuck: the oldest unanswered message has waited {oldest_wait:.0f} s "
                    f"(daemon.stuck_after = {self.stuck_after:g})"
                )
        if self.stopping:
            problems.append("stopping")
        body: dict[str, Any] = {
            "status": "ok" if not problems else "unhealthy",
            "adapters": adapters,
            "database": database,
            "queue_depth": self.dispatcher.queue_depth,
            "in_flight": self.dispatcher.in_flight,
            "unfinished": stats.unfinished if stats is not None else None,
            "oldest_wait": round(oldest_wait, 1),
            "instance": self.instance_id,
            "problems": problems,
        }
        return not problems, body

    def _refresh_gauges(self, stats: _QueueStats) -> float:
        oldest = stats.oldest_created_at
        wait = max(0.0, (datetime.now(UTC) - oldest).total_seconds()) if oldest else 0.0
        self.metrics.unfinished.set(stats.unfinished)
        self.metrics.oldest_unfinished.set(wait)
        self.metrics.parked_replies.set(stats.parked)
        return wait

    async def _healthz(self, request: web.Request) -> web.Response:
        from aiohttp import web

        ok, body = await self.health()
        return web.json_response(body, status=200 if ok else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        from aiohttp import web

        self.metrics.queue_depth.set(self.dispatcher.queue_depth)
        self.metrics.in_flight.set(self.dispatcher.in_flight)
        try:
            async with asyncio.timeout(PING_TIMEOUT):
                self._refresh_gauges(await self.store.stats())
        except (TimeoutError, BridgeError) as exc:
            log.debug("queue gauges not refreshed: %s", exc)
        return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE})
