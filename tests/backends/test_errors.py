"""The error table, on both HTTP backends, against the fake server over real HTTP:
for each row, how many calls the agent saw, the waits in between, the error type
and the text the user sees."""

from __future__ import annotations

import asyncio
import email.utils
import logging
import socket
import time

import pytest

from bridge.backends import ThinnestBackend
from bridge.backends.base import retry_delay
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
from tests.backends.conftest import MESSAGES, MakeBackend, assert_safe_user_text
from tests.fakes.agents import FAKE_API_KEY, FakeAgentServer, FakeResponse, thinnest_config


def check_error(exc: AgentError, agents: FakeAgentServer, kind: str) -> None:
    assert exc.kind == kind
    assert exc.agent == "default"
    assert_safe_user_text(exc.user_message, url=agents.url)
    assert FAKE_API_KEY not in str(exc)


async def test_402_is_not_retried(agents: FakeAgentServer, make_backend: MakeBackend, sleeps):
    agents.script(FakeResponse(status=402, json={"detail": "Insufficient balance"}))

    with pytest.raises(AgentInsufficientBalance) as info:
        await make_backend().chat("hi", "s1")

    assert len(agents.chat_calls) == 1
    assert sleeps == []
    assert info.value.user_message == MESSAGES.insufficient_balance
    check_error(info.value, agents, "insufficient_balance")


@pytest.mark.parametrize("status", [401, 403])
async def test_refused_key_is_not_retried_and_logged_as_error(
    agents: FakeAgentServer, make_backend: MakeBackend, sleeps, caplog, status: int
):
    agents.script(FakeResponse(status=status, json={"detail": "Invalid API key"}))

    with (
        caplog.at_level(logging.INFO, logger="bridge.backends"),
        pytest.raises(AgentUnauthorized) as info,
    ):
        await make_backend().chat("hi", "s1")

    assert len(agents.chat_calls) == 1
    assert sleeps == []
    assert info.value.user_message == MESSAGES.unauthorized
    check_error(info.value, agents, "unauthorized")
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors, "a refused key must be logged at ERROR"
    assert "agents.default.api_key" in errors[0].getMessage()
    assert FAKE_API_KEY not in caplog.text


async def test_404_without_a_session_is_agent_not_found(
    agents: FakeAgentServer, make_thinnest: MakeBackend, sleeps
):
    agents.script(FakeResponse(status=404, json={"detail": "Agent not found"}))

    with pytest.raises(AgentNotFound) as info:
        await make_thinnest().chat("hi", None)

    assert len(agents.chat_calls) == 1
    assert info.value.user_message == MESSAGES.not_found
    check_error(info.value, agents, "not_found")


async def test_404_naming_the_agent_is_not_found_even_with_a_session(
    agents: FakeAgentServer, make_backend: MakeBackend
):
    agents.script(FakeResponse(status=404, json={"detail": "Agent not found"}))

    with pytest.raises(AgentNotFound):
        await make_backend().chat("hi", "s1")


async def test_expired_session_is_reported_as_such(
    agents: FakeAgentServer, make_backend: MakeBackend, sleeps
):
    backend = make_backend()
    first = await backend.chat("one", backend.new_session_id())
    agents.expire(first.session_id)

    with pytest.raises(AgentSessionExpired) as info:
        await backend.chat("two", first.session_id)

    assert len(agents.chat_calls) == 2
    assert sleeps == []
    check_error(info.value, agents, "session_expired")


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (404, {"detail": "Session not found"}),
        (404, {"message": "Thread does not exist"}),
        (404, ""),  # no clue in the body: the session is the likelier culprit
        (410, {"detail": "Gone"}),
        (400, {"error": "Session expired"}),
        (400, {"error": "invalid thread id"}),
    ],
)
async def test_session_errors_become_session_expired(
    agents: FakeAgentServer, make_backend: MakeBackend, status: int, body
):
    if isinstance(body, str):
        agents.script(FakeResponse(status=status, body=body))
    else:
        agents.script(FakeResponse(status=status, json=body))

    with pytest.raises(AgentSessionExpired):
        await make_backend().chat("hi", "s1")
    assert len(agents.chat_calls) == 1


