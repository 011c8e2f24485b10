"""Each preset of ``backend = "http"`` against its platform's fake, over real HTTP."""

from __future__ import annotations

import logging

import pytest

from bridge.backends.generic import TurnContext, split_session
from bridge.errors import (
    AgentBadReply,
    AgentInsufficientBalance,
    AgentNotFound,
    AgentSessionExpired,
    AgentUnauthorized,
    AgentUnavailable,
)
from bridge.model import Usage
from tests.backends.http_support import (  # noqa: F401 - the fixtures
    MESSAGES,
    MakeHttp,
    fake_fixture,
    http_client_fixture,
    make_http_fixture,
    waits_fixture,
)
from tests.fakes.agent_platforms import (
    CHATFLOW_ID,
    DIFY_KEY,
    FLOW_ID,
    LANGFLOW_KEY,
    N8N_HEADER,
    N8N_PASSWORD,
    FakePlatforms,
)
from tests.fakes.agents import FakeResponse

# --- Dify ---------------------------------------------------------------------------------


async def test_dify_streams_and_the_server_names_the_conversation(
    fake: FakePlatforms, make_http: MakeHttp
) -> None:
    backend = make_http("dify")

    first = await backend.chat("hello there", backend.new_session_id())
    second = await backend.chat("and again", first.session_id)

    assert first.text == "echo: hello there"  # agent_message chunks, joined
    assert first.usage == Usage(input_tokens=2, output_tokens=3, total_tokens=5)
    thread, conversation = split_session(first.session_id)
    assert conversation == "conv-1" and thread is not None
    assert second.session_id == first.session_id
    sent = [c.json for c in fake.chat_calls("dify")]
    assert sent[0]["conversation_id"] == "" and sent[1]["conversation_id"] == "conv-1"
    assert sent[0]["response_mode"] == "streaming"
    assert sent[0]["query"] == "hello there" and sent[0]["inputs"] == {}
    # One user per thread, the same on every turn: the conversation is that user's.
    assert sent[0]["user"] == sent[1]["user"] == thread
    assert fake.memory["dify"] == {"conv-1": ["hello there", "and again"]}
    headers = fake.chat_calls("dify")[0].headers
    assert headers["Authorization"] == f"Bearer {DIFY_KEY}"
    assert headers["Accept"] == "text/event-stream"


async def test_dify_user_stays_the_threads_when_the_speaker_changes(
    fake: FakePlatforms, make_http: MakeHttp
) -> None:
    backend = make_http("dify")
    alice = TurnContext(user_id="1001", user_name="alice")
    bob = TurnContext(user_id="1002", user_name="bob")

    first = await backend.chat("from alice", None, context=alice)
    await backend.chat("from bob", first.session_id, context=bob)

    users = {c.json["user"] for c in fake.chat_calls("dify")}
    assert len(users) == 1
    assert fake.memory["dify"] == {"conv-1": ["from alice", "from bob"]}


async def test_dify_two_threads_never_share_a_conversation(
    fake: FakePlatforms, make_http: MakeHttp
) -> None:
    backend = make_http("dify")

    a = await backend.chat("a1", backend.new_session_id())
    b = await backend.chat("b1", backend.new_session_id())
    await backend.chat("a2", a.session_id)
    await backend.chat("b2", b.session_id)

    assert fake.memory["dify"] == {"conv-1": ["a1", "a2"], "conv-2": ["b1", "b2"]}
    assert split_session(a.session_id)[0] != split_session(b.session_id)[0]


@pytest.mark.parametrize("base", ["{url}", "{url}/", "{url}/v1", "{url}/v1/"])
async def test_dify_base_url_with_or_without_v1(
    fake: FakePlatforms, make_http: MakeHttp, base: str
) -> None:
    backend = make_http("dify", base_url=base.format(url=fake.url))

    reply = await backend.chat("hi", None)

    assert reply.text == "echo: hi"
    assert fake.chat_calls("dify")[0].path == "/v1/chat-messages"


async def test_dify_gone_conversation_is_session_expired(
    fake: FakePlatforms, make_http: MakeHttp
) -> None:
    backend = make_http("dify")
    first = await backend.chat("one", None)
    fake.expire("conv-1")

    with pytest.raises(AgentSessionExpired) as caught:
        await backend.chat("two", first.session_id)

    assert caught.value.user_message == MESSAGES.render("session_expired")
    assert len(fake.chat_calls("dify")) == 2  # not retried by the backend


