"""Streamed answers from thinnest and Peaka, against the fake APIs over real HTTP."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from bridge.backends import EchoBackend
from bridge.backends.base import AgentBackend
from bridge.errors import (
    AgentError,
    AgentInsufficientBalance,
    AgentRateLimited,
    AgentSessionExpired,
    AgentTimeout,
    AgentUnavailable,
)
from bridge.model import AgentReply, Usage
from bridge.stream import StatusLine, TextDelta
from tests.backends.conftest import MakeBackend
from tests.fakes.agents import FAKE_AGENT_ID, FakeAgentServer, FakeResponse, FakeStream, peaka_chunk


async def collect(backend: AgentBackend, message: str, session_id: str | None) -> list[Any]:
    return [event async for event in backend.stream(message, session_id)]


async def collect_until_error(
    backend: AgentBackend, message: str, session_id: str | None
) -> tuple[list[Any], AgentError]:
    events: list[Any] = []
    with pytest.raises(AgentError) as caught:
        async for event in backend.stream(message, session_id):
            events.append(event)
    return events, caught.value


def deltas(events: list[Any]) -> list[str]:
    return [e.text for e in events if isinstance(e, TextDelta)]


@pytest.fixture
def make_streaming(make_backend: MakeBackend) -> MakeBackend:
    def make(**overrides: Any) -> Any:
        return make_backend(stream=True, **overrides)

    return make


def sent_session(backend: AgentBackend) -> str:
    return "sess-9" if backend.kind == "thinnest" else "thread-9"  # type: ignore[attr-defined]


def after_deltas(backend: AgentBackend, count: int) -> int:
    """The number of the fake's default events that carry ``count`` deltas (Peaka's
    stream starts with a metadata event)."""
    return count if backend.kind == "thinnest" else count + 1  # type: ignore[attr-defined]


# --- the happy path ----------------------------------------------------------------------


async def test_deltas_in_order_and_the_final_reply_equals_chat(
    agents: FakeAgentServer, make_streaming: MakeBackend
):
    backend = make_streaming()
    assert backend.streams
    session = sent_session(backend)

    events = await collect(backend, "hello there world", session)
    plain = await backend.chat("hello there world", session)

    assert deltas(events) == ["echo: ", "hello ", "there ", "world"]
    final = events[-1]
    assert isinstance(final, AgentReply)
    assert [e for e in events if isinstance(e, AgentReply)] == [final]
    assert final.text == "".join(deltas(events)) == plain.text
    assert final.session_id == plain.session_id == session
    [stream_call] = agents.stream_calls
    assert stream_call.headers["Accept"] == "text/event-stream"


async def test_thinnest_request_and_usage(agents: FakeAgentServer, make_thinnest: MakeBackend):
    backend = make_thinnest(stream=True)

    events = await collect(backend, "hi", None)

    [call] = agents.stream_calls
    assert call.path == "/chat/stream"
    assert call.json == {"agent_id": FAKE_AGENT_ID, "message": "hi"}
    final = events[-1]
    assert final.session_id == "sess-1"  # named by the done event
    assert final.usage == Usage(input_tokens=1, output_tokens=2, total_tokens=3)


async def test_peaka_request_names_a_thread(agents: FakeAgentServer, make_peaka: MakeBackend):
    backend = make_peaka(stream=True)

    events = await collect(backend, "hi", None)

    [call] = agents.stream_calls
    assert call.path.endswith("/chat/stream")
    assert call.json["streamModes"] == ["messages"]
    assert call.json["message"] == "hi"
    thread = call.json["threadId"]
    assert thread and events[-1].session_id == thread


@pytest.mark.parametrize("kind", ["text", "token", "content"])
@pytest.mark.parametrize("field", ["content", "text", "token"])
async def test_thinnest_accepts_each_text_event(
    agents: FakeAgentServer, make_thinnest: MakeBackend, kind: str, field: str
):
    agents.stream_text_type, agents.stream_text_field = kind, field
    backend = make_thinnest(stream=True)

    events = await collect(backend, "one two", "sess-1")

    assert deltas(events) == ["echo: ", "one ", "two"]
    assert events[-1].text == "echo: one two"


async def test_thinnest_tool_events_are_status_lines(
    agents: FakeAgentServer, make_thinnest: MakeBackend
):
    agents.script_stream(
        FakeStream(
            events=[
                {"type": "tool_call", "name": "search", "arguments": {"q": "x"}},
                {"type": "tool_result", "name": "search", "result": "..."},
                {"type": "text", "content": "found it"},
                {"type": "done", "session_id": "sess-1"},
            ]
        )
    )
    backend = make_thinnest(stream=True)

    events = await collect(backend, "look", "sess-1")

    assert events[:3] == [
        StatusLine("Using tool: search"),
        StatusLine("Using tool: search"),
        TextDelta("found it"),
    ]
    assert events[-1].text == "found it"


async def test_peaka_takes_ai_chunks_only(agents: FakeAgentServer, make_peaka: MakeBackend):
    tool_call = peaka_chunk("")
    tool_call["kwargs"]["tool_calls"] = [{"name": "sql", "args": {}}]
    agents.script_stream(
        FakeStream(
            events=[
                ("metadata", {"run_id": "r"}),
                ("messages", [{"type": "human", "content": "hi"}, {"node": "x"}]),
                ("messages", [tool_call, {"node": "agent"}]),
                ("messages", [{"type": "tool", "content": "rows..."}, {"node": "tools"}]),
                ("messages", [{"type": "AIMessageChunk", "content": "Hello"}, {"node": "a"}]),
                ("messages", [peaka_chunk(" there"), {"node": "agent"}]),
                ("messages", [{"type": "ai", "content": [{"type": "text", "text": "!"}]}, {}]),
                ("updates", {"agent": {"messages": []}}),
            ]
        )
    )
    backend = make_peaka(stream=True)

    events = await collect(backend, "hi", "thread-1")

    assert deltas(events) == ["Hello", " there", "!"]
    assert events[-1].text == "Hello there!"


async def test_peaka_partial_messages_become_deltas(
    agents: FakeAgentServer, make_peaka: MakeBackend
):
    agents.script_stream(
        FakeStream(
            events=[
                ("messages/partial", [{"type": "ai", "content": "Hel", "id": "m1"}]),
                ("messages/partial", [{"type": "ai", "content": "Hello", "id": "m1"}]),
                ("messages/complete", [{"type": "ai", "content": "Hello you", "id": "m1"}]),
            ]
        )
    )
    backend = make_peaka(stream=True)

    events = await collect(backend, "hi", "thread-1")

    assert deltas(events) == ["Hel", "lo", " you"]


async def test_chunk_boundaries_do_not_matter(agents: FakeAgentServer, make_streaming: MakeBackend):
    agents.script_stream(FakeStream(chunk_size=3))
    backend = make_streaming()

    events = await collect(backend, "a longer message", sent_session(backend))

    assert events[-1].text == "echo: a longer message"
    assert len(deltas(events)) == 4


async def test_a_delta_arrives_before_the_stream_ends(
    agents: FakeAgentServer, make_streaming: MakeBackend
):
    backend = make_streaming()
    agents.script_stream(FakeStream(hold_after=after_deltas(backend, 2)))
    events = backend.stream("one two three", sent_session(backend))

    first = await asyncio.wait_for(anext(events), 5)
    second = await asyncio.wait_for(anext(events), 5)

    # The fake still holds the rest of the answer.
    assert agents.stream_holding.is_set()
    assert deltas([first, second]) == ["echo: ", "one "]
    agents.release_stream()
    rest = [event async for event in events]
    assert rest[-1].text == "echo: one two three"


async def test_a_streaming_echo_agent_streams_words():
    backend = EchoBackend("try", stream=True)
    assert backend.streams
    events = await collect(backend, "one two", None)
    assert deltas(events) == ["one ", "two"]
    assert events[-1] == AgentReply(text="one two", session_id=None, usage=Usage())


async def test_without_stream_config_one_delta(agents: FakeAgentServer, make_backend: MakeBackend):
    backend = make_backend()
    assert not backend.streams

    events = await collect(backend, "hi", None)

    assert deltas(events) == ["echo: hi"]
    assert agents.stream_calls == [] and len(agents.chat_calls) == 1


# --- failures mid-stream -----------------------------------------------------------------


async def test_cut_mid_stream_is_unavailable_after_the_deltas(
    agents: FakeAgentServer, make_streaming: MakeBackend, sleeps: list[float]
):
    backend = make_streaming()
    agents.script_stream(FakeStream(cut_after=after_deltas(backend, 3)))

    events, error = await collect_until_error(backend, "one two three", sent_session(backend))

    assert deltas(events) == ["echo: ", "one ", "two "]
    assert isinstance(error, AgentUnavailable)
    assert len(agents.stream_calls) == 1 and not agents.chat_calls  # never retried
    assert sleeps == []


async def test_thinnest_stream_without_done_is_cut(
    agents: FakeAgentServer, make_thinnest: MakeBackend
):
    agents.script_stream(FakeStream(events=[{"type": "text", "content": "half"}]))
    backend = make_thinnest(stream=True)

    events, error = await collect_until_error(backend, "hi", "sess-1")

    assert deltas(events) == ["half"]
    assert isinstance(error, AgentUnavailable)


async def test_a_stalled_stream_times_out(agents: FakeAgentServer, make_streaming: MakeBackend):
    backend = make_streaming(timeout=0.3)
    agents.script_stream(FakeStream(hold_after=after_deltas(backend, 2)))

    events, error = await collect_until_error(backend, "one two", sent_session(backend))

    assert len(deltas(events)) == 2
    assert isinstance(error, AgentTimeout)


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ("Insufficient balance: top up your credits", AgentInsufficientBalance),
        ("Rate limit exceeded", AgentRateLimited),
        ("The model crashed", AgentUnavailable),
    ],
)
async def test_thinnest_error_event_after_deltas(
    agents: FakeAgentServer, make_thinnest: MakeBackend, message: str, kind: type[AgentError]
):
    agents.script_stream(
        FakeStream(
            events=[
                {"type": "text", "content": "Let me "},
                {"type": "error", "message": message},
            ]
        )
    )
    backend = make_thinnest(stream=True)

    events, error = await collect_until_error(backend, "hi", "sess-1")

    assert deltas(events) == ["Let me "]
    assert type(error) is kind
    assert error.user_message


async def test_peaka_error_event_after_deltas(agents: FakeAgentServer, make_peaka: MakeBackend):
    agents.script_stream(
        FakeStream(
            events=[
                ("messages", [peaka_chunk("Part"), {"node": "agent"}]),
                ("error", {"error": "InternalError", "message": "boom"}),
            ]
        )
    )
    backend = make_peaka(stream=True)

    events, error = await collect_until_error(backend, "hi", "thread-1")

    assert deltas(events) == ["Part"]
    assert isinstance(error, AgentUnavailable)


# --- before the stream -------------------------------------------------------------------


async def test_402_before_the_stream_is_balance_and_not_retried(
    agents: FakeAgentServer, make_streaming: MakeBackend, sleeps: list[float]
):
    agents.script_stream(FakeStream(status=402, body='{"detail": "Insufficient balance"}'))
    backend = make_streaming()

    events, error = await collect_until_error(backend, "hi", sent_session(backend))

    assert events == []
    assert isinstance(error, AgentInsufficientBalance)
    assert len(agents.stream_calls) == 1 and not agents.chat_calls
    assert sleeps == []
    assert backend.streams  # no fallback


async def test_5xx_before_the_stream_is_retried(
    agents: FakeAgentServer, make_streaming: MakeBackend, sleeps: list[float]
):
    agents.script_stream(FakeStream(status=503, body="busy"), FakeStream(status=502, body="x"))
    backend = make_streaming(max_retry_wait=30)

    events = await collect(backend, "hi", sent_session(backend))

    assert events[-1].text == "echo: hi"
    assert len(agents.stream_calls) == 3 and not agents.chat_calls
    assert len(sleeps) == 2


async def test_429_before_the_stream_waits_as_told(
    agents: FakeAgentServer, make_streaming: MakeBackend, sleeps: list[float]
):
    agents.script_stream(FakeStream(status=429, body="slow down"))
    backend = make_streaming()
    # The fake's scripted status answers carry no Retry-After: backoff decides.
    events = await collect(backend, "hi", sent_session(backend))

    assert events[-1].text == "echo: hi"
    assert len(agents.stream_calls) == 2 and len(sleeps) == 1


async def test_connection_refused_is_retried_then_unavailable(
    make_streaming: MakeBackend, sleeps: list[float]
):
    backend = make_streaming(url="http://127.0.0.1:9", max_retry_wait=30)

    events, error = await collect_until_error(backend, "hi", "s")

    assert events == [] and isinstance(error, AgentUnavailable)
    assert len(sleeps) == 2


# --- fallback to the plain endpoint ------------------------------------------------------


@pytest.mark.parametrize("status", [404, 405])
async def test_missing_stream_endpoint_falls_back_once(
    agents: FakeAgentServer, make_streaming: MakeBackend, caplog, status: int
):
    agents.stream_status = status
    backend = make_streaming()

    with caplog.at_level(logging.WARNING, logger="bridge.backends"):
        first = await collect(backend, "one", None)
        second = await collect(backend, "two", first[-1].session_id)

    assert deltas(first) == ["echo: one"] and first[-1].text == "echo: one"
    assert second[-1].text == "echo: two"
    assert len(agents.stream_calls) == 1  # later turns go straight to chat
    assert len(agents.chat_calls) == 2
    assert not backend.streams
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "default" in warnings[0].getMessage() and "falling back" in warnings[0].getMessage()


@pytest.mark.parametrize(
    "answer",
    [
        FakeStream(body='{"response": "x"}', content_type="application/json"),
        FakeStream(body="", content_type="text/event-stream"),
        FakeStream(body="<html>nope</html>", content_type="text/html"),
        FakeStream(events=["data: not json\n\n"]),
    ],
)
async def test_unreadable_stream_falls_back(
    agents: FakeAgentServer, make_streaming: MakeBackend, caplog, answer: FakeStream
):
    agents.script_stream(answer)
    backend = make_streaming()

    with caplog.at_level(logging.WARNING, logger="bridge.backends"):
        events = await collect(backend, "hi", sent_session(backend))

    assert deltas(events) == ["echo: hi"] and events[-1].text == "echo: hi"
    assert len(agents.chat_calls) == 1
    assert not backend.streams
    assert len([r for r in caplog.records if "falling back" in r.getMessage()]) == 1


async def test_a_gone_session_is_expired_not_fallback(
    agents: FakeAgentServer, make_streaming: MakeBackend
):
    session = sent_session(backend := make_streaming())
    agents.expire(session)

    events, error = await collect_until_error(backend, "hi", session)

    assert events == []
    assert isinstance(error, AgentSessionExpired)
    assert not agents.chat_calls  # the body names the session: no plain call needed
    assert backend.streams


async def test_a_bare_404_with_a_session_asks_chat_and_keeps_streaming_if_the_session_is_gone(
    agents: FakeAgentServer, make_thinnest: MakeBackend
):
    # A bare 404 on a turn that names a session may be the endpoint or the session:
    # the plain endpoint decides. Here it says the session is gone.
    agents.script_stream(FakeStream(status=404, body="Not Found", content_type="text/plain"))
    agents.script(FakeResponse(status=404, json={"detail": "Session not found"}))
    backend = make_thinnest(stream=True)

    events, error = await collect_until_error(backend, "hi", "sess-1")

    assert events == [] and isinstance(error, AgentSessionExpired)
    assert backend.streams  # the stream endpoint exists after all, as far as we know
    again = await collect(backend, "hi", None)
    assert again[-1].text == "echo: hi"
    assert len(agents.stream_calls) == 2


async def test_a_bare_404_on_a_new_session_falls_back(
    agents: FakeAgentServer, make_thinnest: MakeBackend
):
    agents.script_stream(FakeStream(status=404, body="Not Found", content_type="text/plain"))
    backend = make_thinnest(stream=True)

    events = await collect(backend, "hi", None)

    assert events[-1].text == "echo: hi"
    assert not backend.streams
