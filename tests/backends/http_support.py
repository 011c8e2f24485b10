"""Fixtures of the ``backend = "http"`` tests: the fake platforms, and backends made
from a preset (or a custom config) pointed at them, on the real shared client,
with the waits between retries recorded instead of slept."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from bridge.backends import GenericHttpBackend, create_http_client
from bridge.config import HttpAgentConfig, MessagesConfig
from tests.fakes.agent_platforms import FakePlatforms, Platform, http_config

MESSAGES = MessagesConfig()

MakeHttp = Callable[..., GenericHttpBackend]


# Each fixture's function has its own name, so that a test module imports it (pytest
# finds fixtures in the module's namespace) without the parameter shadowing the import.


@pytest.fixture(name="fake")
async def fake_fixture() -> AsyncIterator[FakePlatforms]:
    async with FakePlatforms() as server:
        yield server


@pytest.fixture(name="http_client")
async def http_client_fixture() -> AsyncIterator[httpx.AsyncClient]:
    async with create_http_client() as client:
        yield client


@pytest.fixture(name="waits")
def waits_fixture() -> list[float]:
    return []


@pytest.fixture(name="make_http")
def make_http_fixture(
    fake: FakePlatforms, http_client: httpx.AsyncClient, waits: list[float]
) -> MakeHttp:
    """``make_http("dify", **overrides)`` or ``make_http(config=HttpAgentConfig(...))``."""

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        await asyncio.sleep(0)

    def make(
        platform: Platform | None = None,
        *,
        config: HttpAgentConfig | None = None,
        name: str = "default",
        **overrides: Any,
    ) -> GenericHttpBackend:
        if config is None:
            assert platform is not None
            config = http_config(platform, fake, **overrides)
        return GenericHttpBackend(name, config, messages=MESSAGES, client=http_client, sleep=sleep)

    return make
