"""One poller per bot token. `FakeTelegram` behaves as Telegram: a newer getUpdates
terminates a pending older one with 409 Conflict. Bridges on one database elect
the poller (a lease of the core's instance); an uncoordinated second poller fails
its start with what to do."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from adapters.telegram import TelegramAdapter
from adapters.telegram_polling import CONFLICT_HINT
from bridge.app import Core, open_core
from bridge.config import Config
from bridge.errors import AdapterError
from tests.adapters.test_telegram import answered, make_config
from tests.fakes.agents import FakeAgentServer
from tests.fakes.telegram import ALICE, BOB, CONFLICT, FakeTelegram, private_text


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as server:
        yield server


@pytest.fixture
async def agents() -> AsyncIterator[FakeAgentServer]:
    async with FakeAgentServer() as server:
        yield server


@contextlib.asynccontextmanager
async def bridge(config: Config) -> AsyncIterator[tuple[Core, TelegramAdapter]]:
    """A bridge as the daemon runs it (the real start-up conflict check included)."""
    async with open_core(config) as core:
        assert config.telegram is not None
        adapter = TelegramAdapter(core.dispatcher, config.telegram)
        core.dispatcher.register(adapter)
        async with adapter:
            yield core, adapter


def config_in(folder: Path, tg: FakeTelegram, agents: FakeAgentServer) -> Config:
    folder.mkdir(exist_ok=True)
    config = make_config(folder, tg, agents)
    # A short lease: a standby takes over within a second.
    storage = config.storage.model_copy(update={"lease_timeout": 1})
    return config.model_copy(update={"storage": storage})


async def test_an_uncoordinated_second_poller_fails_its_start_with_what_to_do(
    tmp_path: Path, tg: FakeTelegram, agents: FakeAgentServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="adapters.telegram")
    async with bridge(config_in(tmp_path / "one", tg, agents)) as (_, first):
        # Another database: nothing coordinates the two.
        with pytest.raises(AdapterError) as err:
            async with bridge(config_in(tmp_path / "two", tg, agents)):
                pass
        assert CONFLICT_HINT in str(err.value)
        assert "only one bot instance" in str(err.value)  # Telegram's own words
        # The first goes on polling and answering.
        reply = await answered(tg, private_text(ALICE, "still me?"), ALICE.id)
        assert reply["text"] == "echo: still me?"
        assert first.problem is None
    # The first saw its poll terminated once and said so, with the same hint.
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(CONFLICT_HINT in line for line in errors)
    assert tg.token not in "".join(r.getMessage() for r in caplog.records)


async def test_a_later_conflict_is_a_problem_logged_once_a_minute(
    tmp_path: Path, tg: FakeTelegram, agents: FakeAgentServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="adapters.telegram")
    async with bridge(config_in(tmp_path, tg, agents)) as (_, adapter):
        # Another bot program polls the same token, again and again.
        url = f"{tg.api_url}{tg.token}/getUpdates"
        async with httpx.AsyncClient() as client:

            async def rogue() -> None:
                while True:
                    await client.post(url, data={"timeout": "1"})

            task = asyncio.create_task(rogue())
            try:
                await tg.wait_for(lambda: (adapter.problem or "").startswith("polling conflict"))
                terminated = len(tg.calls_of("getUpdates"))
                await tg.wait_calls("getUpdates", count=terminated + 4)  # more conflicts
                assert CONFLICT in (adapter.problem or "")
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        reply = await answered(tg, private_text(ALICE, "alone again"), ALICE.id)
        assert reply["text"] == "echo: alone again"
        assert adapter.problem is None
    lines = [r for r in caplog.records if CONFLICT_HINT in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.ERROR


async def test_bridges_on_one_database_poll_one_at_a_time_and_a_standby_takes_over(
    tmp_path: Path, tg: FakeTelegram, agents: FakeAgentServer
) -> None:
    config = config_in(tmp_path, tg, agents)
    async with contextlib.AsyncExitStack() as stack:
        _, first = await stack.enter_async_context(bridge(config))
        assert first.poller is not None and first.poller.polling
        second_stack = await stack.enter_async_context(contextlib.AsyncExitStack())
        # Both bridges run in this one process, so the core takes the first for a dead
        # predecessor of the second (same pid) and frees its lease: the second polls,
        # the first stops within its trust window and stands by.
        _, second = await second_stack.enter_async_context(bridge(config))
        assert second.poller is not None and second.poller.polling
        await tg.wait_for(lambda: first.poller is not None and not first.poller.polling)
        reply = await answered(tg, private_text(ALICE, "who answers?"), ALICE.id)
        assert reply["text"] == "echo: who answers?"
        assert first.problem is None and second.problem is None

        # The poller stops: the standby takes over within the lease timeout.
        await second_stack.aclose()
        await tg.wait_for(lambda: first.poller is not None and first.poller.polling, within=5)
        reply = await answered(tg, private_text(BOB, "and now?"), BOB.id)
        assert reply["text"] == "echo: and now?"
        assert first.problem is None
