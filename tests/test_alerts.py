"""`bridge.alerts.Alerter` on the real store (SQLite) with an in-process adapter that
records its notices: the texts, a failed send tried again at the next occurrence, the
degraded health (read from the real `HealthServer` report) and its recovery."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bridge.alerts import Alerter
from bridge.chat import AdapterState, ChatAdapter
from bridge.config import AlertsConfig, parse_config
from bridge.errors import AdapterError
from bridge.health import HealthServer
from bridge.metrics import Metrics
from bridge.model import InboxMessage, Reply
from storage.store import Store

AGENTS = parse_config(
    {
        "agents": {
            "default": {"backend": "thinnest", "agent_id": "ag_1", "api_key": "ak_secret_1"},
            "helper": {"backend": "peaka", "project_id": "p_1", "api_key": "ak_secret_2"},
        }
    },
    base_dir=Path("/tmp"),
    environ={},
).agents


class NoticeBoard(ChatAdapter):
    """Records the notices posted; fails the next ``fail_next`` of them."""

    platform = "telegram"

    def __init__(self) -> None:
        super().__init__(dispatcher=None)  # type: ignore[arg-type]
        self.notices: list[tuple[str, str]] = []
        self.fail_next = 0
        self.state = AdapterState.CONNECTED
        self._changed = asyncio.Condition()

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def send_reply(self, message: InboxMessage, reply: Reply) -> None: ...

    async def post_notice(self, chat: str, text: str) -> None:
        if self.fail_next:
            self.fail_next -= 1
            raise AdapterError("telegram", "sendMessage failed: Timed out")
        async with self._changed:
            self.notices.append((chat, text))
            self._changed.notify_all()

    async def wait_notices(self, count: int) -> list[str]:
        async with self._changed:
            await asyncio.wait_for(
                self._changed.wait_for(lambda: len(self.notices) >= count), timeout=10
            )
        return [text for _, text in self.notices]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with Store(f"sqlite+aiosqlite:///{tmp_path}/bridge.db") as opened:
        yield opened


def alerter(store: Store, board: NoticeBoard, metrics: Metrics, **kwargs: Any) -> Alerter:
    config = AlertsConfig(telegram_chat=-100, repeat_after=3600, degraded_after=60)
    return Alerter(config, store, {"telegram": board}, metrics, agents=AGENTS, **kwargs)


def sent(metrics: Metrics, kind: str) -> float:
    value = metrics.registry.get_sample_value("agent_bridge_alerts_sent_total", {"kind": kind})
    return value or 0.0


async def test_each_kind_says_what_to_do_and_never_the_key(store: Store) -> None:
    board, metrics = NoticeBoard(), Metrics()
    async with alerter(store, board, metrics) as alerts:
        alerts.observe("default", "unauthorized")
        alerts.observe("helper", "not_found")
        alerts.observe("default", "budget_agent_cap")
        alerts.observe("default", "rate_limited")  # passes by itself: no alert
        alerts.observe("default", "unauthorized")  # within repeat_after: no second one
        await alerts.idle.wait()
    texts = [text for _, text in board.notices]
    assert len(texts) == 3
    assert "`default`" in texts[0] and "agents.default.api_key" in texts[0]
    assert "`helper`" in texts[1] and "agents.helper.project_id" in texts[1]
    assert "budget cap" in texts[2] and "[budgets]" in texts[2]
    assert all("since" in t and "UTC" in t and "ak_secret" not in t for t in texts)
    assert {c for c, _ in board.notices} == {"-100"}
    assert sent(metrics, "unauthorized") == 1 and sent(metrics, "rate_limited") == 0


async def test_a_failed_send_is_tried_again_at_the_next_occurrence(store: Store) -> None:
    board, metrics = NoticeBoard(), Metrics()
    board.fail_next = 1
    async with alerter(store, board, metrics) as alerts:
        alerts.observe("default", "insufficient_balance")
        await alerts.idle.wait()
        assert board.notices == [] and sent(metrics, "insufficient_balance") == 0
        alerts.observe("default", "insufficient_balance")
        [alert] = await board.wait_notices(1)
        assert "top up the balance" in alert
        alerts.observe("default", None)
        recovery = (await board.wait_notices(2))[1]
        assert "answers again" in recovery and "`default`" in recovery
    assert sent(metrics, "insufficient_balance") == 1 and sent(metrics, "recovery") == 1


async def test_an_answer_without_a_problem_sends_nothing(store: Store) -> None:
    board = NoticeBoard()
    async with alerter(store, board, Metrics()) as alerts:
        for _ in range(3):
            alerts.observe("default", None)
        await alerts.idle.wait()
    assert board.notices == []


async def test_degraded_only_after_degraded_after_then_its_recovery(store: Store) -> None:
    board, now = NoticeBoard(), [1000.0]
    async with alerter(store, board, Metrics(), clock=lambda: now[0]) as alerts:
        alerts.health_seen(["slack: disconnected"])
        now[0] += 59
        alerts.health_seen(["slack: disconnected"])
        await alerts.idle.wait()
        assert board.notices == []
        now[0] += 2
        alerts.health_seen(["slack: disconnected", "stuck: the oldest ... 400 s"])
        [alert] = await board.wait_notices(1)
        assert "degraded" in alert and "slack: disconnected" in alert and "stuck" in alert
        alerts.health_seen([])
        recovery = (await board.wait_notices(2))[1]
        assert "healthy again" in recovery


async def test_the_health_watch_reads_the_health_report(store: Store) -> None:
    """A disconnected adapter, as the real `HealthServer` reports it (never listening)."""
    board, metrics = NoticeBoard(), Metrics()

    class Quiet:
        queue_depth = 0
        in_flight = 0
        store_problem = None

    board.state = AdapterState.DISCONNECTED
    health = HealthServer(
        "127.0.0.1:0", store=store, dispatcher=Quiet(), adapters=[board], metrics=metrics
    )
    config = AlertsConfig(telegram_chat=-100, degraded_after=0.2)
    async with Alerter(config, store, {"telegram": board}, metrics, probe=health.health):
        [alert] = await board.wait_notices(1)
        assert "telegram: disconnected" in alert
        board.state = AdapterState.CONNECTED
        assert "healthy again" in (await board.wait_notices(2))[1]
    assert sent(metrics, "degraded") == 1 and sent(metrics, "recovery") == 1
