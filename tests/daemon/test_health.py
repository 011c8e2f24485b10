"""/healthz and /metrics over real HTTP, on the real core (store, dispatcher, echo agent)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from adapters.base import AdapterState, ChatAdapter
from bridge.app import Core, open_core
from bridge.config import Config, parse_config
from bridge.errors import StorageError
from bridge.health import HealthServer, HealthServerError
from bridge.metrics import Metrics
from bridge.model import ConversationKey, InboxMessage, IncomingMessage, Reply
from storage.store import Store
from tests.ports import free_port


class LoopbackAdapter(ChatAdapter):
    """A platform whose connection state the test sets by hand."""

    platform = "loopback"

    def __init__(self, core: Core) -> None:
        super().__init__(core.dispatcher)
        self.replies: list[Reply] = []
        self.trouble: str | None = None

    @property
    def problem(self) -> str | None:
        return self.trouble

    async def start(self) -> None:
        self.state = AdapterState.CONNECTED

    async def stop(self) -> None:
        self.state = AdapterState.STOPPED

    async def send_reply(self, message: InboxMessage, reply: Reply) -> None:
        self.replies.append(reply)


@dataclass
class Running:
    core: Core
    adapter: LoopbackAdapter
    health: HealthServer
    http: httpx.AsyncClient


def make_config(tmp_path: Path) -> Config:
    return parse_config(
        {
            "storage": {"url": f"sqlite+aiosqlite:///{tmp_path / 'bridge.db'}"},
            "agents": {"default": {"backend": "echo"}},
        },
        base_dir=tmp_path,
    )


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    metrics = Metrics()
    async with open_core(make_config(tmp_path), metrics=metrics) as core:
        adapter = LoopbackAdapter(core)
        core.dispatcher.register(adapter)
        async with adapter:
            health = HealthServer(
                f"127.0.0.1:{free_port()}",
                store=core.store,
                dispatcher=core.dispatcher,
                adapters=[adapter],
                metrics=metrics,
                stuck_after=300,
                instance_id=core.instance.id,
            )
            async with (
                health,
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{health.port}") as http,
            ):
                yield Running(core, adapter, health, http)


async def test_healthz_is_200_when_all_is_well(running: Running) -> None:
    response = await running.http.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "adapters": {"loopback": "connected"},
        "database": "ok",
        "queue_depth": 0,
        "in_flight": 0,
        "unfinished": 0,
        "oldest_wait": 0,
        "instance": running.core.instance.id,
        "problems": [],
    }


async def test_healthz_flips_with_the_adapter_connection(running: Running) -> None:
    running.adapter.state = AdapterState.DISCONNECTED
    response = await running.http.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unhealthy"
    assert body["adapters"] == {"loopback": "disconnected"}
    assert body["problems"] == ["loopback: disconnected"]

    running.adapter.state = AdapterState.CONNECTED
    assert (await running.http.get("/healthz")).status_code == 200


async def test_healthz_names_an_unreachable_database(running: Running, tmp_path: Path) -> None:
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'bridge.db'}")
    await store.open(migrate=False)
    running.health.store = store
    assert (await running.http.get("/healthz")).status_code == 200
    await store.close()  # the database no longer answers
    response = await running.http.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["database"].startswith("unreachable: ")
    assert body["problems"] == [f"database: {body['database']}"]


async def test_healthz_names_what_an_adapter_reports(running: Running) -> None:
    running.adapter.trouble = "polling stuck: getUpdates failing for 95 s"
    response = await running.http.get("/healthz")
    assert response.status_code == 503
    assert response.json()["problems"] == ["loopback: polling stuck: getUpdates failing for 95 s"]


async def test_healthz_is_503_while_a_message_waits_too_long(
    running: Running, tmp_path: Path
) -> None:
    # A message no adapter here can answer: it waits, and health says so.
    await running.core.store.accept(
        IncomingMessage(ConversationKey("elsewhere", "s", "c"), "ev-1", "u", "hi", "default")
    )
    assert (await running.http.get("/healthz")).status_code == 200
    # As SQLAlchemy stores it on SQLite (sqlite3's datetime adapter is deprecated).
    long_ago = (datetime.now(UTC) - timedelta(minutes=10)).replace(tzinfo=None).isoformat(" ")
    await sql(tmp_path, "UPDATE messages SET created_at = :t", t=long_ago)
    response = await running.http.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["unfinished"] == 1 and body["oldest_wait"] >= 600
    [problem] = body["problems"]
    assert problem.startswith("stuck: the oldest unanswered message has waited 6")
    metrics = (await running.http.get("/metrics")).text
    assert "agent_bridge_unfinished_messages 1.0" in metrics
    assert "agent_bridge_oldest_unfinished_seconds 6" in metrics


async def test_healthz_is_503_while_store_writes_fail(running: Running, tmp_path: Path) -> None:
    await sql(tmp_path, "ALTER TABLE messages RENAME TO messages_away")
    message = IncomingMessage(ConversationKey("loopback", "t", "c"), "ev-1", "u", "hi", "default")
    with pytest.raises(StorageError):
        await running.core.dispatcher.submit(message)
    response = await running.http.get("/healthz")
    assert response.status_code == 503
    assert any(p.startswith("store: cannot accept a message") for p in response.json()["problems"])
    await sql(tmp_path, "ALTER TABLE messages_away RENAME TO messages")
    assert await running.core.dispatcher.submit(message)
    assert (await running.http.get("/healthz")).status_code == 200
    assert "agent_bridge_store_errors_total 1.0" in (await running.http.get("/metrics")).text


async def sql(tmp_path: Path, statement: str, **params: object) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'bridge.db'}")
    try:
        async with engine.begin() as conn:
            await conn.execute(text(statement), params)
    finally:
        await engine.dispose()


async def test_healthz_is_503_while_stopping(running: Running) -> None:
    running.health.stopping = True
    response = await running.http.get("/healthz")
    assert response.status_code == 503
    assert response.json()["problems"] == ["stopping"]


async def test_metrics_move_with_traffic(running: Running) -> None:
    before = await running.http.get("/metrics")
    assert before.status_code == 200
    assert before.headers["content-type"].startswith("text/plain")
    assert 'agent_bridge_messages_received_total{platform="loopback"}' not in before.text

    for n in range(3):
        await running.core.dispatcher.submit(
            IncomingMessage(
                key=ConversationKey("loopback", "test", "chat-1"),
                event_id=f"event-{n}",
                sender="alice",
                text=f"hello {n}",
                agent="default",
            )
        )
    await running.core.dispatcher.wait_idle()
    assert len(running.adapter.replies) == 3

    after = (await running.http.get("/metrics")).text
    assert 'agent_bridge_messages_received_total{platform="loopback"} 3.0' in after
    assert 'agent_bridge_messages_answered_total{platform="loopback"} 3.0' in after
    assert 'agent_bridge_agent_call_seconds_count{agent="default"} 3.0' in after
    assert "agent_bridge_queue_depth 0.0" in after
    assert "agent_bridge_agent_calls_in_flight 0.0" in after


async def test_a_busy_port_is_one_clear_error(running: Running) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = HealthServer(
            f"127.0.0.1:{port}",
            store=running.core.store,
            dispatcher=running.core.dispatcher,
            adapters=[running.adapter],
            metrics=running.core.metrics,
        )
        with pytest.raises(
            HealthServerError, match=rf"daemon.http_listen: cannot listen on 127.0.0.1:{port}"
        ):
            await server.start()
