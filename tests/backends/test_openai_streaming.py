"""OpenAIBackend streaming (Responses and Chat Completions) against the fake API."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.backends import OpenAIBackend
from bridge.errors import (
    AgentError,
    AgentInsufficientBalance,
    AgentRateLimited,
    AgentSessionExpired,
    AgentUnavailable,
)
from bridge.model import AgentReply, Usage
from bridge.stream import TextDelta
from storage import Store
from tests.backends.conftest import MESSAGES
from tests.fakes.openai_api import INSUFFICIENT_QUOTA, FakeOpenAI, openai_config

MODES = {
    "conversation": {"api": "responses", "memory": "conversation"},
    "previous_response_id": {"api": "responses", "memory": "previous_response_id"},
    "chat": {"api": "chat"},
}
PATH = {
    "conversation": "/responses",
    "previous_response_id": "/responses",
    "chat": "/chat/completions",
}


@pytest.fixture
async def api() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as server:
        yield server


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with Store(f"sqlite+aiosqlite:///{tmp_path}/bridge.db") as opened:
        yield opened


@pytest.fixture
def make_openai(
    api: FakeOpenAI, client: httpx.AsyncClient, store: Store, fast_sleep: Any
) -> Callable[..., OpenAIBackend]:
    def make(mode: str, **overrides: Any) -> OpenAIBackend:
        config = openai_config(api.url, **{**MODES[mode], "stream": True, **overrides})
        return OpenAIBackend(
            "default", config, messages=MESSAGES, client=client, history=store, sleep=fast_sleep
        )

    return make


async def collect(backend: OpenAIBackend, message: str, session_id: str | None) -> list[Any]:
    return [event async for event in backend.stream(message, session_id)]


def deltas(events: list[Any]) -> list[str]:
    return [e.text for e in events if isinstance(e, TextDelta)]


@pytest.mark.parametrize("mode", list(MODES))
async def test_two_streamed_turns_keep_memory_and_equal_chat(
    api: FakeOpenAI, make_openai: Callable[..., OpenAIBackend], mode: str
):
    backend = make_openai(mode)
    assert backend.streams

    first = await collect(backend, "one", backend.new_session_id())
    reply = first[-1]
    assert isinstance(reply, AgentReply)
    assert deltas(first) == ["echo: ", "one"] and reply.text == "echo: one"
    assert reply.usage.total_tokens > 0
    second = await collect(backend, "two", reply.session_id)

    assert second[-1].text == "echo: two [remembers: one]"
    assert "".join(deltas(second)) == second[-1].text
    assert api.stream_calls == 2
    sent = api.calls_to(PATH[mode])[-1].json
    assert sent["stream"] is True
    if mode == "chat":
        assert sent["stream_options"] == {"include_usage": True}
        assert reply.usage == Usage(input_tokens=1, output_tokens=2, total_tokens=3)
    # The plain call on the same memory says the same.
    plain = await backend.chat("three", second[-1].session_id)
    assert plain.text == "echo: three [remembers: one | two]"


async def test_previous_response_id_mode_takes_the_completed_id(
    make_openai: Callable[..., OpenAIBackend],
):
    backend = make_openai("previous_response_id")
    events = await collect(backend, "one", None)
    assert events[-1].session_id and events[-1].session_id.startswith("resp_")


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (
            {"type": "error", "code": "insufficient_quota", "message": "quota"},
            AgentInsufficientBalance,
        ),
        ({"type": "error", "code": "rate_limit_exceeded", "message": "slow"}, AgentRateLimited),
        (
            {
                "type": "response.failed",
                "response": {"error": {"code": "server_error", "message": "x"}},
            },
            AgentUnavailable,
        ),
    ],
)
async def test_responses_error_event_after_a_delta(
    api: FakeOpenAI, make_openai: Callable[..., OpenAIBackend], error: dict, kind: type[AgentError]
):
    api.stream_error = error
    backend = make_openai("previous_response_id")
    events: list[Any] = []
    with pytest.raises(AgentError) as caught:
        async for event in backend.stream("one two", None):
            events.append(event)
    assert deltas(events) == ["echo: "]
    assert type(caught.value) is kind


async def test_chat_error_chunk_after_a_delta(
    api: FakeOpenAI, make_openai: Callable[..., OpenAIBackend], store: Store
):
    api.stream_error = {"error": {"message": "boom", "type": "server_error"}}
    backend = make_openai("chat")
    session = backend.new_session_id()
    events: list[Any] = []
    with pytest.raises(AgentUnavailable):
        async for event in backend.stream("one", session):
            events.append(event)
    assert deltas(events) == ["echo: "]
    assert session is not None
    assert await store.load(session, max_chars=1000) == []  # no half turn in the history


async def test_429_insufficient_quota_before_the_stream_is_balance_not_retried(
    api: FakeOpenAI, make_openai: Callable[..., OpenAIBackend], sleeps: list[float]
):
    api.script("/chat/completions", INSUFFICIENT_QUOTA)
    backend = make_openai("chat")
    with pytest.raises(AgentInsufficientBalance):
        await collect(backend, "hi", backend.new_session_id())
    assert sleeps == [] and len(api.calls_to("/chat/completions")) == 1


async def test_a_gone_conversation_is_expired_not_fallback(
    api: FakeOpenAI, make_openai: Callable[..., OpenAIBackend]
):
    backend = make_openai("conversation")
    first = await collect(backend, "one", None)
    api.forget(first[-1].session_id)
    with pytest.raises(AgentSessionExpired):
        await collect(backend, "two", first[-1].session_id)
    assert backend.streams


async def test_a_server_that_answers_json_to_stream_falls_back(
    api: FakeOpenAI, make_openai: Callable[..., OpenAIBackend], caplog, store: Store
):
    # A server that ignores "stream": a whole JSON body. Simulated with a scripted one.
    from tests.fakes.agents import FakeResponse

    whole = {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "whole"}}],
        "usage": {},
    }
    api.script("/chat/completions", FakeResponse(json=whole))
    backend = make_openai("chat")
    session = backend.new_session_id()
    with caplog.at_level(logging.WARNING, logger="bridge.backends"):
        events = await collect(backend, "hi", session)
    assert events[-1].text == "echo: hi"  # answered by the plain call
    assert not backend.streams
    assert len([r for r in caplog.records if "falling back" in r.getMessage()]) == 1
    assert session is not None
    [turn] = await store.load(session, max_chars=1000)
    assert turn.assistant == "echo: hi"