async def test_dify_404_on_a_first_turn_is_not_found_not_a_session(
    fake: FakePlatforms, make_http: MakeHttp
) -> None:
    backend = make_http("dify")
    fake.script(
        FakeResponse(
            status=404, json={"code": "not_found", "message": "App Not Found", "status": 404}
        )
    )

    with pytest.raises(AgentNotFound):
        await backend.chat("one", backend.new_session_id())


@pytest.mark.parametrize("where", ["status", "stream"])
async def test_dify_provider_quota_exceeded_is_out_of_credit(
    fake: FakePlatforms, make_http: MakeHttp, where: str
) -> None:
    fake.dify_quota = where  # type: ignore[assignment]
    backend = make_http("dify")

    with pytest.raises(AgentInsufficientBalance) as caught:
        await backend.chat("hi", None)

    assert "out of credit" in caught.value.user_message
    assert len(fake.chat_calls("dify")) == 1


async def test_dify_agent_apps_refuse_blocking_which_is_why_the_preset_streams(
    fake: FakePlatforms, make_http: MakeHttp
) -> None:
    # Overriding one body key keeps the rest of the preset's body (tables merge).
    backend = make_http("dify", body={"response_mode": "blocking"})

    with pytest.raises(AgentUnavailable):
        await backend.chat("hi", None)

    assert fake.chat_calls("dify")[0].json["query"] == "hi"


async def test_dify_blocking_works_for_chat_apps_with_the_json_paths(
    fake: FakePlatforms, make_http: MakeHttp
) -> None:
    fake.dify_agent_app = False
    backend = make_http(
        "dify",
        body={"response_mode": "blocking"},
        reply_format="json",
        answer_path="answer",
        session_path="conversation_id",
        usage_path="metadata.usage",
    )

    reply = await backend.chat("hi there", None)

    assert reply.text == "echo: hi there"
    assert split_session(reply.session_id)[1] == "conv-1"
    assert reply.usage.total_tokens == 5


async def test_dify_stream_without_an_answer_is_a_bad_reply_and_logged(
    fake: FakePlatforms, make_http: MakeHttp, caplog: pytest.LogCaptureFixture
) -> None:
    fake.script(
        FakeResponse(
            body='event: ping\n\ndata: {"event": "message_end", "metadata": {}}\n\n',
            headers={"Content-Type": "text/event-stream"},
        )
    )
    caplog.set_level(logging.WARNING, "bridge.backends")

    with pytest.raises(AgentBadReply) as caught:
        await make_http("dify").chat("hi", None)

    assert caught.value.user_message == MESSAGES.render("bad_reply")
    assert "message_end" in caplog.text  # the body's start, in the log


async def test_dify_probe_checks_the_key(fake: FakePlatforms, make_http: MakeHttp) -> None:
    assert "key accepted" in await make_http("dify").probe()
    assert fake.calls[-1].path == "/v1/parameters"

    with pytest.raises(AgentUnauthorized):
        await make_http("dify", api_key="app-wrong").probe()


# --- Flowise ------------------------------------------------------------------------------


async def test_flowise_sends_our_session_in_override_config(
    fake: FakePlatforms, make_http: MakeHttp, caplog: pytest.LogCaptureFixture
) -> None:
    backend = make_http("flowise")
    session = backend.new_session_id()

    first = await backend.chat("one", session)
    second = await backend.chat("two", first.session_id)

    assert first.text == "echo: one" and first.session_id == session == second.session_id
    call = fake.chat_calls("flowise")[0]
    assert call.path == f"/api/v1/prediction/{CHATFLOW_ID}"
    assert call.json == {"question": "one", "overrideConfig": {"sessionId": session}}
    assert fake.memory["flowise"] == {session: ["one", "two"]}
    assert "overrideConfig" not in caplog.text


async def test_flowise_with_override_off_warns_once_naming_the_setting(
    fake: FakePlatforms, make_http: MakeHttp, caplog: pytest.LogCaptureFixture
) -> None:
    fake.flowise_override = False
    caplog.set_level(logging.WARNING, "bridge.backends")
    backend = make_http("flowise")
    session = backend.new_session_id()

    first = await backend.chat("one", session)
    await backend.chat("two", first.session_id)
    await backend.chat("three", first.session_id)

    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "overrideConfig" in warnings[0].getMessage()
    assert "Override Configuration" in warnings[0].getMessage()
    assert first.session_id == session  # ours is kept for the thread


