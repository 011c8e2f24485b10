"""Fixtures for the backend tests: the fake agent server, the real shared HTTP
client, and backends whose sleeps between retries are recorded instead of
waited (the HTTP traffic itself is real)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from bridge.backends import PeakaBackend, ThinnestBackend, create_http_client
from bridge.backends.http import HttpAgentBackend
from bridge.config import MessagesConfig
from tests.fakes.agents import FAKE_API_KEY, FakeAgentServer, peaka_config, thinnest_config

MESSAGES = MessagesConfig()


@pytest.fixture
async def agents() -> AsyncIterator[FakeAgentServer]:
    async with FakeAgentServer() as server:
        yield server


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with create_http_client() as http:
        yield http


@pytest.fixture
def sleeps() -> list[float]:
    """The waits between attempts, in order."""
    return []


@pytest.fixture
def fast_sleep(sleeps: list[float]) -> Callable[[float], Any]:
    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        await asyncio.sleep(0)

    return sleep


MakeBackend = Callable[..., HttpAgentBackend]


@pytest.fixture
def make_thinnest(
    agents: FakeAgentServer, client: httpx.AsyncClient, fast_sleep: Any
) -> MakeBackend:
    def make(
        *, url: str | None = None, name: str = "default", **overrides: Any
    ) -> HttpAgentBackend:
        config = thinnest_config(url or agents.url, **overrides)
        return ThinnestBackend(name, config, messages=MESSAGES, client=client, sleep=fast_sleep)

    return make


@pytest.fixture
def make_peaka(agents: FakeAgentServer, client: httpx.AsyncClient, fast_sleep: Any) -> MakeBackend:
    def make(
        *, url: str | None = None, name: str = "default", **overrides: Any
    ) -> HttpAgentBackend:
        config = peaka_config(url or agents.url, **overrides)
        return PeakaBackend(name, config, messages=MESSAGES, client=client, sleep=fast_sleep)

    return make


@pytest.fixture(params=["thinnest", "peaka"])
def make_backend(
    request: pytest.FixtureRequest, make_thinnest: MakeBackend, make_peaka: MakeBackend
) -> MakeBackend:
    """Either backend: error handling is shared, so it is tested on both."""
    return make_thinnest if request.param == "thinnest" else make_peaka


def assert_safe_user_text(text: str, *, url: str = "") -> None:
    """What a user sees holds no key, URL, address or exception text."""
    assert FAKE_API_KEY not in text
    assert "http" not in text.lower()
    assert "127.0.0.1" not in text
    if url:
        assert url not in text
    assert "Error" not in text  # no exception class names
    assert "Traceback" not in text