async def test_other_400_is_not_a_session_error_and_not_retried(
    agents: FakeAgentServer, make_backend: MakeBackend, sleeps
):
    agents.script(FakeResponse(status=400, json={"detail": "message is too long"}))

    with pytest.raises(AgentError) as info:
        await make_backend().chat("hi", "s1")

    assert not isinstance(info.value, AgentSessionExpired)
    assert len(agents.chat_calls) == 1
    assert sleeps == []
    assert "message is too long" in str(info.value)  # for the operator's log
    assert info.value.user_message == MESSAGES.unavailable


# --- 429 -----------------------------------------------------------------------------------


async def test_429_waits_for_retry_after_then_succeeds(
    agents: FakeAgentServer, make_backend: MakeBackend, sleeps
):
    agents.script(
        FakeResponse(status=429, json={"detail": "Too many"}, headers={"Retry-After": "1"})
    )

    reply = await make_backend().chat("hi", None)

    assert reply.text == "echo: hi"
    assert len(agents.chat_calls) == 2
    assert sleeps == [1.0]


async def test_429_honours_x_ratelimit_reset(
    agents: FakeAgentServer, make_backend: MakeBackend, sleeps
):
    reset = int(time.time()) + 4
    agents.script(FakeResponse(status=429, headers={"X-RateLimit-Reset": str(reset)}))

    await make_backend(max_retry_wait=10).chat("hi", None)

    assert len(agents.chat_calls) == 2
    [wait] = sleeps
    assert 2.0 <= wait <= 4.0


async def test_429_honours_an_http_date_retry_after(
    agents: FakeAgentServer, make_backend: MakeBackend, sleeps
):
    when = email.utils.formatdate(time.time() + 3, usegmt=True)
    agents.script(FakeResponse(status=429, headers={"Retry-After": when}))

    await make_backend(max_retry_wait=10).chat("hi", None)

    [wait] = sleeps
    assert 1.0 <= wait <= 3.0


async def test_429_without_headers_backs_off_exponentially(
    agents: FakeAgentServer, make_backend: MakeBackend, sleeps
):
    agents.script(*[FakeResponse(status=429)] * 3)

    reply = await make_backend(max_retry_wait=60).chat("hi", None)

    assert reply.text == "echo: hi"
    assert len(agents.chat_calls) == 4
    # Equal jitter around 1 s, 2 s, 4 s: each wait in [base/2, base].
    assert len(sleeps) == 3
    for wait, base in zip(sleeps, (1, 2, 4), strict=True):
        assert base / 2 <= wait <= base


async def test_429_gives_up_when_the_wait_would_exceed_the_budget(
    agents: FakeAgentServer, make_backend: MakeBackend, sleeps
):
    agents.script(*[FakeResponse(status=429, headers={"Retry-After": "1"})] * 10)

    with pytest.raises(AgentRateLimited) as info:
        await make_backend(max_retry_wait=2).chat("hi", None)

    # Waits 1 + 1 fit in 2 s; a third would not: three calls, then give up at once.
    assert sleeps == [1.0, 1.0]
    assert len(agents.chat_calls) == 3
    assert info.value.retry_after == 1
    assert info.value.user_message == MESSAGES.render("rate_limited", retry_after=1)
    check_error(info.value, agents, "rate_limited")


async def test_429_with_a_long_retry_after_gives_up_at_once(
    agents: FakeAgentServer, make_backend: MakeBackend, sleeps
):
    agents.script(FakeResponse(status=429, headers={"Retry-After": "37.2"}))

    with pytest.raises(AgentRateLimited) as info:
        await make_backend(max_retry_wait=10).chat("hi", None)

    assert sleeps == []
    assert len(agents.chat_calls) == 1
    assert info.value.retry_after == 38  # rounded up
    assert "about 38 seconds" in info.value.user_message


