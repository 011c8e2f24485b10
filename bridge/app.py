"""The core's lifespan: store, instance (heartbeat and leases), HTTP client,
agent backends and dispatcher, opened in that order and closed in reverse, by
one `AsyncExitStack`.

``agent-bridge chat`` and ``agent-bridge run`` both stand on it; the daemon
adds the chat adapters on top.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import httpx

from bridge.backends import create_backends, create_http_client
from bridge.backends.base import AgentBackend
from bridge.budgets import Budgets, clock_from_env
from bridge.config import Config
from bridge.dispatcher import Dispatcher
from bridge.files import FileReader
from bridge.instance import Instance
from bridge.metrics import Metrics
from bridge.transcription import Transcriber
from storage.store import Store


@dataclass(frozen=True, slots=True)
class Core:
    config: Config
    store: Store
    http: httpx.AsyncClient
    backends: Mapping[str, AgentBackend]
    dispatcher: Dispatcher
    metrics: Metrics
    instance: Instance


@contextlib.asynccontextmanager
async def open_core(config: Config, *, metrics: Metrics | None = None) -> AsyncIterator[Core]:
    """Open the store (migrated), the shared HTTP client, the backends and the
    dispatcher; close them in reverse on exit, also when opening fails halfway."""
    metrics = metrics if metrics is not None else Metrics()
    async with contextlib.AsyncExitStack() as stack:
        store = await stack.enter_async_context(Store(config.storage.url))
        instance = await stack.enter_async_context(
            Instance(store, lease_timeout=config.storage.lease_timeout)
        )
        # One connection per agent call in flight: fewer would queue calls the
        # semaphore already let through; more would only sit idle.
        http = await stack.enter_async_context(
            create_http_client(max_connections=config.dispatcher.max_concurrency)
        )
        backends = create_backends(
            config.agents, messages=config.messages, client=http, history=store
        )
        for backend in backends.values():
            stack.push_async_callback(backend.aclose)
        voice = config.transcription
        files = FileReader(
            config.files,
            Transcriber(voice, http) if voice is not None else None,
            metrics=metrics,
            uses=store,
        )
        dispatcher = await stack.enter_async_context(
            Dispatcher(
                store,
                backends,
                config.dispatcher,
                config.messages,
                instance=instance,
                metrics=metrics,
                retention_days=config.storage.retention_days,
                poll_interval=config.storage.poll_interval,
                # The clock is replaced by tests only (bridge.budgets.TEST_CLOCK_ENV).
                budgets=Budgets(config.budgets, clock=clock_from_env(os.environ)),
                files=files,
            )
        )
        yield Core(config, store, http, backends, dispatcher, metrics, instance)
