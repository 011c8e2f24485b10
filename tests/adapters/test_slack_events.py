"""Bad input never blocks others: whatever a Slack event holds, the normalizer decides
without raising, the adapter acknowledges it, and a well-formed message that follows is
answered. The pure functions of `adapters.slack_events` are checked with many generated
events; the handler path (bolt, Socket Mode, the store) with fewer, end to end."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.slack_events import (
    Accept,
    Answer,
    Note,
    Refuse,
    Reset,
    Skip,
    SlackIdentity,
    event_team,
    read_event,
)
from adapters.slack_replies import posted_piece
from bridge.config import SlackConfig
from tests.adapters.test_slack import make_config, running
from tests.fakes.agents import FakeAgentServer
from tests.fakes.slack import BOT_ID, BOT_USER_ID, TEAM_ID, FakeSlack

IDENTITY = SlackIdentity(TEAM_ID, "Fake Team", BOT_USER_ID, BOT_ID, "agent-bridge")
CONFIG = SlackConfig.model_validate({"bot_token": "xoxb-x", "app_token": "xapp-x"})
RUNS = itertools.count()


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as server:
        yield server


@pytest.fixture
async def agents() -> AsyncIterator[FakeAgentServer]:
    async with FakeAgentServer() as server:
        yield server


# --- strategies -------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)
# Values that look right for the known keys, so that the junk reaches deep branches.
plausible = {
    "type": st.sampled_from(["message", "app_mention", "reaction_added"]),
    "subtype": st.sampled_from(["file_share", "thread_broadcast", "bot_message", "x"]),
    "channel": st.sampled_from(["C1", "D1", "G1", ""]),
    "channel_type": st.sampled_from(["im", "channel", "group"]),
    "ts": st.sampled_from(["1600000000.000100", "1600000000.000200", "abc", ""]),
    "thread_ts": st.sampled_from(["1600000000.000100", "nope", ""]),
    "user": st.sampled_from(["U7", BOT_USER_ID, ""]),
    "text": st.sampled_from([f"<@{BOT_USER_ID}> hi", "reset", "", "<#C1|x> &amp;", "hi"]),
    "files": st.just([{"id": "F1"}]),
    "bot_id": st.sampled_from(["B2", ""]),
    "user_team": st.sampled_from([TEAM_ID, "T0OTHER"]),
}
known = st.fixed_dictionaries(
    {}, optional={key: json_values | values for key, values in plausible.items()}
)
events = st.one_of(
    st.builds(lambda a, b: {**b, **a}, known, st.dictionaries(st.text(max_size=8), json_values)),
    json_values,  # not even an object
)


@given(events)
@settings(max_examples=500)
def test_read_event_decides_without_raising_whatever_the_event_holds(event: Any) -> None:
    decision = read_event(event, team=TEAM_ID, identity=IDENTITY, config=CONFIG)
    assert isinstance(decision, Skip | Refuse | Note | Reset | Accept)
    if isinstance(decision, Answer):
        # What the transport acts on is well-typed, whatever the junk around it.
        assert decision.message_id.startswith(f"{TEAM_ID}:")
        assert isinstance(decision.key.chat, str) and decision.key.chat
    if isinstance(decision, Accept):
        message = decision.message
        assert isinstance(message.text, str) and message.text.strip()
        assert isinstance(message.sender, str) and message.sender != BOT_USER_ID
        assert isinstance(message.reply_to, str)


@given(json_values)
def test_event_team_and_posted_piece_take_any_value(value: Any) -> None:
    team = event_team(value, TEAM_ID)
    assert isinstance(team, str) and team
    assert posted_piece(value, IDENTITY, 1, 2) is None or isinstance(value, dict)


def test_read_event_refuses_junk_in_fields_that_looked_fine_before() -> None:
    """The cases that made the old normalizer raise or answer junk."""
    good = {"type": "message", "channel": "D1", "ts": "1600000000.000100", "user": "U7"}
    for junk in (
        {"subtype": ["file_share"]},  # unhashable: `in frozenset` raised TypeError
        {"text": {"nested": "junk"}},  # str() of a dict went to the agent
        {"ts": "not-a-ts"},  # a ts Slack never sends: reactions and replies fail on it
    ):
        assert isinstance(
            read_event({**good, **junk}, team=TEAM_ID, identity=IDENTITY, config=CONFIG), Skip
        ), junk
    accepted = read_event({**good, "text": "fine"}, team=TEAM_ID, identity=IDENTITY, config=CONFIG)
    assert isinstance(accepted, Accept) and accepted.message.text == "fine"


# --- through the handler ----------------------------------------------------------------


@given(junk=st.lists(events, min_size=1, max_size=4))
@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
async def test_junk_events_are_acked_and_the_next_message_is_answered(
    tmp_path: Path, slack: FakeSlack, agents: FakeAgentServer, junk: list[Any]
) -> None:
    # A fresh database and DM per example (the fakes serve every example): what one
    # example accepted must not dedupe or answer in another.
    n = next(RUNS)
    run = tmp_path / f"run{n}"
    await asyncio.to_thread(run.mkdir)
    dm = f"D77{n}"
    async with running(make_config(run, slack, agents), slack) as bridge:
        for event in junk:
            envelope = await slack.send_event(event)
            await slack.wait_ack(envelope)  # acked: Slack will not send it again
        good = slack.message("after the junk", channel=dm, channel_type="im", user="U77")
        await bridge.deliver(good)
    answers = [p for p in bridge.posts() if p.args["channel"] == dm]
    assert [p.markdown for p in answers] == ["echo: after the junk"]


async def test_an_event_bolt_fails_on_is_acked_logged_without_text_and_counted(
    tmp_path: Path,
    slack: FakeSlack,
    agents: FakeAgentServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    async with running(make_config(tmp_path, slack, agents), slack) as bridge:
        # bolt's own matcher raises TypeError on a non-string event type; this is not
        # a StorageError, so a redelivery would fail the same way: acked and skipped.
        poison = {"type": 7, "channel": "D1", "text": "a private question", "user": "U1"}
        await slack.wait_ack(await slack.send_event(poison, event_id="EvPoison"))
        await bridge.deliver(slack.message("next", channel="D1", channel_type="im"))
        skipped = bridge.core.metrics.registry.get_sample_value(
            "agent_bridge_bad_updates_total", {"platform": "slack"}
        )
    assert bridge.replies() == ["echo: next"]
    assert skipped == 1
    [line] = [r for r in caplog.records if "skipped and acknowledged" in r.getMessage()]
    assert line.levelno == logging.ERROR and "EvPoison" in line.getMessage()
    assert "TypeError" in line.getMessage()
    shown = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert not any("a private question" in text for text in shown)