async def test_429_without_headers_tells_the_user_a_wait(
    agents: FakeAgentServer, make_backend: MakeBackend, sleeps
):
    agents.script(*[FakeResponse(status=429)] * 10)

    with pytest.raises(AgentRateLimited) as info:
        await make_backend(max_retry_wait=0).chat("hi", None)

    assert len(agents.chat_calls) == 1
    assert info.value.retry_after is not None and info.value.retry_after >= 1
    assert f"about {info.value.retry_after} seconds" in info.value.user_message


async def test_429_really_sleeps_without_an_injected_sleep(agents: FakeAgentServer, client):
    # The default sleep is asyncio.sleep: one real (short) wait.
    backend = ThinnestBackend(
        "default", thinnest_config(agents.url, max_retry_wait=2), messages=MESSAGES, client=client
    )
    agents.script(FakeResponse(status=429, headers={"Retry-After": "0.2"}))

    started = time.monotonic()
    reply = await backend.chat("hi", None)

    assert reply.text == "echo: hi"
    assert time.monotonic() - started >= 0.2


def test_retry_delay_parsing():
    now = 1_700_000_000.0
    assert retry_delay({"Retry-After": "5"}, now=now) == 5.0
    assert retry_delay({"Retry-After": "-3"}, now=now) == 0.0
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert retry_delay({"Retry-After": date}, now=now) == pytest.approx(30, abs=1)
    assert retry_delay({"X-RateLimit-Reset": str(int(now) + 12)}, now=now) == 12.0
    # Some APIs send seconds-until-reset in this header; no epoch is that small.
    assert retry_delay({"X-RateLimit-Reset": "12"}, now=now) == 12.0
    # Retry-After wins over X-RateLimit-Reset.
    assert retry_delay({"Retry-After": "2", "X-RateLimit-Reset": str(int(now) + 50)}, now=now) == 2
    assert retry_delay({"Retry-After": "soon"}, now=now) is None
    assert retry_delay({}, now=now) is None


# --- 5xx and the network -------------------------------------------------------------------


async def test_500_then_success(agents: FakeAgentServer, make_backend: MakeBackend, sleeps):
    agents.script(FakeResponse(status=500, body="Internal Server Error"))

    reply = await make_backend().chat("hi", None)

    assert reply.text == "echo: hi"
    assert len(agents.chat_calls) == 2
    assert len(sleeps) == 1


async def test_persistent_5xx_gives_up_after_three_attempts(
    agents: FakeAgentServer, make_backend: MakeBackend, sleeps
):
    agents.script(*[FakeResponse(status=503, body="<html>down</html>")] * 5)

    with pytest.raises(AgentUnavailable) as info:
        await make_backend(max_retry_wait=60).chat("hi", None)

    assert len(agents.chat_calls) == 3
    assert len(sleeps) == 2
    assert info.value.user_message == MESSAGES.unavailable
    check_error(info.value, agents, "unavailable")


async def test_5xx_retries_stay_within_the_wait_budget(
    agents: FakeAgentServer, make_backend: MakeBackend, sleeps
):
    agents.script(*[FakeResponse(status=502)] * 5)

    with pytest.raises(AgentUnavailable):
        await make_backend(max_retry_wait=0).chat("hi", None)

    assert len(agents.chat_calls) == 1
    assert sleeps == []


async def test_504_is_a_timeout_and_not_retried(
    agents: FakeAgentServer, make_backend: MakeBackend, sleeps
):
    # The gateway gave up, but the agent may still run (and bill) the turn.
    agents.script(FakeResponse(status=504, body="Gateway Timeout"))

    with pytest.raises(AgentTimeout):
        await make_backend().chat("hi", None)

    assert len(agents.chat_calls) == 1


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


async def test_connection_refused_is_retried_then_unavailable(make_backend: MakeBackend, sleeps):
    url = closed_port_url()

    with pytest.raises(AgentUnavailable) as info:
        await make_backend(url=url, max_retry_wait=60).chat("hi", None)

    assert len(sleeps) == 2  # three attempts
    assert_safe_user_text(info.value.user_message, url=url)
    assert isinstance(info.value.__cause__, Exception)  # the httpx error, for the log


