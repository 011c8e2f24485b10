"""`OpenAIBackend` against `FakeOpenAI` over real HTTP: memory in each mode (a
Conversations API conversation, a previous_response_id chain, the bridge's own
history on a real store), the request each turn sends, every error row with its
friendly text, the probe, and the config's errors."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.backends import OpenAIBackend, create_backends
from bridge.config import ConfigError, OpenAIAgentConfig, load_config, parse_config
from bridge.errors import (
    AgentBadReply,
    AgentError,
    AgentInsufficientBalance,
    AgentNotFound,
    AgentRateLimited,
    AgentSessionExpired,
    AgentTimeout,
    AgentUnauthorized,
    AgentUnavailable,
)
from bridge.history import ConversationHistory, MemoryHistory
from storage import Store
from tests.backends.conftest import MESSAGES, assert_safe_user_text
from tests.fakes.agents import FakeResponse
from tests.fakes.openai_api import (
    FAKE_MODEL,
    FAKE_OPENAI_KEY,
    INSUFFICIENT_QUOTA,
    FakeOpenAI,
    openai_config,
    openai_error,
    rate_limited,
)

#: Each way the backend keeps a thread's memory: (api, memory) config keys.
MODES = {
    "conversation": {"api": "responses", "memory": "conversation"},
    "previous_response_id": {"api": "responses", "memory": "previous_response_id"},
    "chat": {"api": "chat"},
}
#: The path each mode's turns go to.
TURN_PATH = {
    "conversation": "/responses",
    "previous_response_id": "/responses",
    "chat": "/chat/completions",
}


@pytest.fixture
async def api() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(api_key=FAKE_OPENAI_KEY) as server:
        yield server


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with Store(f"sqlite+aiosqlite:///{tmp_path}/bridge.db") as opened:
        yield opened


MakeOpenAI = Callable[..., OpenAIBackend]


@pytest.fixture
def make_openai(
    api: FakeOpenAI, client: httpx.AsyncClient, store: Store, fast_sleep: Any
) -> MakeOpenAI:
    def make(
        mode: str = "conversation",
        *,
        url: str | None = None,
        history: ConversationHistory | None = store,
        **overrides: Any,
    ) -> OpenAIBackend:
        config = openai_config(url or api.url, **{**MODES[mode], **overrides})
        return OpenAIBackend(
            "default", config, messages=MESSAGES, client=client, history=history, sleep=fast_sleep
        )

    return make


def check_error(exc: AgentError, api: FakeOpenAI, kind: str) -> None:
    assert exc.kind == kind
    assert exc.agent == "default"
    # The same text the dispatcher would show (an expired session is retried before
    # any user sees it: internal_error is its fallback).
    assert exc.user_message == MESSAGES.render(kind, retry_after=getattr(exc, "retry_after", 0))
    assert_safe_user_text(exc.user_message, url=api.url)
    assert FAKE_OPENAI_KEY not in exc.user_message + str(exc)


# --- memory -----------------------------------------------------------------------------


async def test_conversation_mode_creates_one_conversation_and_keeps_it(
    api: FakeOpenAI, make_openai: MakeOpenAI
) -> None:
    backend = make_openai("conversation")
    assert backend.new_session_id() is None

    first = await backend.chat("one", None)
    second = await backend.chat("two", first.session_id)

    [created] = api.calls_to("/conversations")
    assert created.headers["Authorization"] == f"Bearer {FAKE_OPENAI_KEY}"
    assert first.session_id is not None and first.session_id.startswith("conv_")
    assert second.session_id == first.session_id
    sent = [c.json for c in api.calls_to("/responses")]
    assert [s["conversation"] for s in sent] == [first.session_id] * 2
    assert [s["input"] for s in sent] == ["one", "two"]
    assert all(s["model"] == FAKE_MODEL and "previous_response_id" not in s for s in sent)
    assert first.text == "echo: one"
    assert second.text == "echo: two [remembers: one]"
    assert api.conversations[first.session_id] == ["one", "two"]


async def test_previous_response_id_mode_chains_the_responses(
    api: FakeOpenAI, make_openai: MakeOpenAI
) -> None:
    backend = make_openai("previous_response_id")
    assert backend.new_session_id() is None

    first = await backend.chat("one", None)
    second = await backend.chat("two", first.session_id)
    third = await backend.chat("three", second.session_id)

    assert api.calls_to("/conversations") == []
    sent = [c.json for c in api.calls_to("/responses")]
    assert "previous_response_id" not in sent[0]
    assert sent[1]["previous_response_id"] == first.session_id
    assert sent[2]["previous_response_id"] == second.session_id
    # The session rotates: each answer's id is the next turn's memory.
    assert len({first.session_id, second.session_id, third.session_id}) == 3
    assert third.text == "echo: three [remembers: one | two]"


async def test_chat_mode_resends_the_threads_turns_from_the_store(
    api: FakeOpenAI, make_openai: MakeOpenAI, store: Store
) -> None:
    backend = make_openai("chat", system_prompt="Be brief.")
    session = backend.new_session_id()
    assert session is not None and session != backend.new_session_id()

    first = await backend.chat("one", session)
    second = await backend.chat("two", first.session_id)

    assert first.session_id == second.session_id == session
    assert second.text == "echo: two [remembers: one]"
    [_, call] = api.calls_to("/chat/completions")
    assert call.json["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "echo: one"},
        {"role": "user", "content": "two"},
    ]
    turns = await store.load(session, max_chars=10_000)
    assert [(t.user, t.assistant) for t in turns] == [
        ("one", "echo: one"),
        ("two", "echo: two [remembers: one]"),
    ]


@pytest.mark.parametrize("mode", list(MODES))
async def test_two_threads_never_share_memory(
    api: FakeOpenAI, make_openai: MakeOpenAI, mode: str
) -> None:
    backend = make_openai(mode)
    a = await backend.chat("a1", backend.new_session_id())
    b = await backend.chat("b1", backend.new_session_id())
    a = await backend.chat("a2", a.session_id)
    b = await backend.chat("b2", b.session_id)

    assert a.session_id != b.session_id
    assert a.text == "echo: a2 [remembers: a1]"
    assert b.text == "echo: b2 [remembers: b1]"


async def test_chat_history_stays_within_history_chars(
    api: FakeOpenAI, make_openai: MakeOpenAI
) -> None:
    # Each turn is "mN" + "echo: mN [...]": the budget holds the newest two or so.
    budget = 80
    backend = make_openai("chat", history_chars=budget)
    session = backend.new_session_id()
    for n in range(8):
        await backend.chat(f"m{n}", session)

    for call in api.calls_to("/chat/completions"):
        earlier = call.json["messages"][:-1]
        assert sum(len(m["content"]) for m in earlier) <= budget
    last = api.calls_to("/chat/completions")[-1].json["messages"]
    assert last[-1] == {"role": "user", "content": "m7"}
    assert last[-3]["content"] == "m6"  # the newest earlier turn is always the first kept
    assert {"role": "user", "content": "m0"} not in last
    assert 2 < len(last) < 15


async def test_a_turn_longer_than_the_budget_is_not_resent(
    api: FakeOpenAI, make_openai: MakeOpenAI
) -> None:
    backend = make_openai("chat", history_chars=10)
    session = backend.new_session_id()
    await backend.chat("a message far longer than ten characters", session)
    await backend.chat("next", session)

    assert api.calls_to("/chat/completions")[-1].json["messages"] == [
        {"role": "user", "content": "next"}
    ]


@pytest.mark.parametrize("mode", ["conversation", "previous_response_id"])
async def test_instructions_are_sent_on_every_turn(
    api: FakeOpenAI, make_openai: MakeOpenAI, mode: str
) -> None:
    backend = make_openai(mode, system_prompt="You are terse.")
    reply = await backend.chat("one", None)
    reply = await backend.chat("two", reply.session_id)
    await backend.chat("three", reply.session_id)

    sent = [c.json for c in api.calls_to("/responses")]
    assert [s["instructions"] for s in sent] == ["You are terse."] * 3


async def test_no_system_prompt_sends_no_instructions(
    api: FakeOpenAI, make_openai: MakeOpenAI
) -> None:
    await make_openai("previous_response_id").chat("hi", None)
    await make_openai("chat").chat("hi", "thread")

    assert "instructions" not in api.calls_to("/responses")[0].json
    assert [m["role"] for m in api.calls_to("/chat/completions")[0].json["messages"]] == ["user"]


@pytest.mark.parametrize("mode", list(MODES))
async def test_extra_fields_are_passed_through(
    api: FakeOpenAI, make_openai: MakeOpenAI, mode: str
) -> None:
    extra = {"temperature": 0.2, "reasoning": {"effort": "low"}, "metadata": {"app": "bridge"}}
    backend = make_openai(mode, extra=extra)
    await backend.chat("hi", backend.new_session_id())

    body = api.calls_to(TURN_PATH[mode])[0].json
    assert {k: body[k] for k in extra} == extra
    assert body["model"] == FAKE_MODEL


async def test_usage_is_read_in_both_apis(api: FakeOpenAI, make_openai: MakeOpenAI) -> None:
    responses = await make_openai("previous_response_id").chat("two words", None)
    chat = await make_openai("chat").chat("two words", "thread")

    # The fake counts words: "two words" in, "echo: two words" out.
    assert (responses.usage.input_tokens, responses.usage.output_tokens) == (2, 3)
    assert responses.usage.total_tokens == 5
    assert (chat.usage.input_tokens, chat.usage.output_tokens, chat.usage.total_tokens) == (
        2,
        3,
        5,
    )


async def test_the_answer_is_every_output_text_of_the_message_items(
    api: FakeOpenAI, make_openai: MakeOpenAI
) -> None:
    api.script(
        "/responses",
        FakeResponse(
            json={
                "id": "resp_x",
                "status": "completed",
                # No SDK-only "output_text" here: the wire format has output[] only.
                "output": [
                    {"type": "reasoning", "summary": [{"type": "summary_text", "text": "hmm"}]},
                    {"type": "function_call", "name": "f", "arguments": "{}"},
                    {
                        "type": "message",
                        "role": "assistant",
                        "content": [
                            {"type": "output_text", "text": "Hello, "},
                            {"type": "output_text", "text": "world."},
                        ],
                    },
                ],
            }
        ),
    )
    reply = await make_openai("previous_response_id").chat("hi", None)
    assert reply.text == "Hello, world."
    assert reply.session_id == "resp_x"
    assert reply.usage.total_tokens == 0  # no usage: counted as nothing, not an error


@pytest.mark.parametrize(
    ("mode", "body"),
    [
        ("conversation", {"id": "resp_1", "status": "incomplete", "output": []}),
        ("conversation", {"id": "resp_1", "output": [{"type": "reasoning", "summary": []}]}),
        ("conversation", ["not", "an", "object"]),
        ("chat", {"choices": []}),
        ("chat", {"choices": [{"message": {"role": "assistant", "content": None}}]}),
        ("chat", {"choices": [{"message": {"role": "assistant", "content": "   "}}]}),
    ],
)
async def test_a_body_without_an_answer_is_a_bad_reply(
    api: FakeOpenAI, make_openai: MakeOpenAI, caplog: pytest.LogCaptureFixture, mode: str, body: Any
) -> None:
    api.script(TURN_PATH[mode], FakeResponse(json=body))
    backend = make_openai(mode)
    with (
        caplog.at_level(logging.WARNING, logger="bridge.backends"),
        pytest.raises(AgentBadReply) as info,
    ):
        await backend.chat("hi", "conv_known" if mode == "conversation" else "thread")

    check_error(info.value, api, "bad_reply")
    assert "unreadable reply" in caplog.text


async def test_a_refusal_is_shown_rather_than_called_unreadable(
    api: FakeOpenAI, make_openai: MakeOpenAI
) -> None:
    refusal = {"type": "refusal", "refusal": "I can't help with that."}
    api.script(
        "/responses",
        FakeResponse(json={"id": "r", "output": [{"type": "message", "content": [refusal]}]}),
    )
    api.script(
        "/chat/completions",
        FakeResponse(
            json={"choices": [{"message": {"content": None, "refusal": "I can't help with that."}}]}
        ),
    )
    assert (await make_openai("previous_response_id").chat("x", None)).text == (
        "I can't help with that."
    )
    assert (await make_openai("chat").chat("x", "t")).text == "I can't help with that."


# --- gone memory ----------------------------------------------------------------------------


async def test_a_conversation_that_is_gone_is_an_expired_session(
    api: FakeOpenAI, make_openai: MakeOpenAI, sleeps: list[float]
) -> None:
    backend = make_openai("conversation")
    first = await backend.chat("one", None)
    assert first.session_id is not None
    api.forget(first.session_id)

    with pytest.raises(AgentSessionExpired) as info:
        await backend.chat("two", first.session_id)

    check_error(info.value, api, "session_expired")
    assert sleeps == []
    # What the dispatcher does next: a fresh session, which is a new conversation.
    fresh = await backend.chat("two", backend.new_session_id())
    assert fresh.session_id not in (None, first.session_id)
    assert fresh.text == "echo: two"
    assert len(api.calls_to("/conversations")) == 2


async def test_a_stored_response_that_is_gone_is_an_expired_session(
    api: FakeOpenAI, make_openai: MakeOpenAI, sleeps: list[float]
) -> None:
    backend = make_openai("previous_response_id")
    first = await backend.chat("one", None)
    assert first.session_id is not None
    api.forget(first.session_id)

    with pytest.raises(AgentSessionExpired) as info:
        await backend.chat("two", first.session_id)

    [_, gone] = api.calls_to("/responses")
    assert gone.json["previous_response_id"] == first.session_id
    check_error(info.value, api, "session_expired")
    assert sleeps == []
    assert (await backend.chat("two", backend.new_session_id())).text == "echo: two"


async def test_a_404_for_the_conversation_is_expired_whatever_its_words(
    api: FakeOpenAI, make_openai: MakeOpenAI
) -> None:
    # The generic table would read "project" as the agent being missing; in
    # conversation mode the conversation is the only id a request names.
    api.script("/responses", openai_error(404, "Conversation conv_1 not found in project p_1."))
    with pytest.raises(AgentSessionExpired):
        await make_openai("conversation").chat("hi", "conv_1")


async def test_a_400_about_the_memory_parameter_is_an_expired_session(
    api: FakeOpenAI, make_openai: MakeOpenAI
) -> None:
    # E.g. a thread whose stored session came from another memory mode.
    api.script("/responses", openai_error(400, "Invalid 'conversation'.", param="conversation"))
    with pytest.raises(AgentSessionExpired):
        await make_openai("conversation").chat("hi", "resp_from_another_mode")


async def test_an_unknown_model_is_not_found_not_an_expired_session(
    api: FakeOpenAI, make_openai: MakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    backend = make_openai("conversation", model="no-such-model")
    with (
        caplog.at_level(logging.ERROR, logger="bridge.backends"),
        pytest.raises(AgentNotFound) as info,
    ):
        await backend.chat("hi", None)

    check_error(info.value, api, "not_found")
    assert "agents.default.model" in caplog.text


async def test_a_404_in_chat_mode_is_not_found_never_an_expired_session(
    api: FakeOpenAI, make_openai: MakeOpenAI
) -> None:
    # The thread's id never reaches the server: a 404 is the URL or the model.
    api.script("/chat/completions", FakeResponse(status=404, body="404 page not found"))
    with pytest.raises(AgentNotFound):
        await make_openai("chat").chat("hi", "some-thread")


# --- the error table ----------------------------------------------------------------------

ROWS = [
    # (scripted answer, error class, kind, calls the server saw)
    pytest.param(FakeResponse(status=402, json={}), AgentInsufficientBalance, 1, id="402"),
    pytest.param(INSUFFICIENT_QUOTA, AgentInsufficientBalance, 1, id="429-insufficient_quota"),
    pytest.param(
        openai_error(401, "Incorrect API key provided", code="invalid_api_key"),
        AgentUnauthorized,
        1,
        id="401",
    ),
    pytest.param(openai_error(403, "Forbidden"), AgentUnauthorized, 1, id="403"),
    pytest.param(openai_error(404, "Not found"), AgentNotFound, 1, id="404-without-a-session"),
    pytest.param(
        openai_error(500, "Server error", type="server_error"), AgentUnavailable, 3, id="500"
    ),
    pytest.param(
        openai_error(503, "The engine is currently overloaded", type="server_error"),
        AgentUnavailable,
        3,
        id="503-overloaded",
    ),
    pytest.param(FakeResponse(status=504, body="Gateway Timeout"), AgentTimeout, 1, id="504"),
    pytest.param(
        openai_error(400, "Unsupported parameter: 'temperature'", param="temperature"),
        AgentUnavailable,
        1,
        id="other-400",
    ),
    pytest.param(FakeResponse(body="<html>oops</html>"), AgentBadReply, 1, id="not-json"),
]


@pytest.mark.parametrize(("scripted", "error", "calls"), ROWS)
@pytest.mark.parametrize("mode", ["previous_response_id", "chat"])
async def test_every_error_row_gives_its_friendly_text(
    api: FakeOpenAI,
    make_openai: MakeOpenAI,
    mode: str,
    scripted: FakeResponse,
    error: type[AgentError],
    calls: int,
) -> None:
    path = TURN_PATH[mode]
    api.script(path, *[scripted] * calls)
    with pytest.raises(error) as info:
        # A budget that lets every retry of the table happen (the sleeps are not real).
        await make_openai(mode, max_retry_wait=10).chat("hi", None)

    assert len(api.calls_to(path)) == calls
    check_error(info.value, api, error.kind)


async def test_insufficient_quota_is_never_retried(
    api: FakeOpenAI, make_openai: MakeOpenAI, sleeps: list[float]
) -> None:
    # Scripted twice: a retry would get the second one, not the default answer.
    api.script("/responses", INSUFFICIENT_QUOTA, INSUFFICIENT_QUOTA)
    with pytest.raises(AgentInsufficientBalance) as info:
        await make_openai("previous_response_id", max_retry_wait=60).chat("hi", None)

    assert len(api.calls_to("/responses")) == 1
    assert sleeps == []
    assert info.value.user_message == MESSAGES.insufficient_balance


async def test_a_rate_limit_waits_for_retry_after_then_succeeds(
    api: FakeOpenAI, make_openai: MakeOpenAI, sleeps: list[float]
) -> None:
    api.script("/responses", rate_limited("1"))
    reply = await make_openai("previous_response_id").chat("hi", None)

    assert reply.text == "echo: hi"
    assert len(api.calls_to("/responses")) == 2
    assert sleeps == [1.0]


async def test_a_lasting_rate_limit_gives_the_busy_text_with_the_wait(
    api: FakeOpenAI, make_openai: MakeOpenAI, sleeps: list[float]
) -> None:
    api.script("/chat/completions", *[rate_limited("2")] * 10)
    with pytest.raises(AgentRateLimited) as info:
        await make_openai("chat", max_retry_wait=3).chat("hi", None)

    assert sleeps == [2.0]  # a second wait would pass max_retry_wait
    assert len(api.calls_to("/chat/completions")) == 2
    assert info.value.retry_after == 2
    check_error(info.value, api, "rate_limited")


async def test_a_503_is_retried_and_then_answered(
    api: FakeOpenAI, make_openai: MakeOpenAI, sleeps: list[float]
) -> None:
    api.script("/chat/completions", openai_error(503, "overloaded", type="server_error"))
    reply = await make_openai("chat").chat("hi", "thread")

    assert reply.text == "echo: hi"
    assert len(api.calls_to("/chat/completions")) == 2
    assert len(sleeps) == 1


async def test_a_read_timeout_is_not_retried(api: FakeOpenAI, make_openai: MakeOpenAI) -> None:
    api.script("/responses", FakeResponse(delay=5))
    with pytest.raises(AgentTimeout) as info:
        await make_openai("previous_response_id", timeout=0.3).chat("hi", None)

    assert len(api.calls_to("/responses")) == 1
    check_error(info.value, api, "timeout")


async def test_a_server_that_is_not_there_is_unavailable(
    make_openai: MakeOpenAI, sleeps: list[float]
) -> None:
    with pytest.raises(AgentUnavailable) as info:
        await make_openai("chat", url="http://127.0.0.1:9/v1", max_retry_wait=10).chat("hi", None)

    assert len(sleeps) == 2  # three attempts
    assert_safe_user_text(info.value.user_message)


# --- the conversation's creation goes through the same table -------------------------------


@pytest.mark.parametrize(
    ("scripted", "error"),
    [
        (
            openai_error(401, "Incorrect API key provided", code="invalid_api_key"),
            AgentUnauthorized,
        ),
        (INSUFFICIENT_QUOTA, AgentInsufficientBalance),
        (FakeResponse(status=404, body="Not Found"), AgentNotFound),
        (FakeResponse(json={"object": "conversation"}), AgentBadReply),
    ],
)
async def test_creating_the_conversation_fails_with_the_friendly_text(
    api: FakeOpenAI, make_openai: MakeOpenAI, scripted: FakeResponse, error: type[AgentError]
) -> None:
    api.script("/conversations", scripted)
    with pytest.raises(error) as info:
        await make_openai("conversation").chat("hi", None)

    check_error(info.value, api, error.kind)
    assert api.calls_to("/responses") == []  # no turn without its memory


async def test_a_server_without_conversations_says_which_setting_to_change(
    api: FakeOpenAI, make_openai: MakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    api.script("/conversations", FakeResponse(status=404, body="404 page not found"))
    with caplog.at_level(logging.ERROR, logger="bridge.backends"), pytest.raises(AgentNotFound):
        await make_openai("conversation").chat("hi", None)

    assert 'agents.default.memory = "previous_response_id"' in caplog.text


async def test_creating_the_conversation_is_retried_when_the_server_is_busy(
    api: FakeOpenAI, make_openai: MakeOpenAI, sleeps: list[float]
) -> None:
    api.script("/conversations", openai_error(503, "overloaded"), rate_limited("1"))
    reply = await make_openai("conversation").chat("hi", None)

    assert reply.text == "echo: hi"
    assert len(api.calls_to("/conversations")) == 3
    assert sleeps[-1] == 1.0


# --- keys -------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", list(MODES))
async def test_no_api_key_sends_no_authorization_header(
    client: httpx.AsyncClient, mode: str
) -> None:
    async with FakeOpenAI(api_key=None) as ollama:
        config = openai_config(ollama.url, api_key=None, **MODES[mode])
        backend = OpenAIBackend(
            "default", config, messages=MESSAGES, client=client, history=MemoryHistory()
        )
        reply = await backend.chat("one", backend.new_session_id())
        await backend.chat("two", reply.session_id)
        assert await backend.probe()

    assert len(ollama.calls) >= 3
    assert all("Authorization" not in c.headers for c in ollama.calls)


def test_the_key_is_in_no_repr(api: FakeOpenAI, make_openai: MakeOpenAI) -> None:
    backend = make_openai("chat")
    assert FAKE_OPENAI_KEY not in repr(backend) + repr(backend.config)
    assert "chat" in repr(backend)


# --- probe ------------------------------------------------------------------------------------


async def test_probe_lists_the_models_and_finds_ours(
    api: FakeOpenAI, make_openai: MakeOpenAI
) -> None:
    text = await make_openai("conversation").probe()

    [call] = api.calls
    assert (call.method, call.path) == ("GET", "/models")
    assert call.headers["Authorization"] == f"Bearer {FAKE_OPENAI_KEY}"
    assert f"model {FAKE_MODEL} available" in text
    assert "key accepted" in text
    assert FAKE_OPENAI_KEY not in text


async def test_probe_says_when_the_model_is_not_listed(
    api: FakeOpenAI, make_openai: MakeOpenAI
) -> None:
    text = await make_openai("chat", model="gpt-nonexistent").probe()
    assert "gpt-nonexistent is not among the 1" in text
    assert "agents.default.model" in text


async def test_probe_accepts_ollamas_latest_tag(client: httpx.AsyncClient) -> None:
    async with FakeOpenAI(models=("llama3.2:latest",)) as ollama:
        config = openai_config(ollama.url, api_key=None, api="chat", model="llama3.2")
        backend = OpenAIBackend("default", config, messages=MESSAGES, client=client)
        assert "model llama3.2 available" in await backend.probe()


async def test_probe_with_an_unreadable_model_list(
    api: FakeOpenAI, make_openai: MakeOpenAI
) -> None:
    api.script("/models", FakeResponse(json={"models": "?"}))
    assert "model list is unreadable" in await make_openai("chat").probe()


async def test_probe_with_a_refused_key(api: FakeOpenAI, make_openai: MakeOpenAI) -> None:
    with pytest.raises(AgentUnauthorized):
        await make_openai("chat", api_key="sk-wrong").probe()


# --- wiring -----------------------------------------------------------------------------------


async def test_chat_mode_without_a_history_is_a_clear_error(
    api: FakeOpenAI, make_openai: MakeOpenAI
) -> None:
    backend = make_openai("chat", history=None)
    with pytest.raises(RuntimeError, match=r'agents\.default: api = "chat" .*history=store'):
        await backend.chat("hi", "thread")
    assert api.calls == []
    # The probe needs no history (`agent-bridge check` has none).
    assert await backend.probe()


async def test_create_backends_hands_the_history_to_openai_agents(
    api: FakeOpenAI, client: httpx.AsyncClient, store: Store
) -> None:
    configs = {"default": openai_config(api.url, api="chat")}
    [backend] = create_backends(configs, messages=MESSAGES, client=client, history=store).values()
    assert isinstance(backend, OpenAIBackend)

    session = backend.new_session_id()
    await backend.chat("one", session)
    assert (await backend.chat("two", session)).text == "echo: two [remembers: one]"


# --- config ------------------------------------------------------------------------------------


def problems(agent: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config({"agents": {"default": agent}}, base_dir=Path("/tmp"), environ={})
    return info.value.problems


def openai_agent(**keys: Any) -> dict[str, Any]:
    return {"backend": "openai", "model": "gpt-5-mini", **keys}


def test_config_defaults() -> None:
    config = parse_config({"agents": {"default": openai_agent()}}, base_dir=Path("/tmp"))
    agent = config.agents["default"]
    assert isinstance(agent, OpenAIAgentConfig)
    assert (agent.base_url, agent.api, agent.memory) == (
        "https://api.openai.com/v1",
        "responses",
        "conversation",
    )
    assert agent.api_key is None and agent.system_prompt is None and agent.extra == {}
    assert agent.history_chars == 24_000


def test_config_reads_the_key_from_the_environment_and_hides_it(tmp_path: Path) -> None:
    env = {"OPENAI_API_KEY": FAKE_OPENAI_KEY}
    raw = {"agents": {"default": openai_agent(api_key="${OPENAI_API_KEY}")}}
    agent = parse_config(raw, base_dir=tmp_path, environ=env).agents["default"]
    assert (
        isinstance(agent, OpenAIAgentConfig)
        and agent.api_key is not None
        and agent.api_key.get_secret_value() == FAKE_OPENAI_KEY
    )
    assert FAKE_OPENAI_KEY not in repr(agent)

    (tmp_path / "key").write_text(FAKE_OPENAI_KEY + "\n")
    raw = {"agents": {"default": openai_agent(api_key_file="key")}}
    agent = parse_config(raw, base_dir=tmp_path, environ={}).agents["default"]
    assert (
        isinstance(agent, OpenAIAgentConfig)
        and agent.api_key is not None
        and agent.api_key.get_secret_value() == FAKE_OPENAI_KEY
    )


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ({"model": None}, "agents.default.model: missing (required)"),
        ({"model": ""}, "agents.default.model: should have at least 1 character"),
        ({"api": "completions"}, 'agents.default.api: expected one of "responses", "chat"'),
        (
            {"memory": "thread"},
            'agents.default.memory: expected one of "conversation", "previous_response_id"',
        ),
        ({"api": "chat", "memory": "conversation"}, "agents.default.memory: applies to api"),
        ({"history_chars": 1000}, 'agents.default.history_chars: applies to api = "chat" only'),
        ({"api": "chat", "history_chars": 0}, "agents.default.history_chars: "),
        (
            {"api": "chat", "history_chars": "1000"},
            "agents.default.history_chars: expected an integer",
        ),
        ({"base_url": "localhost:11434/v1"}, "agents.default.base_url: expected an http"),
        ({"api_key": ""}, "agents.default.api_key: is empty"),
        ({"system_prompt": ""}, "agents.default.system_prompt: "),
        (
            {"extra": {"model": "gpt-4o"}},
            "agents.default.extra.model: set by the bridge (from model)",
        ),
        (
            {"extra": {"instructions": "x"}},
            "agents.default.extra.instructions: set by the bridge (from system_prompt)",
        ),
        ({"extra": {"input": "x"}}, "agents.default.extra.input: set by the bridge"),
        ({"extra": {"messages": []}}, "agents.default.extra.messages: set by the bridge"),
        (
            {"extra": {"conversation": "c"}},
            "agents.default.extra.conversation: set by the bridge (from memory)",
        ),
        ({"extra": {"previous_response_id": "r"}}, "agents.default.extra.previous_response_id: "),
        ({"extra": {"stream": True}}, "agents.default.extra.stream: set by the bridge"),
        ({"extra": "temperature=1"}, "agents.default.extra: expected a table"),
        (
            {"memory": "previous_response_id", "extra": {"store": False}},
            'agents.default.extra.store: memory = "previous_response_id" needs',
        ),
        ({"modle": "x"}, 'agents.default.modle: unknown key; did you mean "model"?'),
    ],
)
def test_config_errors_name_the_key(keys: dict[str, Any], expected: str) -> None:
    agent = openai_agent(**keys)
    if keys.get("model", "") is None:
        del agent["model"]
    found = problems(agent)
    assert any(line.startswith(expected) for line in found), found


def test_toml_dates_in_extra_are_refused_where_they_are(tmp_path: Path) -> None:
    path = tmp_path / "agent-bridge.toml"
    path.write_text(
        '[agents.default]\nbackend = "openai"\nmodel = "m"\n'
        "extra = { metadata = { since = 2025-01-01 }, stop = [1, 2025-01-02T10:00:00] }\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    assert [p.partition(":")[0] for p in info.value.problems] == [
        "agents.default.extra.metadata.since",
        "agents.default.extra.stop[1]",
    ]
