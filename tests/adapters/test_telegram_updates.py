"""Updates that Telegram (or something posing as it) should never send: one bad update
is logged, counted and skipped, and the messages around it are answered. The real
python-telegram-bot stack against `FakeTelegram`, the real dispatcher and store."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import adapters.telegram_polling as polling_module
from adapters.base import AdapterState
from adapters.telegram import TelegramAdapter
from bridge.app import Core
from tests.adapters.test_telegram import answered, free_port, make_config, running
from tests.fakes.agents import FakeAgentServer
from tests.fakes.telegram import ALICE, BOB, FakeError, FakeTelegram, private_text

PRIVATE = "PRIVATE-TEXT-of-another-user"


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as server:
        yield server


@pytest.fixture
async def agents() -> AsyncIterator[FakeAgentServer]:
    async with FakeAgentServer() as server:
        yield server


@pytest.fixture
async def bridge(
    tmp_path: Path, tg: FakeTelegram, agents: FakeAgentServer
) -> AsyncIterator[tuple[Core, TelegramAdapter]]:
    async with running(make_config(tmp_path, tg, agents)) as pair:
        yield pair


def webhook_config(tmp_path: Path, tg: FakeTelegram, agents: FakeAgentServer) -> Any:
    port = free_port()
    return make_config(
        tmp_path,
        tg,
        agents,
        mode="webhook",
        webhook_url=f"http://127.0.0.1:{port}/hook",
        webhook_secret="s3cret",
        listen=f"127.0.0.1:{port}",
    )


def bad_updates(core: Core) -> float:
    value: float = core.metrics.bad_updates.labels("telegram")._value.get()
    return value


def text_above_debug(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    """Log records at INFO or above, from any logger, that carry ``text``."""
    out = []
    for record in caplog.records:
        if record.levelno >= logging.INFO:
            line = record.getMessage() + (record.exc_text or "")
            if text in line:
                out.append(f"{record.name} {record.levelname}: {line[:200]}")
    return out


async def test_an_unparsable_update_in_a_batch_is_skipped_and_the_rest_answered(
    tg: FakeTelegram,
    bridge: tuple[Core, TelegramAdapter],
    caplog: pytest.LogCaptureFixture,
) -> None:
    core, adapter = bridge
    caplog.set_level(logging.DEBUG)
    # One batch (pushed without yielding): PTB cannot parse the first two. Bot.get_updates
    # would fail on the whole batch, again and again, and log it at CRITICAL.
    bad = {"message": {"message_id": 5, "date": 0, "chat": "not a chat", "text": PRIVATE}}
    bad_id = tg.push_raw(bad, set_id=True)
    tg.push_raw(["not", "an", "update", PRIVATE])
    good = tg.push(private_text(BOB, "still there?"))
    [reply] = await tg.wait_sent(BOB.id)
    assert reply.params["text"] == "echo: still there?"
    await tg.wait_confirmed(good["update_id"])
    assert bad_updates(core) == 2
    assert adapter.state is AdapterState.CONNECTED and adapter.problem is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"Telegram update {bad_id} could not be parsed (TypeError); skipped" in warnings
    # The content went to DEBUG only, from PTB's loggers as from ours.
    assert any(PRIVATE in r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG)
    assert text_above_debug(caplog, PRIVATE) == []


async def test_an_update_that_fails_while_handled_is_skipped_without_its_text(
    tg: FakeTelegram,
    bridge: tuple[Core, TelegramAdapter],
    caplog: pytest.LogCaptureFixture,
) -> None:
    core, _ = bridge
    caplog.set_level(logging.DEBUG)
    # PTB parses it (it checks no types), our rules then trip over the number.
    odd = private_text(ALICE, "x")
    odd["message"]["text"] = 12345
    odd["message"]["caption"] = PRIVATE
    tg.push(odd)
    reply = await answered(tg, private_text(ALICE, "after it"), ALICE.id)
    assert reply["text"] == "echo: after it"
    assert bad_updates(core) == 1
    assert any("could not be handled (AttributeError)" in r.getMessage() for r in caplog.records)
    assert text_above_debug(caplog, PRIVATE) == []


async def test_webhook_skips_what_it_cannot_read_with_200_and_counts_it(
    tmp_path: Path, tg: FakeTelegram, agents: FakeAgentServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with running(webhook_config(tmp_path, tg, agents)) as (core, _):
        # 200: Telegram would only send it again, just as unreadable.
        assert await tg.deliver_raw(b"{not json " + PRIVATE.encode()) == 200
        assert await tg.deliver_raw([PRIVATE]) == 200
        assert await tg.deliver_raw({"update_id": 7, "message": {"chat": [PRIVATE]}}) == 200
        assert bad_updates(core) == 3
        assert await tg.deliver(private_text(BOB, "genuine")) == 200
        [reply] = await tg.wait_sent(BOB.id)
        assert reply.params["text"] == "echo: genuine"
    assert text_above_debug(caplog, PRIVATE) == []


async def test_webhook_requests_without_the_secret_are_counted_and_logged_once_a_minute(
    tmp_path: Path, tg: FakeTelegram, agents: FakeAgentServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="adapters.telegram")
    async with running(webhook_config(tmp_path, tg, agents)) as (core, _):
        for _ in range(3):
            assert await tg.deliver(private_text(ALICE, "forged"), secret="wrong") == 403
        for _ in range(2):
            assert await tg.deliver(private_text(ALICE, "forged"), secret="") == 403
        rejected = core.metrics.rejected_requests
        assert rejected.labels(endpoint="telegram", reason="wrong_secret")._value.get() == 3
        assert rejected.labels(endpoint="telegram", reason="no_secret")._value.get() == 2
        assert tg.sent() == []
    lines = [r.getMessage() for r in caplog.records if "request refused" in r.getMessage()]
    assert len(lines) == 2, lines
    assert lines[0].startswith("Telegram webhook request refused: wrong secret (from 127.0.0.1")
    assert lines[1].startswith("Telegram webhook request refused: no secret")


async def test_problem_names_a_stuck_poll_and_clears_when_telegram_answers(
    tg: FakeTelegram,
    bridge: tuple[Core, TelegramAdapter],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, adapter = bridge
    assert adapter.poller is not None
    assert adapter.problem is None
    monkeypatch.setattr(polling_module, "POLL_BACKOFF", (0.05,))
    adapter.poller.stuck_after = 0.3
    tg.fail_always("getUpdates", FakeError(502, "Bad Gateway"))
    tg.push(private_text(ALICE, "wake the poller"))  # ends the long poll under way
    await tg.wait_for(lambda: adapter.problem is not None)
    problem = adapter.problem or ""
    assert problem.startswith("polling stuck: getUpdates failing for ")
    assert problem.endswith(" s (Bad Gateway)")
    tg.clear_failures()
    # The next getUpdates that comes back clears it.
    await answered(tg, private_text(ALICE, "back?"), ALICE.id)
    assert adapter.problem is None