async def test_dns_failure_is_unavailable(make_backend: MakeBackend, sleeps, monkeypatch):
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if host in ("agent.invalid", b"agent.invalid"):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)

    with pytest.raises(AgentUnavailable) as info:
        await make_backend(url="http://agent.invalid:8080", max_retry_wait=60).chat("hi", None)

    assert len(sleeps) == 2
    assert "agent.invalid" not in info.value.user_message


async def test_hanging_agent_times_out_after_one_call(
    agents: FakeAgentServer, make_backend: MakeBackend, sleeps
):
    agents.script(FakeResponse(delay=30))

    started = time.monotonic()
    with pytest.raises(AgentTimeout) as info:
        await make_backend(timeout=0.3).chat("hi", "s1")

    assert time.monotonic() - started < 5
    assert len(agents.chat_calls) == 1
    assert sleeps == []
    assert info.value.user_message == MESSAGES.timeout
    check_error(info.value, agents, "timeout")


# --- unreadable replies --------------------------------------------------------------------


@pytest.mark.parametrize(
    "response",
    [
        FakeResponse(body='{"response": "cut off'),
        FakeResponse(body="<html><body>Welcome to nginx!</body></html>"),
        FakeResponse(body=""),
        FakeResponse(json={"unexpected": True}),
        FakeResponse(json={"response": ""}),
        FakeResponse(json=["not", "an", "object"]),
        FakeResponse(json=None),
    ],
    ids=["truncated", "html", "empty", "no-text", "blank-text", "list", "null"],
)
async def test_unreadable_reply_is_bad_reply_not_retried(
    agents: FakeAgentServer, make_backend: MakeBackend, sleeps, caplog, response: FakeResponse
):
    agents.script(response)

    with (
        caplog.at_level(logging.WARNING, logger="bridge.backends"),
        pytest.raises(AgentBadReply) as info,
    ):
        await make_backend().chat("hi", "s1")

    assert len(agents.chat_calls) == 1
    assert sleeps == []
    assert info.value.user_message == MESSAGES.bad_reply
    check_error(info.value, agents, "bad_reply")
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "unreadable reply" in warning.getMessage()


async def test_bad_reply_log_quotes_a_short_excerpt(
    agents: FakeAgentServer, make_thinnest: MakeBackend, caplog
):
    agents.script(FakeResponse(body="<html>" + "x" * 5000))

    with caplog.at_level(logging.WARNING, logger="bridge.backends"), pytest.raises(AgentBadReply):
        await make_thinnest().chat("hi", None)

    [warning] = caplog.records
    assert "<html>xxx" in warning.getMessage()
    assert len(warning.getMessage()) < 500


async def test_custom_messages_are_used(agents: FakeAgentServer, client, fast_sleep):
    from bridge.config import MessagesConfig

    messages = MessagesConfig(rate_limited="Slow down, {retry_after}s please.")
    backend = ThinnestBackend(
        "default", thinnest_config(agents.url), messages=messages, client=client, sleep=fast_sleep
    )
    agents.script(FakeResponse(status=429, headers={"Retry-After": "9"}))

    with pytest.raises(AgentRateLimited) as info:
        await backend.chat("hi", None)

    assert info.value.user_message == "Slow down, 9s please."


async def test_logs_never_hold_the_key_or_the_text_above_debug(
    agents: FakeAgentServer, make_backend: MakeBackend, caplog
):
    agents.script(FakeResponse(status=500), FakeResponse(status=401))

    with caplog.at_level(logging.INFO, logger="bridge.backends"), pytest.raises(AgentError):
        await make_backend().chat("my secret question", "s1")

    assert caplog.records, "each attempt is logged"
    assert FAKE_API_KEY not in caplog.text
    assert "my secret question" not in caplog.text
    attempts = [r.getMessage() for r in caplog.records if "attempt" in r.getMessage()]
    assert any("500" in m and "attempt 1" in m for m in attempts)


async def test_cancelling_a_call_in_flight_propagates(
    agents: FakeAgentServer, make_backend: MakeBackend
):
    # The dispatcher cancels calls still running at the end of the shutdown grace.
    agents.hold()
    task = asyncio.create_task(make_backend().chat("hi", "s1"))
    await agents.wait_for_calls(1)

    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(agents.chat_calls) == 1
    agents.release()
