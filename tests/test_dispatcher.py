"""The dispatcher against the real store (SQLite), the real backends and the fake
agent APIs; the adapter is a small recording `ChatAdapter`."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from adapters.base import ChatAdapter
from bridge.app import Core, open_core
from bridge.config import Config, parse_config
from bridge.errors import AdapterError
from bridge.instance import host_identity
from bridge.model import ConversationKey, InboxMessage, IncomingMessage, MessageStatus, Reply
from storage.store import Store
from tests.fakes.agents import FAKE_API_KEY, FakeAgentServer, FakeResponse

_ids = itertools.count(1)


class RecordingAdapter(ChatAdapter):
    platform = "test"

    def __init__(self, dispatcher: Any) -> None:
        super().__init__(dispatcher)
        self.replies: list[tuple[InboxMessage, Reply]] = []
        self.fail_next = 0
        self.failures = 0
        self.working_for: list[int] = []
        self._changed = asyncio.Condition()

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    @contextlib.asynccontextmanager
    async def working(self, message: InboxMessage) -> AsyncIterator[None]:
        self.working_for.append(message.id)
        yield

    async def send_reply(self, message: InboxMessage, reply: Reply) -> None:
        if self.fail_next:
            self.fail_next -= 1
            async with self._changed:
                self.failures += 1
                self._changed.notify_all()
            raise AdapterError("test", "platform down")
        async with self._changed:
            self.replies.append((message, reply))
            self._changed.notify_all()

    async def wait_failures(self, count: int) -> None:
        async with self._changed:
            await asyncio.wait_for(
                self._changed.wait_for(lambda: self.failures >= count), timeout=10
            )

    async def wait_replies(self, count: int) -> list[str]:
        async with self._changed:
            await asyncio.wait_for(
                self._changed.wait_for(lambda: len(self.replies) >= count), timeout=10
            )
        return [reply.text for _, reply in self.replies]


def make_config(
    tmp_path: Path, agents_url: str, backend: str = "thinnest", **dispatcher: Any
) -> Config:
    agent: dict[str, Any] = {
        "backend": backend,
        "api_key": FAKE_API_KEY,
        "base_url": agents_url,
        "timeout": 2,
        "max_retry_wait": 1,
    }
    if backend == "thinnest":
        agent["agent_id"] = "ag_fake"
    else:
        agent["project_id"] = "prj_fake"
    return parse_config(
        {
            "storage": {"url": f"sqlite+aiosqlite:///{tmp_path}/bridge.db"},
            "agents": {"default": agent},
            "dispatcher": dispatcher,
        },
        base_dir=tmp_path,
    )


def msg(
    text: str, chat: str = "c1", thread: str | None = None, event: str | None = None
) -> IncomingMessage:
    return IncomingMessage(
        key=ConversationKey("test", "s", chat, thread),
        event_id=event or f"e{next(_ids)}",
        sender="u1",
        text=text,
        agent="default",
    )


@contextlib.asynccontextmanager
async def running(
    config: Config, *, resume: bool = True
) -> AsyncIterator[tuple[Core, RecordingAdapter]]:
    async with open_core(config) as core:
        adapter = RecordingAdapter(core.dispatcher)
        core.dispatcher.register(adapter)
        if resume:
            await core.dispatcher.resume()
        yield core, adapter


async def crash_while_running(store: Store, message: InboxMessage, times: int = 1) -> None:
    """Leave ``message`` as a process of this machine that was killed during the
    agent call would: running, its conversation leased to a dead pid."""
    await store.register_instance(
        "crashed", host=host_identity(), pid=2**22 + 1, is_alive=lambda _pid: True
    )
    await store.claim("crashed", platforms=["test"], limit=10, lease_timeout=30)
    for _ in range(times):
        assert await store.mark_running(message, "crashed")


@pytest.fixture
async def agents() -> AsyncIterator[FakeAgentServer]:
    async with FakeAgentServer() as server:
        yield server


async def test_multi_turn_reuses_session_and_reset_starts_a_new_one(
    tmp_path: Path, agents: FakeAgentServer
) -> None:
    async with running(make_config(tmp_path, agents.url)) as (core, adapter):
        d = core.dispatcher
        assert await d.submit(msg("one"))
        await adapter.wait_replies(1)
        assert await d.submit(msg("two"))
        assert await adapter.wait_replies(2) == ["echo: one", "echo: two"]
        calls = agents.chat_calls
        assert "session_id" not in calls[0].json
        first_session = calls[1].json["session_id"]
        assert first_session
        await d.reset(ConversationKey("test", "s", "c1"), "default")
        await d.submit(msg("three"))
        await adapter.wait_replies(3)
        assert "session_id" not in agents.chat_calls[2].json
        conversation = await d.conversation(ConversationKey("test", "s", "c1"))
        assert conversation is not None
        assert conversation.turns == 3
        assert conversation.session_id not in (None, first_session)
        assert conversation.input_tokens == 3 and conversation.output_tokens == 6


async def test_peaka_gets_a_bridge_made_thread_id_and_keeps_it(
    tmp_path: Path, agents: FakeAgentServer
) -> None:
    async with running(make_config(tmp_path, agents.url, backend="peaka")) as (core, adapter):
        await core.dispatcher.submit(msg("one"))
        await adapter.wait_replies(1)
        await core.dispatcher.submit(msg("two"))
        await adapter.wait_replies(2)
        first, second = (c.json["threadId"] for c in agents.chat_calls)
        assert len(first) == 36 and first == second  # a UUID, reused


async def test_duplicate_event_is_answered_once(tmp_path: Path, agents: FakeAgentServer) -> None:
    async with running(make_config(tmp_path, agents.url)) as (core, adapter):
        assert await core.dispatcher.submit(msg("hi", event="same")) is True
        assert await core.dispatcher.submit(msg("hi", event="same")) is False
        await core.dispatcher.wait_idle()
        assert len(adapter.replies) == 1
        assert len(agents.chat_calls) == 1


async def test_one_call_at_a_time_per_conversation_parallel_across(
    tmp_path: Path, agents: FakeAgentServer
) -> None:
    async with running(make_config(tmp_path, agents.url)) as (core, adapter):
        agents.hold()
        await core.dispatcher.submit(msg("a1", chat="a"))
        await core.dispatcher.submit(msg("a2", chat="a"))
        await core.dispatcher.submit(msg("b1", chat="b"))
        await agents.wait_for_calls(2)
        assert sorted(c.json["message"] for c in agents.chat_calls) == ["a1", "b1"]
        assert core.dispatcher.queue_depth == 2  # conversations being answered
        agents.release()
        texts = await adapter.wait_replies(3)
        assert texts.index("echo: a1") < texts.index("echo: a2")


async def test_max_concurrency_bounds_calls_in_flight(
    tmp_path: Path, agents: FakeAgentServer
) -> None:
    async with running(make_config(tmp_path, agents.url, max_concurrency=1)) as (core, adapter):
        agents.hold()
        await core.dispatcher.submit(msg("a", chat="a"))
        await core.dispatcher.submit(msg("b", chat="b"))
        await agents.wait_for_calls(1)
        # The other conversation waits for the one slot.
        await asyncio.sleep(0.2)  # a window in which a second call would have arrived
        assert len(agents.chat_calls) == 1
        agents.release()
        await adapter.wait_replies(2)


async def test_too_long_input_gets_a_clear_reply_without_agent_call(
    tmp_path: Path, agents: FakeAgentServer
) -> None:
    async with running(make_config(tmp_path, agents.url, max_input_chars=10)) as (core, adapter):
        await core.dispatcher.submit(msg("x" * 11))
        [text] = await adapter.wait_replies(1)
        assert "11 characters" in text and "limit is 10" in text
        assert agents.chat_calls == []
        assert adapter.replies[0][1].error_kind == "input_too_long"


async def test_agent_error_becomes_the_friendly_text_and_is_stored(
    tmp_path: Path, agents: FakeAgentServer
) -> None:
    async with running(make_config(tmp_path, agents.url)) as (core, adapter):
        agents.script(FakeResponse(status=402, json={"detail": "Insufficient balance"}))
        await core.dispatcher.submit(msg("hi"))
        [text] = await adapter.wait_replies(1)
        assert "out of credit" in text
        assert "402" not in text and agents.url not in text
        await core.dispatcher.wait_idle()
        assert await core.store.count_unfinished() == 0
        metrics = core.metrics.render().decode()
        assert 'agent_bridge_messages_failed_total{platform="test"} 1.0' in metrics
        assert 'kind="insufficient_balance"' in metrics


async def test_expired_session_starts_over_once_with_a_note(
    tmp_path: Path, agents: FakeAgentServer
) -> None:
    async with running(make_config(tmp_path, agents.url)) as (core, adapter):
        await core.dispatcher.submit(msg("one"))
        await adapter.wait_replies(1)
        old = agents.chat_calls[0]
        conversation = await core.dispatcher.conversation(ConversationKey("test", "s", "c1"))
        assert conversation is not None and conversation.session_id
        agents.expire(conversation.session_id)
        await core.dispatcher.submit(msg("two"))
        texts = await adapter.wait_replies(2)
        assert "started over" in texts[1] and texts[1].endswith("echo: two")
        assert len(agents.chat_calls) == 3  # the expired call, then one fresh retry
        assert "session_id" not in agents.chat_calls[2].json
        after = await core.dispatcher.conversation(ConversationKey("test", "s", "c1"))
        assert after is not None and after.session_id != conversation.session_id
        del old


async def test_failed_delivery_is_retried(tmp_path: Path, agents: FakeAgentServer) -> None:
    config = make_config(tmp_path, agents.url)
    async with open_core(config) as core:
        # Fast backoff for the test; the production one waits seconds.
        core.dispatcher._delivery_backoff = (0.01, 0.01)
        adapter = RecordingAdapter(core.dispatcher)
        core.dispatcher.register(adapter)
        await core.dispatcher.resume()
        adapter.fail_next = 2
        await core.dispatcher.submit(msg("hi"))
        assert await adapter.wait_replies(1) == ["echo: hi"]
        assert len(agents.chat_calls) == 1


async def test_a_reply_refused_for_long_is_posted_once_the_platform_takes_it(
    tmp_path: Path, agents: FakeAgentServer
) -> None:
    config = make_config(tmp_path, agents.url)
    async with running(config) as (core, adapter):
        core.dispatcher._delivery_backoff = (0.01, 0.02, 0.05)
        adapter.fail_next = 6  # the backoff reaches its cap and stays there
        await core.dispatcher.submit(msg("hi"))
        await core.dispatcher.submit(msg("after", event="later"))
        assert await adapter.wait_replies(2) == ["echo: hi", "echo: after"]  # order kept
        assert len(agents.chat_calls) == 2  # the agent was asked once per message
        assert adapter.failures == 6
        await core.dispatcher.wait_idle()
        assert await core.store.count_unfinished() == 0


async def test_a_parked_reply_is_posted_after_a_restart_without_a_new_agent_call(
    tmp_path: Path, agents: FakeAgentServer
) -> None:
    config = make_config(tmp_path, agents.url)
    async with running(config) as (core, adapter):
        core.dispatcher._delivery_backoff = (3600.0,)
        adapter.fail_next = 1
        await core.dispatcher.submit(msg("hi"))
        await adapter.wait_failures(1)
        await core.dispatcher.wait_idle(parked=False)
        [left] = await core.store.unfinished()
        assert left.status is MessageStatus.ANSWERED and left.reply_text == "echo: hi"
        assert (await core.store.stats()).parked == 1
    async with running(config, resume=False) as (core, adapter):
        assert await core.dispatcher.resume() == 1  # a start tries parked replies at once
        assert await adapter.wait_replies(1) == ["echo: hi"]
        assert adapter.replies[0][0].delivery_attempts == 1  # it may have been posted
        assert len(agents.chat_calls) == 1


async def test_resume_answers_pending_and_interrupted_messages(
    tmp_path: Path, agents: FakeAgentServer
) -> None:
    config = make_config(tmp_path, agents.url)
    async with Store(config.storage.url) as store:
        pending = await store.accept(msg("left pending", chat="p"))
        running_msg = await store.accept(msg("was running", chat="r"))
        assert pending is not None and running_msg is not None
        await crash_while_running(store, running_msg)
    async with running(config, resume=False) as (core, adapter):
        assert await core.dispatcher.resume() == 2
        texts = await adapter.wait_replies(2)
        assert sorted(texts) == ["echo: left pending", "echo: was running"]
        await core.dispatcher.wait_idle()
        assert await core.store.count_unfinished() == 0


async def test_a_message_interrupted_too_often_gets_an_error_not_a_loop(
    tmp_path: Path, agents: FakeAgentServer
) -> None:
    config = make_config(tmp_path, agents.url)
    async with Store(config.storage.url) as store:
        stored = await store.accept(msg("poison"))
        assert stored is not None
        await crash_while_running(store, stored, times=3)
    async with running(config, resume=False) as (core, adapter):
        await core.dispatcher.resume()
        [text] = await adapter.wait_replies(1)
        assert "went wrong" in text
        assert agents.chat_calls == []


async def test_shutdown_lets_call_in_flight_finish_and_leaves_queued_pending(
    tmp_path: Path, agents: FakeAgentServer
) -> None:
    config = make_config(tmp_path, agents.url)
    async with running(config) as (core, adapter):
        agents.hold()
        await core.dispatcher.submit(msg("slow"))
        await core.dispatcher.submit(msg("queued"))
        await agents.wait_for_calls(1)
        shutdown = asyncio.create_task(core.dispatcher.shutdown(grace=10))
        await asyncio.sleep(0)  # let shutdown stop accepting first
        assert await core.dispatcher.submit(msg("after stop", chat="other")) is True
        agents.release()
        await shutdown
        assert [r.text for _, r in adapter.replies] == ["echo: slow"]
        left = sorted(m.text for m in await core.store.unfinished())
        assert left == ["after stop", "queued"]
        assert len(agents.chat_calls) == 1


async def test_reset_during_a_call_is_not_undone_by_it(
    tmp_path: Path, agents: FakeAgentServer
) -> None:
    async with running(make_config(tmp_path, agents.url)) as (core, adapter):
        key = ConversationKey("test", "s", "c1")
        agents.hold()
        await core.dispatcher.submit(msg("one"))
        await agents.wait_for_calls(1)
        await core.dispatcher.reset(key, "default")
        agents.release()
        await adapter.wait_replies(1)
        await core.dispatcher.wait_idle()
        conversation = await core.dispatcher.conversation(key)
        assert conversation is not None and conversation.session_id is None


async def test_unexpected_adapter_less_platform_waits_in_store(
    tmp_path: Path, agents: FakeAgentServer
) -> None:
    config = make_config(tmp_path, agents.url)
    async with Store(config.storage.url) as store:
        other = IncomingMessage(ConversationKey("slack", "T1", "C1"), "ev1", "U1", "hi", "default")
        await store.accept(other)
    async with running(config, resume=False) as (core, _):
        assert await core.dispatcher.resume() == 0
        assert [m.text for m in await core.store.unfinished()] == ["hi"]


async def test_resumed_message_is_answered_before_a_newer_one_of_its_conversation(
    tmp_path: Path, agents: FakeAgentServer
) -> None:
    config = make_config(tmp_path, agents.url)
    async with Store(config.storage.url) as store:
        assert await store.accept(msg("older")) is not None
    async with running(config, resume=False) as (core, adapter):
        # The adapters connect (and take new messages) before the dispatcher
        # resumes: the newer message must still wait behind the older one.
        await core.dispatcher.submit(msg("newer"))
        await core.dispatcher.resume()
        assert await adapter.wait_replies(2) == ["echo: older", "echo: newer"]


async def test_an_over_long_reply_is_cut_with_a_note(
    tmp_path: Path, agents: FakeAgentServer
) -> None:
    async with running(make_config(tmp_path, agents.url, max_reply_chars=100)) as (core, adapter):
        agents.script(FakeResponse(json={"response": "y" * 500, "session_id": "s1"}))
        await core.dispatcher.submit(msg("long please"))
        [text] = await adapter.wait_replies(1)
        assert text.startswith("y" * 100) and "y" * 101 not in text
        assert "cut here" in text and "100 characters" in text


async def test_text_the_database_would_refuse_is_cleaned_before_storing(
    tmp_path: Path, agents: FakeAgentServer
) -> None:
    async with running(make_config(tmp_path, agents.url)) as (core, adapter):
        await core.dispatcher.submit(msg("nul\x00 and lone \ud800 surrogate"))
        [text] = await adapter.wait_replies(1)
        assert text == "echo: nul\ufffd and lone \ufffd surrogate"


async def test_a_message_submitted_while_resuming_is_answered_once(
    tmp_path: Path, agents: FakeAgentServer
) -> None:
    # An adapter submits just as the daemon's resume() claims: the claim loop
    # (started by that submit) and resume's own round must not both start a
    # worker for the conversation (both may claim it: it is this instance's).
    async with running(make_config(tmp_path, agents.url), resume=False) as (core, adapter):
        await asyncio.gather(
            *(core.dispatcher.submit(msg(f"m{n}", chat=f"c{n}")) for n in range(3)),
            core.dispatcher.resume(),
        )
        await adapter.wait_replies(3)
        await core.dispatcher.wait_idle()
        assert sorted(c.json["message"] for c in agents.chat_calls) == ["m0", "m1", "m2"]
        assert len(adapter.replies) == 3


async def test_places_freed_during_a_claim_round_are_filled_without_waiting_for_the_poll(
    tmp_path: Path, agents: FakeAgentServer
) -> None:
    """A backlog of four conversations, two places: the second place freed while the
    claim round for the first is in flight must still wake the claim loop (it once
    stayed empty until the next poll, halving the concurrency under a backlog)."""
    config = make_config(tmp_path, agents.url, max_concurrency=2)
    async with running(config, resume=False) as (core, _recording):
        dispatcher = core.dispatcher
        held: list[asyncio.Event] = []
        posted: list[str] = []
        two_held = asyncio.Event()

        class Holding(RecordingAdapter):
            async def send_reply(self, message: InboxMessage, reply: Reply) -> None:
                if len(held) < 2:  # the first two replies wait for the test
                    gate = asyncio.Event()
                    held.append(gate)
                    if len(held) == 2:
                        two_held.set()
                    await gate.wait()
                posted.append(reply.text)
                await super().send_reply(message, reply)

        adapter = Holding(dispatcher)
        dispatcher.register(adapter)
        for chat in "abcd":
            assert await core.store.accept(msg(chat, chat=chat)) is not None
        dispatcher._poll_interval = 3600.0  # only wake-ups claim, no poll
        claim = core.store.claim
        in_round, go_on = asyncio.Event(), asyncio.Event()

        async def gated_claim(*args: Any, **kwargs: Any) -> Any:
            if in_round.is_set() or not held:
                return await claim(*args, **kwargs)
            in_round.set()  # the round after the first place was freed
            await go_on.wait()
            return await claim(*args, **kwargs)

        core.store.claim = gated_claim  # type: ignore[method-assign]
        await dispatcher.resume()
        await asyncio.wait_for(two_held.wait(), timeout=10)
        held[0].set()  # the first place frees: its worker wakes the claim loop
        await asyncio.wait_for(in_round.wait(), timeout=10)
        held[1].set()  # the second frees while that round is in flight
        await adapter.wait_replies(2)
        go_on.set()
        assert sorted(await adapter.wait_replies(4)) == [f"echo: {c}" for c in "abcd"]
