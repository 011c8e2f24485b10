"""``backend = "http"`` streaming: Dify's event stream passed on as it comes, against
the fake Dify over real HTTP (``stream = true``); and what does not stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest

from bridge.backends import GenericHttpBackend
from bridge.backends.generic import split_session
from bridge.config import HttpAgentConfig
from bridge.errors import AgentInsufficientBalance, AgentNotFound, AgentSessionExpired
from bridge.model import AgentReply, Usage
from bridge.stream import AgentEvent, TextDelta
from tests.backends.http_support import (  # noqa: F401 - the fixtures
    MakeHttp,
    fake_fixture,
    http_client_fixture,
    make_http_fixture,
    waits_fixture,
)
from tests.fakes.agent_platforms import FakePlatforms, http_config_values
from tests.fakes.agents import FakeResponse

#: Long enough for a loaded machine; a stream that is read whole never gets there.
WAIT = 5.0


async def collect(events: AsyncGenerator[AgentEvent, None]) -> tuple[list[str], AgentReply]:
    deltas: list[str] = []
    final: AgentReply | None = None
    async for event in events:
        assert final is None, "nothing may follow the reply"
        if isinstance(event, TextDelta):
            deltas.append(event.text)
        elif isinstance(event, AgentReply):
            final = event
    assert final is not None
    return deltas, final


async def test_deltas_arrive_while_the_stream_is_still_open(
    fake: FakePlatforms, make_http: MakeHttp
) -> None:
    backend = make_http("dify", stream=True)
    assert backend.streams
    fake.dify_hold = asyncio.Event()
    events = backend.stream("hello there", backend.new_session_id())

    first = await asyncio.wait_for(anext(events), WAIT)

    # The fake holds the rest of the stream until told: this delta came live.
    assert first == TextDelta("echo: ")
    assert not fake.dify_streamed.is_set()
    fake.dify_hold.set()
    deltas, reply = await asyncio.wait_for(collect(events), WAIT)
    assert deltas == ["hello ", "there"]
    assert fake.dify_streamed.is_set()
    assert reply.text == "echo: hello there"
    assert reply.usage == Usage(input_tokens=2, output_tokens=3, total_tokens=5)
    assert split_session(reply.session_id)[1] == "conv-1"


async def test_the_streamed_reply_is_the_one_chat_gives(
    fake: FakePlatforms, make_http: MakeHttp
) -> None:
    plain = make_http("dify")
    streaming = make_http("dify", stream=True)

    chatted = await plain.chat("one two three", plain.new_session_id())
    deltas, streamed = await collect(streaming.stream("one two three", None))

    assert "".join(deltas) == streamed.text == chatted.text == "echo: one two three"
    assert streamed.usage == chatted.usage
    # The same composite session: the bridge's thread, then the server's conversation.
    thread, conversation = split_session(streamed.session_id)
    assert thread is not None and thread != split_session(chatted.session_id)[0]
    assert conversation == "conv-2"
    sent = fake.chat_calls("dify")[-1].json
    assert sent["user"] == thread and sent["conversation_id"] == ""
    assert sent["response_mode"] == "streaming"


async def test_a_streamed_turn_continues_the_conversation(
    fake: FakePlatforms, make_http: MakeHttp
) -> None:
    backend = make_http("dify", stream=True)
    first = await backend.chat("hello", backend.new_session_id())

    _, second = await collect(backend.stream("again", first.session_id))
    _, third = await collect(backend.stream("and again", second.session_id))

    assert second.session_id == third.session_id == first.session_id
    sent = [c.json for c in fake.chat_calls("dify")]
    thread = split_session(first.session_id)[0]
    assert [s["user"] for s in sent] == [thread] * 3
    assert [s["conversation_id"] for s in sent] == ["", "conv-1", "conv-1"]
    assert fake.memory["dify"] == {"conv-1": ["hello", "again", "and again"]}


async def test_an_error_event_mid_stream_is_mapped_after_the_deltas(
    fake: FakePlatforms, make_http: MakeHttp
) -> None:
    backend = make_http("dify", stream=True)
    fake.dify_quota = "stream"
    fake.dify_error_after = 2
    deltas: list[str] = []

    with pytest.raises(AgentInsufficientBalance) as caught:
        async for event in backend.stream("hello there", None):
            assert isinstance(event, TextDelta), "no reply after an error"
            deltas.append(event.text)

    assert deltas == ["echo: ", "hello "]
    assert "provider_quota_exceeded" in caught.value.detail
    assert backend.streams  # an error of the agent's, not of streaming


async def test_an_error_event_is_raised_when_it_comes_not_at_the_end(
    fake: FakePlatforms, make_http: MakeHttp
) -> None:
    backend = make_http("dify", stream=True)
    fake.dify_quota = "stream"
    fake.dify_hold = asyncio.Event()  # the fake keeps the stream open after the error

    try:
        with pytest.raises(AgentInsufficientBalance):
            await asyncio.wait_for(collect(backend.stream("hello", None)), WAIT)
        assert not fake.dify_streamed.is_set()
    finally:
        fake.dify_hold.set()
    assert backend.streams


async def test_a_quota_status_before_the_stream_is_mapped_too(
    fake: FakePlatforms, make_http: MakeHttp
) -> None:
    backend = make_http("dify", stream=True)
    fake.dify_quota = "status"

    with pytest.raises(AgentInsufficientBalance):
        await collect(backend.stream("hello", None))
    assert len(fake.chat_calls("dify")) == 1  # not retried, no fallback call


async def test_a_gone_conversation_is_session_expired(
    fake: FakePlatforms, make_http: MakeHttp
) -> None:
    backend = make_http("dify", stream=True)
    first = await backend.chat("hello", backend.new_session_id())
    fake.expire("conv-1")

    with pytest.raises(AgentSessionExpired) as caught:
        await collect(backend.stream("again", first.session_id))

    assert "conv-1" in caught.value.detail
    assert len(fake.chat_calls("dify")) == 2  # no fallback call to the plain endpoint
    assert backend.streams  # the stream endpoint is fine: the conversation was gone


async def test_a_404_on_a_first_turn_is_not_a_gone_session(
    fake: FakePlatforms, make_http: MakeHttp
) -> None:
    # No conversation was sent: a 404 is a wrong URL, as for chat().
    backend = make_http("dify", stream=True)
    fake.script(
        FakeResponse(json={"code": "not_found", "message": "Not Found", "status": 404}, status=404),
        FakeResponse(json={"code": "not_found", "message": "Not Found", "status": 404}, status=404),
    )

    with pytest.raises(AgentNotFound):
        await collect(backend.stream("hello", None))


async def test_stream_false_reads_the_stream_whole_as_today(
    fake: FakePlatforms, make_http: MakeHttp
) -> None:
    backend = make_http("dify")
    assert not backend.streams
    fake.dify_hold = asyncio.Event()
    events = backend.stream("hello there", None)

    # Read whole: nothing comes while the fake holds the stream.
    first = asyncio.ensure_future(anext(events))
    done, _ = await asyncio.wait({first}, timeout=0.3)
    assert not done
    fake.dify_hold.set()
    assert await asyncio.wait_for(first, WAIT) == TextDelta("echo: hello there")
    reply = await anext(events)
    assert isinstance(reply, AgentReply) and reply.text == "echo: hello there"
    assert reply.usage == Usage(input_tokens=2, output_tokens=3, total_tokens=5)
    assert split_session(reply.session_id)[1] == "conv-1"


async def test_a_json_http_agent_does_not_stream(fake: FakePlatforms, make_http: MakeHttp) -> None:
    backend = make_http("n8n", stream=True)
    assert not backend.streams

    deltas, reply = await collect(backend.stream("hi", backend.new_session_id()))

    assert deltas == ["echo: hi"] and reply.text == "echo: hi"


async def test_a_custom_sse_agent_without_a_conversation_placeholder(
    fake: FakePlatforms, make_http: MakeHttp
) -> None:
    # Dify's wire format written by hand, the user fixed: the session is the server's
    # id alone (no composite), and the deltas still come per event.
    values = http_config_values("dify", fake, stream=True)
    values.pop("preset")
    values.update(
        url=f"{fake.url}/v1/chat-messages",
        body={
            "query": "{message}",
            "user": "someone",
            "conversation_id": "{session_id}",
            "response_mode": "streaming",
        },
        reply_format="sse",
        session="server",
        answer_path="join('', events[?event=='agent_message'].answer)",
        session_path="events[?conversation_id] | [0].conversation_id",
    )
    backend = make_http(config=HttpAgentConfig.model_validate(values))
    assert isinstance(backend, GenericHttpBackend) and backend.streams

    deltas, reply = await collect(backend.stream("a b", None))
    _, again = await collect(backend.stream("c", reply.session_id))

    assert deltas == ["echo: ", "a ", "b"]
    assert reply.session_id == again.session_id == "conv-1"
    assert reply.usage == Usage()
