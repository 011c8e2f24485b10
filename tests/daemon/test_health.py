"""/healthz and /metrics over real HTTP, on the real core (store, dispatcher, echo agent)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from adapters.base import AdapterState, ChatAdapter
from bridge.app import Core, open_core
from bridge.config import Config, parse_config
from bridge.health import HealthServer, HealthServerError
from bridge.metrics import Metrics
from bridge.model import ConversationKey, InboxMessage, IncomingMessage, Reply
from storage.store import Store
from tests.daemon.conftest import free_port


class LoopbackAdapter(ChatAdapter):
    """A platform whose connection state the test sets by hand."""

    platform = "loopback"

    def __init__(self, core: Core) -> None:
        super().__init__(core.dispatcher)
        self.replies: list[Reply] = []

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
