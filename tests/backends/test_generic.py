"""`GenericHttpBackend` with hand-written configs: templates, sessions, the errors
table, secrets, config errors. The agent is the fake n8n webhook (any JSON POST
endpoint would do), scripted where a test needs another answer."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.backends import GenericHttpBackend, create_backend
from bridge.backends.generic import parse_sse, request_summary
from bridge.config import ConfigError, HttpAgentConfig, parse_config
from bridge.errors import (
    AgentBadReply,
    AgentError,
    AgentInsufficientBalance,
    AgentNotFound,
    AgentRateLimited,
    AgentSessionExpired,
    AgentUnauthorized,
    AgentUnavailable,
)
from bridge.model import TurnContext, Usage
from tests.backends.http_support import (  # noqa: F401 - the fixtures
    MESSAGES,
    MakeHttp,
    fake_fixture,
    http_client_fixture,
    make_http_fixture,
    waits_fixture,
)
from tests.fakes.agent_platforms import (
    DIFY_KEY,
    N8N_PASSWORD,
    SECRETS,
    WEBHOOK_ID,
    FakePlatforms,
    http_config_values,
)
from tests.fakes.agents import FakeResponse

SECRET_HEADER = "hdr-secret-value-0123456789"


def custom(fake: FakePlatforms, **values: Any) -> HttpAgentConfig:
    """A custom agent on the fake n8n webhook (no auth there), answer at ``output``."""
    fake.n8n_auth = "none"
    raw: dict[str, Any] = {
        "backend": "http",
        "url": f"{fake.url}/webhook/{WEBHOOK_ID}/chat",
        "body": {"action": "sendMessage", "chatInput": "{message}", "sessionId": "{session_id}"},
        "answer_path": "output",
        "timeout": 5.0,
        "max_retry_wait": 0.0,
    }
    raw.update(values)
    return HttpAgentConfig.model_validate(raw)


def problems(agent: dict[str, Any], env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config({"agents": {"bot": agent}}, base_dir=Path("."), environ=env or {})
    return caught.value.problems


BASE = {"backend": "http", "url": "https://agent.example/chat", "answer_path": "a"}

# --- config errors name the key -------------------------------------------------------------


def test_a_bad_jmespath_names_its_key() -> None:
    [line] = problems({**BASE, "answer_path": "outputs[0"})
    assert line.startswith("agents.bot.answer_path: not a valid JMESPath expression")

    [line] = problems({**BASE, "usage_path": "a..b"})
    assert line.startswith("agents.bot.usage_path: not a valid JMESPath")


def test_an_unknown_body_placeholder_names_key_and_place() -> None:
    [line] = problems({**BASE, "body": {"q": {"deep": ["x", "{mesage}"]}}})
    assert line.startswith("agents.bot.body: in q.deep[1]: unknown placeholder {mesage}")
    assert 'did you mean "{message}"' in line


def test_a_url_placeholder_needs_a_param() -> None:
    [line] = problems({**BASE, "url": "https://agent.example/run/{flow_id}"})
    assert line == "agents.bot.url: {flow_id} has no value: set params.flow_id"


def test_an_unknown_preset_is_the_one_error() -> None:
    assert problems({"backend": "http", "preset": "difi"}) == [
        'agents.bot.preset: expected one of "dify", "flowise", "langflow", "n8n"'
    ]


def test_server_sessions_need_a_session_path() -> None:
    [line] = problems({**BASE, "session": "server"})
    assert line.startswith("agents.bot.session_path: required when session")


def test_bad_errors_rows_name_the_key() -> None:
    [line] = problems({**BASE, "errors": {"teapot": "balance"}})
    assert line.startswith("agents.bot.errors: 'teapot': expected")
    [line] = problems({**BASE, "errors": {"402": "broke"}})
    assert line.startswith('agents.bot.errors.402: expected one of "balance"')


def test_an_unset_variable_in_a_header_names_the_header() -> None:
    [line] = problems({**BASE, "headers": {"X-Key": "${NOPE}"}})
    assert line == "agents.bot.headers.X-Key: environment variable NOPE is not set"


def test_preset_keys_can_be_overridden_and_missing_ones_are_named() -> None:
    [line] = problems({"backend": "http", "preset": "flowise", "base_url": "https://f.example"})
    assert line == "agents.bot.url: {chatflow_id} has no value: set params.chatflow_id"
    [line] = problems({"backend": "http", "preset": "n8n"})
    assert line == "agents.bot.url: missing (required)"


def test_api_key_file_works_for_http_agents(tmp_path: Path) -> None:
    (tmp_path / "key").write_text("sk-from-file\n")
    config = parse_config(
        {"agents": {"bot": {**BASE, "api_key_file": "key"}}}, base_dir=tmp_path, environ={}
    )
    agent = config.agents["bot"]
    assert isinstance(agent, HttpAgentConfig) and agent.api_key is not None
    assert agent.api_key.get_secret_value() == "sk-from-file"


# --- templates and sessions -----------------------------------------------------------------


async def test_the_body_template_fills_nested_values(
    fake: FakePlatforms, make_http: MakeHttp
) -> None:
    config = custom(
        fake,
        body={
            "action": "sendMessage",
            "chatInput": "{message}",
            "sessionId": "{session_id}",
            "meta": {
                "who": "{user_name} ({user_id})",
                "tags": ["{conversation}", 3, True],
                "raw": "{{not a placeholder}}",
            },
        },
    )
    backend = make_http(config=config)

    await backend.chat("hi", "s-1", context=TurnContext(user_id="42", user_name="ann"))
    await backend.chat("again", "s-1")

    first, second = (c.json for c in fake.chat_calls("n8n"))
    assert first["meta"] == {
        "who": "ann (42)",
        "tags": ["s-1", 3, True],
        "raw": "{not a placeholder}",
    }
    # No context (today's dispatcher): the user placeholders are empty.
    assert second["meta"]["who"] == " ()"


async def test_client_sessions_are_made_per_thread_and_kept(
    fake: FakePlatforms, make_http: MakeHttp
) -> None:
    backend = make_http(config=custom(fake))
    one, two = backend.new_session_id(), backend.new_session_id()
    assert one and two and one != two

    reply = await backend.chat("hi", None)  # no id at all: one is made and returned

    assert reply.session_id == fake.chat_calls("n8n")[0].json["sessionId"]


async def test_server_sessions_send_first_session_then_the_named_one(
    fake: FakePlatforms, make_http: MakeHttp
) -> None:
    config = custom(fake, session="server", session_path="sid", first_session="new")
    backend = make_http(config=config)
    fake.script(
        FakeResponse(json={"output": "a", "sid": "srv-1"}), FakeResponse(json={"output": "b"})
    )

    assert backend.new_session_id() is None
    first = await backend.chat("one", None)
    second = await backend.chat("two", first.session_id)

    assert [c.json["sessionId"] for c in fake.chat_calls("n8n")] == ["new", "srv-1"]
    assert first.session_id == "srv-1"
    assert second.session_id == "srv-1"  # not named again: the one sent is kept


async def test_usage_from_either_naming_or_a_number(
    fake: FakePlatforms, make_http: MakeHttp
) -> None:
    backend = make_http(config=custom(fake, usage_path="u"))
    fake.script(
        FakeResponse(json={"output": "a", "u": {"input_tokens": 2, "output_tokens": 3}}),
        FakeResponse(json={"output": "a", "u": {"prompt_tokens": 1, "completion_tokens": 1}}),
        FakeResponse(json={"output": "a", "u": 9}),
        FakeResponse(json={"output": "a", "u": "lots"}),
    )

    usages = [(await backend.chat("x", "s")).usage for _ in range(4)]

    assert usages == [
        Usage(input_tokens=2, output_tokens=3, total_tokens=5),
        Usage(input_tokens=1, output_tokens=1, total_tokens=2),
        Usage(total_tokens=9),
        Usage(),
    ]


@pytest.mark.parametrize(
    "body",
    [{"text": "the answer is elsewhere"}, {"output": ""}, {"output": {"nested": "x"}}],
)
async def test_a_missing_answer_is_the_friendly_error_and_a_log_line(
    fake: FakePlatforms, make_http: MakeHttp, caplog: pytest.LogCaptureFixture, body: Any
) -> None:
    fake.script(FakeResponse(json=body))
    caplog.set_level(logging.WARNING, "bridge.backends")

    with pytest.raises(AgentBadReply) as caught:
        await make_http(config=custom(fake)).chat("hi", "s")

    assert caught.value.user_message == MESSAGES.render("bad_reply")
    [record] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "unreadable reply" in record.getMessage()
    assert str(next(iter(body)))[:10] in record.getMessage()  # the body's start


# --- the errors table ---------------------------------------------------------------------

ROWS: list[tuple[str, int, dict[str, Any], type[AgentError], str]] = [
    ("balance", 400, {"code": "no_credit"}, AgentInsufficientBalance, "insufficient_balance"),
    ("rate_limit", 400, {"code": "slow_down"}, AgentRateLimited, "rate_limited"),
    ("auth", 400, {"code": "bad_key"}, AgentUnauthorized, "unauthorized"),
    ("not_found", 400, {"code": "no_flow"}, AgentNotFound, "not_found"),
    ("unavailable", 400, {"code": "down"}, AgentUnavailable, "unavailable"),
    ("session_gone", 400, {"code": "no_session"}, AgentSessionExpired, "session_expired"),
]
ERRORS = {
    "400:no_credit": "balance",
    "*:slow_down": "rate_limit",
    "400:bad_key": "auth",
    "*:no_flow": "not_found",
    "400:down": "unavailable",
    "400:no_session": "session_gone",
}


@pytest.mark.parametrize(("kind", "status", "body", "cls", "text"), ROWS, ids=[r[0] for r in ROWS])
async def test_every_error_row_gives_its_friendly_text_without_retrying(
    fake: FakePlatforms,
    make_http: MakeHttp,
    kind: str,
    status: int,
    body: dict[str, Any],
    cls: type[AgentError],
    text: str,
) -> None:
    fake.script(FakeResponse(status=status, json=body, headers={"Retry-After": "7"}))
    backend = make_http(config=custom(fake, error_code_path="code", errors=ERRORS))

    with pytest.raises(cls) as caught:
        await backend.chat("hi", "s-1")

    expected = (
        MESSAGES.render(text, retry_after=7) if kind == "rate_limit" else MESSAGES.render(text)
    )
    assert caught.value.user_message == expected
    assert len(fake.chat_calls("n8n")) == 1


async def test_a_status_row_and_a_2xx_body_code(fake: FakePlatforms, make_http: MakeHttp) -> None:
    backend = make_http(
        config=custom(
            fake, error_code_path="error", errors={"418": "balance", "*:quota": "balance"}
        )
    )
    fake.script(FakeResponse(status=418, json={}), FakeResponse(json={"error": "quota"}))

    with pytest.raises(AgentInsufficientBalance):
        await backend.chat("hi", "s")
    with pytest.raises(AgentInsufficientBalance):  # a 200 that says it failed
        await backend.chat("hi", "s")


async def test_unmapped_errors_fall_back_to_the_status_table(
    fake: FakePlatforms, make_http: MakeHttp, waits: list[float]
) -> None:
    backend = make_http(config=custom(fake, errors={"418": "balance"}))
    fake.script(FakeResponse(status=402, json={}))
    with pytest.raises(AgentInsufficientBalance):
        await backend.chat("hi", "s")

    fake.script(*[FakeResponse(status=503, json={})] * 3)
    with pytest.raises(AgentUnavailable):
        await backend.chat("hi", "s")
    assert len(waits) == 0  # max_retry_wait = 0: the budget ends it at once


async def test_session_gone_needs_a_session_sent(fake: FakePlatforms, make_http: MakeHttp) -> None:
    config = custom(fake, session="server", session_path="sid", errors={"404": "session_gone"})
    fake.script(FakeResponse(status=404, json={"message": "no such flow"}))

    with pytest.raises(AgentNotFound):  # a first turn: the agent, not a session
        await make_http(config=config).chat("hi", None)


# --- credentials ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("auth", "header", "expected"),
    [
        ({}, "Authorization", f"Bearer {N8N_PASSWORD}"),
        ({"auth": "header", "auth_header": "Authorization"}, "Authorization", N8N_PASSWORD),
        ({"auth": "header"}, "x-api-key", N8N_PASSWORD),
    ],
)
async def test_the_key_goes_where_auth_says(
    fake: FakePlatforms, make_http: MakeHttp, auth: dict[str, str], header: str, expected: str
) -> None:
    backend = make_http(config=custom(fake, api_key=N8N_PASSWORD, **auth))

    await backend.chat("hi", "s")

    assert fake.chat_calls("n8n")[0].headers[header] == expected


async def test_secrets_never_in_repr_logs_or_summary(
    fake: FakePlatforms, make_http: MakeHttp, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    config = custom(fake, api_key=N8N_PASSWORD, headers={"X-Extra": SECRET_HEADER})
    backend = make_http(config=config)
    fake.script(FakeResponse(status=401, json={"detail": "no"}))

    with pytest.raises(AgentUnauthorized) as caught:
        await backend.chat("hi", "s")
    await backend.chat("hi", "s")
    await backend.probe()

    assert fake.chat_calls("n8n")[0].headers["X-Extra"] == SECRET_HEADER  # it was sent
    shown = "\n".join(
        [
            *(repr(config), str(config), repr(backend)),
            *(str(caught.value), caught.value.user_message),
            *request_summary(config),
            caplog.text,
        ]
    )
    for secret in (N8N_PASSWORD, SECRET_HEADER):
        assert secret not in shown


def test_the_summary_shows_the_request_with_placeholders(fake: FakePlatforms) -> None:
    values = http_config_values("dify", fake)
    config = HttpAgentConfig.model_validate({**values, "headers": {"X-Trace": "t0p"}})

    lines = request_summary(config)

    assert lines[0] == f"request: POST {fake.url}/v1/chat-messages"
    assert lines[1] == "headers: Authorization: Bearer ***, X-Trace: ***"
    assert '"user": "{conversation}"' in lines[2]
    assert any(line.startswith("probe: GET") and "checks the key" in line for line in lines)
    assert DIFY_KEY not in "\n".join(lines) and "t0p" not in "\n".join(lines)
    assert not any(secret in "\n".join(lines) for secret in SECRETS)


def test_create_backend_makes_the_generic_backend(
    fake: FakePlatforms, http_client: httpx.AsyncClient
) -> None:
    config = HttpAgentConfig.model_validate(http_config_values("langflow", fake))

    backend = create_backend("lf", config, messages=MESSAGES, client=http_client)
    assert isinstance(backend, GenericHttpBackend)
    assert backend.kind == "langflow" and backend.name == "lf"


def test_parse_sse_reads_data_lines_only() -> None:
    stream = (
        ": a comment\n"
        "event: ping\n\n"
        'data: {"event": "message",\n'
        'data:  "answer": "a"}\n\n'
        "data: [DONE]\n\n"
        'data:{"event":"message_end"}'
    )
    assert parse_sse(stream) == [{"event": "message", "answer": "a"}, {"event": "message_end"}]
    with pytest.raises(ValueError):
        parse_sse("<html>oops</html>")
