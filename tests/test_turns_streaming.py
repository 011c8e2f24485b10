"""The dispatcher's side of streamed answers (`bridge.turns`): a `ScriptedAgent` held by
events, the real store (SQLite), and a recording adapter whose `LiveAnswer` notes every
call with the message's stored status at that moment."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import bridge.stream
from adapters.base import ChatAdapter
from bridge.app import Core
from bridge.config import Config, parse_config
from bridge.model import ConversationKey, InboxMessage, IncomingMessage, Reply
from bridge.stream import LiveAnswer, StatusLine
from tests.fakes.scripted_agent import ScriptedAgent, open_scripted_core, out_of_credit

INTERVAL = 0.1
_ids = itertools.count(1)


@pytest.fixture(autouse=True)
def quick_live(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bridge.stream, "LIVE_INTERVAL", INTERVAL)


class Live(LiveAnswer):
    def __init__(
        self, log: list[tuple[str, Any, float]], changed: asyncio.Event, *, broken: bool
    ) -> None:
        self.log = log
        self.broken = broken
        self.changed = changed

    async def show(self, text: str) -> None:
        self.log.append(("show", text, time.monotonic()))
        self.changed.set()
        if self.broken:
            raise RuntimeError("the platform is down")

    async def status(self, text: str) -> None:
        self.log.append(("status", text, time.monotonic()))

    async def close(self) -> None:
        self.log.append(("close", None, time.monotonic()))


class LiveAdapter(ChatAdapter):
    platform = "test"

    def __init__(self, dispatcher: Any, *, live: bool = True, broken: bool = False) -> None:
        super().__init__(dispatcher)
        self.log: list[tuple[str, Any, float]] = []
        self.with_live = live
        self.broken = broken
        self.changed = asyncio.Event()
        self.replies: list[Reply] = []
        self.done = asyncio.Event()

    async def start(self) -> None: ...
    async def stop(self) -> None: ...

    def live(self, message: InboxMessage) -> LiveAnswer | None:
        if not self.with_live:
            return None
        return Live(self.log, self.changed, broken=self.broken)

    async def send_reply(self, message: InboxMessage, reply: Reply) -> None:
        self.log.append(("send", reply.text, time.monotonic()))
        self.replies.append(reply)
        self.done.set()

    def shows(self) -> list[str]:
        return [text for what, text, _ in self.log if what == "show"]

    async def wait_shown(self, text: str) -> None:
        while not self.shows() or self.shows()[-1] != text:
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), 5)


def make_config(tmp_path: Path) -> Config:
    return parse_config(
        {
            "storage": {"url": f"sqlite+aiosqlite:///{tmp_path}/bridge.db"},
            "agents": {"default": {"backend": "echo"}},
        },
        base_dir=tmp_path,
    )


@contextlib.asynccontextmanager
async def running(
    tmp_path: Path, agent: ScriptedAgent, **adapter: Any
) -> AsyncIterator[tuple[Core, LiveAdapter]]:
    async with open_scripted_core(make_config(tmp_path), agent) as core:
        chat = LiveAdapter(core.dispatcher, **adapter)
        core.dispatcher.register(chat)
        await core.dispatcher.resume()
        yield core, chat


async def ask(core: Core, text: str = "hi") -> None:
    await core.dispatcher.submit(
        IncomingMessage(
            key=ConversationKey("test", "s", "c1", None),
            event_id=f"e{next(_ids)}",
            sender="u1",
            text=text,
            agent="default",
        )
    )


async def test_text_is_shown_throttled_then_stored_posted_and_closed(tmp_path: Path) -> None:
    held, burst_done = asyncio.Event(), asyncio.Event()
    burst = [f" {i}" for i in range(100)]
    agent = ScriptedAgent()
    agent.play("One", held, *burst, StatusLine("Using tool: search"), burst_done, " end")
    async with running(tmp_path, agent) as (core, chat):
        await ask(core)
        await chat.wait_shown("One")
        held.set()
        so_far = "One" + "".join(burst)
        await chat.wait_shown(so_far)
        assert len(chat.shows()) <= 3  # 100 deltas at once: not one show per delta
        assert chat.replies == []
        burst_done.set()
        await asyncio.wait_for(chat.done.wait(), 5)
        await core.dispatcher.wait_idle()
    final = so_far + " end"
    assert [r.text for r in chat.replies] == [final]
    whats = [what for what, _, _ in chat.log]
    # The last text is shown before the reply is posted; the view is closed after.
    assert chat.shows()[-1] == final
    assert whats[-2:] == ["send", "close"]
    assert ("status", "Using tool: search") in [(w, t) for w, t, _ in chat.log]
    times = [at for what, _, at in chat.log if what == "show"]
    assert all(b - a >= INTERVAL * 0.9 for a, b in itertools.pairwise(times))


async def test_the_reply_is_stored_before_it_is_posted(tmp_path: Path) -> None:
    agent = ScriptedAgent()
    agent.play("Hello", " world")
    async with running(tmp_path, agent) as (core, chat):
        stored: list[Any] = []

        async def send_reply(message: InboxMessage, reply: Reply) -> None:
            [unfinished] = await core.store.unfinished()
            stored.append((unfinished.status.value, unfinished.reply_text))
            chat.done.set()

        chat.send_reply = send_reply  # type: ignore[method-assign]
        await ask(core)
        await asyncio.wait_for(chat.done.wait(), 5)
        await core.dispatcher.wait_idle()
    assert stored == [("answered", "Hello world")]


async def test_without_a_live_view_the_final_reply_is_all(tmp_path: Path) -> None:
    agent = ScriptedAgent()
    agent.play("Hello", " world")
    async with running(tmp_path, agent, live=False) as (core, chat):
        await ask(core)
        await asyncio.wait_for(chat.done.wait(), 5)
        await core.dispatcher.wait_idle()
    assert [r.text for r in chat.replies] == ["Hello world"]
    assert [what for what, _, _ in chat.log] == ["send"]


async def test_a_backend_that_does_not_stream_is_asked_as_before(tmp_path: Path) -> None:
    agent = ScriptedAgent(streaming=False)
    agent.play("Hello", " world")
    async with running(tmp_path, agent) as (core, chat):
        await ask(core)
        await asyncio.wait_for(chat.done.wait(), 5)
        await core.dispatcher.wait_idle()
    assert [r.text for r in chat.replies] == ["Hello world"]
    assert [what for what, _, _ in chat.log] == ["send", "close"]


@pytest.mark.parametrize("live", [True, False])
async def test_an_error_mid_stream_keeps_what_was_shown(tmp_path: Path, live: bool) -> None:
    held = asyncio.Event()
    agent = ScriptedAgent()
    agent.play("Half", held, out_of_credit())
    async with running(tmp_path, agent, live=live) as (core, chat):
        await ask(core)
        if live:
            await chat.wait_shown("Half")
        else:
            await asyncio.wait_for(agent.began.wait(), 5)
        held.set()
        await asyncio.wait_for(chat.done.wait(), 5)
        await core.dispatcher.wait_idle()
    [reply] = chat.replies
    assert reply.error_kind == "insufficient_balance"
    # Shown text stays, with the reason it stops; unseen text is not posted.
    expected = "Half\n\nThe agent is out of credit." if live else "The agent is out of credit."
    assert reply.text == expected


async def test_a_failing_live_view_costs_only_the_view(tmp_path: Path) -> None:
    held = asyncio.Event()
    agent = ScriptedAgent()
    agent.play("Hello", held, " world")
    async with running(tmp_path, agent, broken=True) as (core, chat):
        await ask(core)
        await chat.wait_shown("Hello")
        held.set()
        await asyncio.wait_for(chat.done.wait(), 5)
        await core.dispatcher.wait_idle()
    assert [r.text for r in chat.replies] == ["Hello world"]
