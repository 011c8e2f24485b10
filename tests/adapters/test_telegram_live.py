"""Streamed answers on Telegram: drafts in private chats (``sendMessageDraft``), then the
final message. The real python-telegram-bot stack against `FakeTelegram`, the real
dispatcher and store (SQLite), a `ScriptedAgent` held by events: no sleeps."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import bridge.stream
from adapters.telegram import TelegramAdapter
from bridge.app import Core
from bridge.config import Config, parse_config
from tests.fakes.scripted_agent import ScriptedAgent, open_scripted_core, out_of_credit
from tests.fakes.telegram import (
    ALICE,
    GROUP_ID,
    FakeError,
    FakeTelegram,
    group_mention,
    private_text,
)

INTERVAL = 0.2


@pytest.fixture(autouse=True)
def quick_live(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bridge.stream, "LIVE_INTERVAL", INTERVAL)


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as server:
        yield server


def make_config(tmp_path: Path, tg: FakeTelegram) -> Config:
    return parse_config(
        {
            "storage": {"url": f"sqlite+aiosqlite:///{tmp_path}/bridge.db"},
            "agents": {
                "default": {
                    "backend": "thinnest",
                    "agent_id": "ag_fake",
                    "api_key": "ak_fake",
                    "base_url": "http://127.0.0.1:9",
                }
            },
            "telegram": {
                "bot_token": tg.token,
                "api_url": tg.api_url,
                "allowed_users": [ALICE.id],
                "allowed_chats": [GROUP_ID],
            },
        },
        base_dir=tmp_path,
    )


@contextlib.asynccontextmanager
async def running(config: Config, agent: ScriptedAgent) -> AsyncIterator[Core]:
    async with open_scripted_core(config, agent) as core:
        assert config.telegram is not None
        adapter = TelegramAdapter(core.dispatcher, config.telegram)
        adapter.start_poll_timeout = 0.1
        core.dispatcher.register(adapter)
        async with adapter:
            await core.dispatcher.resume()
            yield core


def drafts(tg: FakeTelegram) -> list[Any]:
    return [c for c in tg.calls_of("sendMessageDraft") if c.ok]


def draft_texts(tg: FakeTelegram) -> list[str]:
    return [c.params.get("text") or "" for c in drafts(tg)]


async def test_private_chat_streams_drafts_then_one_final_message(
    tmp_path: Path, tg: FakeTelegram
) -> None:
    held, burst_done = asyncio.Event(), asyncio.Event()
    burst = [f" w{i}" for i in range(60)]
    agent = ScriptedAgent()
    agent.play("Hello", " **there**", held, *burst, burst_done, " end.")
    async with running(make_config(tmp_path, tg), agent):
        tg.push(private_text(ALICE, "hi"))
        # Held after two deltas: the draft shows them (rendered: bold as an entity).
        await tg.wait_for(lambda: draft_texts(tg)[-1:] == ["Hello there"])
        assert tg.sent(ALICE.id) == []
        before = len(drafts(tg))
        held.set()
        so_far = "Hello there" + "".join(burst)
        await tg.wait_for(lambda: draft_texts(tg)[-1:] == [so_far])
        # 60 deltas at once: one draft for the newest text (two at most, if the
        # interval had passed for the first of them), not one per delta.
        assert len(drafts(tg)) - before <= 2
        burst_done.set()
        [final] = await tg.wait_sent(ALICE.id)
    assert final.params["text"] == so_far + " end."
    assert any(e["type"] == "bold" for e in final.params.get("entities") or [])
    calls = drafts(tg)
    texts = [c.params["text"] for c in calls]
    assert all(b.startswith(a) for a, b in itertools.pairwise(texts))  # in order
    assert {c.params["draft_id"] for c in calls} == {calls[0].params["draft_id"]} != {0}
    gaps = [b.at - a.at for a, b in itertools.pairwise(calls)]
    assert all(gap >= INTERVAL * 0.9 for gap in gaps), gaps  # at most ~1/INTERVAL a second
    # The draft is replaced by the message, and the last text was drafted before it.
    assert tg.drafts == {}
    assert calls[-1].at < final.at
    assert texts[-1] == so_far + " end."


async def test_group_gets_no_draft(tmp_path: Path, tg: FakeTelegram) -> None:
    agent = ScriptedAgent()
    agent.play("Hello", " group")
    async with running(make_config(tmp_path, tg), agent):
        tg.push(group_mention(ALICE, "hi"))
        [final] = await tg.wait_sent(GROUP_ID)
    assert final.params["text"] == "Hello group"
    assert tg.calls_of("sendMessageDraft") == []


async def test_failing_drafts_cost_only_the_drafts(tmp_path: Path, tg: FakeTelegram) -> None:
    tg.fail_always("sendMessageDraft", FakeError(400, "Bad Request: draft refused"))
    held = asyncio.Event()
    agent = ScriptedAgent()
    agent.play("Hello", held, " world")
    async with running(make_config(tmp_path, tg), agent):
        tg.push(private_text(ALICE, "hi"))
        await tg.wait_calls("sendMessageDraft")
        held.set()
        [final] = await tg.wait_sent(ALICE.id)
    assert final.params["text"] == "Hello world"


async def test_error_mid_stream_keeps_the_text_shown(tmp_path: Path, tg: FakeTelegram) -> None:
    held = asyncio.Event()
    agent = ScriptedAgent()
    agent.play("Half an answer", held, out_of_credit())
    async with running(make_config(tmp_path, tg), agent):
        tg.push(private_text(ALICE, "hi"))
        await tg.wait_for(lambda: draft_texts(tg)[-1:] == ["Half an answer"])
        held.set()
        [final] = await tg.wait_sent(ALICE.id)
    assert final.params["text"] == "Half an answer\n\nThe agent is out of credit."
    with contextlib.closing(sqlite3.connect(tmp_path / "bridge.db")) as db:
        rows = db.execute("SELECT status, error_kind, reply_text FROM messages").fetchall()
    assert rows == [("failed", "insufficient_balance", final.params["text"])]