async def test_flowise_probe_is_reachability_only(fake: FakePlatforms, make_http: MakeHttp) -> None:
    text = await make_http("flowise").probe()

    assert "not verified" in text and "--probe default" in text
    assert fake.calls[-1].path == "/api/v1/ping"


async def test_flowise_wrong_key_is_unauthorized(fake: FakePlatforms, make_http: MakeHttp) -> None:
    with pytest.raises(AgentUnauthorized):
        await make_http("flowise", api_key="fw-wrong").chat("hi", None)


# --- Langflow -----------------------------------------------------------------------------


async def test_langflow_reads_the_nested_output_with_x_api_key(
    fake: FakePlatforms, make_http: MakeHttp
) -> None:
    backend = make_http("langflow")
    session = backend.new_session_id()

    reply = await backend.chat("hi there", session)
    await backend.chat("more", reply.session_id)

    assert reply.text == "echo: hi there"
    call = fake.chat_calls("langflow")[0]
    assert call.path == f"/api/v1/run/{FLOW_ID}"
    assert call.headers["x-api-key"] == LANGFLOW_KEY
    assert "Authorization" not in call.headers
    assert call.json == {
        "input_value": "hi there",
        "session_id": session,
        "input_type": "chat",
        "output_type": "chat",
    }
    assert fake.memory["langflow"] == {session: ["hi there", "more"]}


async def test_langflow_threads_never_share_the_flows_session(
    fake: FakePlatforms, make_http: MakeHttp
) -> None:
    backend = make_http("langflow")

    await backend.chat("a", backend.new_session_id())
    await backend.chat("b", backend.new_session_id())

    assert FLOW_ID not in fake.memory["langflow"]  # the shared session was never used
    assert len(fake.memory["langflow"]) == 2


async def test_langflow_wrong_key_and_probe(fake: FakePlatforms, make_http: MakeHttp) -> None:
    with pytest.raises(AgentUnauthorized):
        await make_http("langflow", api_key="sk-wrong").chat("hi", None)
    assert "key accepted" in await make_http("langflow").probe()
    assert fake.calls[-1].path == f"/api/v1/flows/{FLOW_ID}"
    with pytest.raises(AgentNotFound):
        await make_http("langflow", params={"flow_id": "nope"}).probe()


# --- n8n ----------------------------------------------------------------------------------


async def test_n8n_basic_auth_and_a_client_made_session(
    fake: FakePlatforms, make_http: MakeHttp
) -> None:
    backend = make_http("n8n")
    session = backend.new_session_id()

    first = await backend.chat("one", session)
    await backend.chat("two", first.session_id)

    assert first.text == "echo: one" and first.session_id == session
    call = fake.chat_calls("n8n")[0]
    assert call.json == {"action": "sendMessage", "chatInput": "one", "sessionId": session}
    assert call.headers["Authorization"].startswith("Basic ")
    assert fake.memory["n8n"] == {session: ["one", "two"]}


async def test_n8n_header_auth(fake: FakePlatforms, make_http: MakeHttp) -> None:
    fake.n8n_auth = "header"
    reply = await make_http("n8n").chat("hi", None)

    assert reply.text == "echo: hi"
    assert fake.chat_calls("n8n")[0].headers[N8N_HEADER] == N8N_PASSWORD


async def test_n8n_without_auth_sends_no_credentials(
    fake: FakePlatforms, make_http: MakeHttp
) -> None:
    fake.n8n_auth = "none"
    await make_http("n8n").chat("hi", None)

    assert "Authorization" not in fake.chat_calls("n8n")[0].headers


async def test_n8n_wrong_password_is_unauthorized(fake: FakePlatforms, make_http: MakeHttp) -> None:
    with pytest.raises(AgentUnauthorized):
        await make_http("n8n", api_key="bridge:wrong").chat("hi", None)


@pytest.mark.parametrize(
    "answer",
    [{"output": "from output"}, {"text": "from text"}, [{"output": "from a list"}]],
)
async def test_n8n_answer_is_output_else_text(
    fake: FakePlatforms, make_http: MakeHttp, answer: object
) -> None:
    fake.script(FakeResponse(json=answer))

    reply = await make_http("n8n").chat("hi", None)

    assert reply.text.startswith("from ")


async def test_n8n_probe_is_reachability_only(fake: FakePlatforms, make_http: MakeHttp) -> None:
    # The trigger answers GET with 404: still proof that the address is right.
    text = await make_http("n8n").probe()

    assert "not verified" in text
    assert fake.calls[-1].method == "GET"
