"""ThinnestBackend against the fake thinnest.ai API over real HTTP."""

from __future__ import annotations

import pytest

from bridge.backends import EchoBackend, PeakaBackend, ThinnestBackend, create_backends
from bridge.config import EchoAgentConfig
from bridge.errors import AgentNotFound, AgentUnauthorized
from bridge.model import Usage
from tests.backends.conftest import MESSAGES, MakeBackend
from tests.fakes.agents import (
    FAKE_AGENT_ID,
    FAKE_API_KEY,
    FakeAgentServer,
    FakeResponse,
    peaka_config,
    thinnest_config,
)


async def test_first_turn_starts_a_session(agents: FakeAgentServer, make_thinnest: MakeBackend):
    backend = make_thinnest()

    reply = await backend.chat("hello there", None)

    assert reply.text == "echo: hello there"
    assert reply.session_id == "sess-1"
    assert reply.usage == Usage(input_tokens=2, output_tokens=3, total_tokens=5)
    [call] = agents.chat_calls
    assert call.method == "POST"
    assert call.path == f"/v1/agents/{FAKE_AGENT_ID}/chat"
    assert call.headers["Authorization"] == f"Bearer {FAKE_API_KEY}"
    # No session_id at all (not null) starts a session.
    assert call.json == {"message": "hello there"}


async def test_later_turns_reuse_the_session(agents: FakeAgentServer, make_thinnest: MakeBackend):
    backend = make_thinnest()

    first = await backend.chat("one", None)
    second = await backend.chat("two", first.session_id)
    third = await backend.chat("three", second.session_id)

    assert first.session_id == second.session_id == third.session_id == "sess-1"
    assert [c.json.get("session_id") for c in agents.chat_calls] == [None, "sess-1", "sess-1"]
    assert agents.sessions == {"sess-1": ["one", "two", "three"]}


async def test_older_tokens_used_counts_as_total(
    agents: FakeAgentServer, make_thinnest: MakeBackend
):
    agents.script(FakeResponse(json={"response": "hi", "session_id": "s9", "tokens_used": 42}))

    reply = await make_thinnest().chat("hello", None)

    assert reply.usage == Usage(input_tokens=0, output_tokens=0, total_tokens=42)
    assert reply.session_id == "s9"


async def test_usage_without_total_adds_up(agents: FakeAgentServer, make_thinnest: MakeBackend):
    agents.script(
        FakeResponse(json={"response": "hi", "usage": {"input_tokens": 7, "output_tokens": 5}})
    )

    reply = await make_thinnest().chat("hello", "s1")

    assert reply.usage == Usage(input_tokens=7, output_tokens=5, total_tokens=12)
    # The answer named no session: the one sent is kept.
    assert reply.session_id == "s1"


async def test_odd_usage_values_do_not_fail_the_turn(
    agents: FakeAgentServer, make_thinnest: MakeBackend
):
    agents.script(FakeResponse(json={"response": "hi", "usage": {"input_tokens": "many"}}))

    reply = await make_thinnest().chat("hello", None)

    assert reply.text == "hi"
    assert reply.usage == Usage()


async def test_probe_spends_no_turn(agents: FakeAgentServer, make_thinnest: MakeBackend):
    text = await make_thinnest().probe()

    assert "key accepted" in text
    assert agents.chat_calls == []
    [call] = agents.calls
    assert (call.method, call.path) == ("GET", f"/v1/agents/{FAKE_AGENT_ID}")
    assert call.headers["Authorization"] == f"Bearer {FAKE_API_KEY}"


@pytest.mark.parametrize(
    ("status", "error"), [(401, AgentUnauthorized), (403, AgentUnauthorized), (404, AgentNotFound)]
)
async def test_probe_maps_refusals(
    agents: FakeAgentServer, make_thinnest: MakeBackend, status: int, error: type[Exception]
):
    agents.script_probe(FakeResponse(status=status, json={"detail": "nope"}))

    with pytest.raises(error):
        await make_thinnest().probe()
    assert len(agents.calls) == 1


async def test_probe_of_an_api_without_the_endpoint_says_key_not_verified(
    agents: FakeAgentServer, make_thinnest: MakeBackend
):
    agents.script_probe(FakeResponse(status=405, json={"detail": "Method Not Allowed"}))

    text = await make_thinnest().probe()

    assert "reachable" in text
    assert "not verified" in text


async def test_wrong_key_is_refused_by_the_fake(make_thinnest: MakeBackend):
    # The fake really checks the key; this is what makes the 401 tests meaningful.
    async with FakeAgentServer(api_key="the-right-key") as strict:
        with pytest.raises(AgentUnauthorized):
            await make_thinnest(url=strict.url).chat("hi", None)


async def test_repr_hides_the_key(make_thinnest: MakeBackend, make_peaka: MakeBackend):
    for backend in (make_thinnest(), make_peaka()):
        assert FAKE_API_KEY not in repr(backend)
        assert FAKE_API_KEY not in str(vars(backend))


async def test_base_url_with_trailing_slash(agents: FakeAgentServer, make_thinnest: MakeBackend):
    reply = await make_thinnest(url=agents.url + "/").chat("hi", None)

    assert reply.text == "echo: hi"
    assert agents.chat_calls[0].path == f"/v1/agents/{FAKE_AGENT_ID}/chat"


async def test_create_backends_builds_one_per_agent(agents: FakeAgentServer, client):
    configs = {
        "default": thinnest_config(agents.url),
        "analytics": peaka_config(agents.url),
        "try": EchoAgentConfig(backend="echo"),
    }

    backends = create_backends(configs, messages=MESSAGES, client=client)

    assert isinstance(backends["default"], ThinnestBackend)
    assert isinstance(backends["analytics"], PeakaBackend)
    assert isinstance(backends["try"], EchoBackend)
    assert {name: b.name for name, b in backends.items()} == {
        "default": "default",
        "analytics": "analytics",
        "try": "try",
    }
    assert (await backends["default"].chat("a", None)).text == "echo: a"
    assert (await backends["analytics"].chat("b", None)).text == "echo: b"
    for backend in backends.values():
        await backend.aclose()
    # The client is shared, not owned: closing the backends leaves it open.
    assert not client.is_closed


async def test_echo_backend_answers_offline():
    backend = EchoBackend("try")

    reply = await backend.chat("hello", None)
    again = await backend.chat("more", "kept")

    assert reply.text == "hello"
    assert reply.session_id is None
    assert reply.usage == Usage()
    assert again.session_id == "kept"
    assert backend.new_session_id() is None
    assert await backend.probe() == "echo agent (offline)"
