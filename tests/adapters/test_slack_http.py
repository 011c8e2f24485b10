"""HTTP mode checks the signature before it parses anything: unsigned, stale and badly
signed requests get 401 and are counted and logged (throttled, without the body);
signed junk gets 400 without a traceback; the endpoint keeps answering Slack."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from bridge.config import Config
from tests.adapters.test_slack import SECRET, Bridge, free_port, make_config, running
from tests.fakes.agents import FakeAgentServer
from tests.fakes.slack import TEAM_ID, FakeSlack, signed_headers


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as server:
        yield server


@pytest.fixture
async def agents() -> AsyncIterator[FakeAgentServer]:
    async with FakeAgentServer() as server:
        yield server


def http_config(tmp_path: Path, slack: FakeSlack, agents: FakeAgentServer) -> tuple[Config, str]:
    port = free_port()
    config = make_config(
        tmp_path,
        slack,
        agents,
        mode="http",
        signing_secret=SECRET,
        listen=f"127.0.0.1:{port}",
        path="/slack/events",
    )
    return config, f"http://127.0.0.1:{port}/slack/events"


def rejected(bridge: Bridge, reason: str) -> float:
    value = bridge.core.metrics.registry.get_sample_value(
        "agent_bridge_rejected_requests_total", {"endpoint": "slack", "reason": reason}
    )
    return value or 0.0


async def test_refused_requests_get_401_before_any_parsing_and_are_logged_throttled(
    tmp_path: Path, slack: FakeSlack, agents: FakeAgentServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    config, url = http_config(tmp_path, slack, agents)
    # Not even JSON: had anything parsed it before the signature check, the answer
    # would be a 400 or a traceback, not a 401.
    junk = b'{"event": not json, "text": "a private question"'
    now = int(time.time())
    async with running(config, slack) as bridge, aiohttp.ClientSession() as http:
        for _ in range(3):
            async with http.post(url, data=junk, headers=signed_headers(junk, "wrong")) as r:
                assert r.status == 401
        async with http.post(url, data=junk) as r:
            assert r.status == 401
        stale = signed_headers(junk, SECRET, timestamp=now - 301)
        async with http.post(url, data=junk, headers=stale) as r:
            assert r.status == 401
        nonsense = {**signed_headers(junk, SECRET), "X-Slack-Request-Timestamp": "soon"}
        async with http.post(url, data=junk, headers=nonsense) as r:
            assert r.status == 401
        latin = "é".encode("latin-1")
        async with http.post(url, data=latin, headers=signed_headers(latin, SECRET)) as r:
            assert r.status == 401
        counts = {
            reason: rejected(bridge, reason)
            for reason in ("bad_signature", "unsigned", "stale", "unparsable")
        }
    assert counts == {"bad_signature": 4, "unsigned": 1, "stale": 2, "unparsable": 0}

    lines = [r for r in caplog.records if r.getMessage().startswith("Slack request refused")]
    # One line per reason within the minute, however many requests: 3 reasons here.
    assert len(lines) == 3
    assert all(r.levelno == logging.WARNING and r.exc_info is None for r in lines)
    assert "from 127.0.0.1" in lines[0].getMessage()
    assert not any(r.exc_info for r in caplog.records)
    assert "a private question" not in caplog.text
    assert SECRET not in caplog.text
    assert agents.chat_calls == [] and slack.calls_to("chat.postMessage") == []


async def test_signed_junk_gets_400_without_a_traceback_and_events_still_flow(
    tmp_path: Path, slack: FakeSlack, agents: FakeAgentServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    config, url = http_config(tmp_path, slack, agents)
    bodies = [
        b'{"event": not json, "text": "a private question"}',
        b'["a private question"]',
        b"payload=%7Bnot-json%7D",
        b'{"type": "event_callback", "authorizations": 5, "event": {"type": "message"}}',
        b"",
    ]
    async with running(config, slack) as bridge, aiohttp.ClientSession() as http:
        for body in bodies:
            async with http.post(url, data=body, headers=signed_headers(body, SECRET)) as r:
                assert r.status == 400, body
        unparsable = rejected(bridge, "unparsable")

        # A signed event that bolt itself fails on (a non-string event type): acked
        # with 200, or Slack would send it again and again.
        poison = json.dumps(slack.event_payload({"type": 7, "text": "a private question"}))
        async with http.post(url, data=poison, headers=signed_headers(poison, SECRET)) as r:
            assert r.status == 200

        mention = slack.mention("still there?")
        good = json.dumps(slack.event_payload(mention))
        async with http.post(url, data=good, headers=signed_headers(good, SECRET)) as r:
            assert r.status == 200
        assert await bridge.core.store.is_known("slack", f"{TEAM_ID}:C1:{mention['ts']}")
        await bridge.core.dispatcher.wait_idle()

    assert unparsable == len(bodies)
    assert [c.markdown for c in slack.calls_to("chat.postMessage")] == ["echo: still there?"]
    warned = [r for r in caplog.records if "does not parse" in r.getMessage()]
    assert len(warned) == 1 and warned[0].levelno == logging.WARNING  # throttled
    assert not any(r.exc_info for r in caplog.records if r.levelno >= logging.INFO)
    assert "a private question" not in "\n".join(
        r.getMessage() for r in caplog.records if r.levelno >= logging.INFO
    )
