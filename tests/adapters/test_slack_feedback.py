"""Feedback buttons under the agent's answers, end to end: the real slack-bolt and
slack_sdk stack against `FakeSlack` (Web API + Socket Mode, which refuses
``markdown_text`` beside ``blocks`` as Slack does), the real dispatcher, SQLite store
and metrics; the clicks arrive as ``block_actions`` interactions over Socket Mode."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import bridge.stream
from adapters.slack_feedback import feedback_block, parse_value
from bridge.metrics import Metrics
from tests.adapters.test_slack import make_config, running
from tests.adapters.test_slack_live import make_config as live_config
from tests.adapters.test_slack_live import running as live_running
from tests.fakes.agents import FakeAgentServer, FakeResponse
from tests.fakes.scripted_agent import ScriptedAgent, out_of_credit
from tests.fakes.slack import ApiCall, FakeSlack


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as server:
        yield server


@pytest.fixture
async def agents() -> AsyncIterator[FakeAgentServer]:
    async with FakeAgentServer() as server:
        yield server


def inbox_id(post: ApiCall) -> int:
    payload = post.args["metadata"]["event_payload"]
    assert isinstance(payload["inbox_id"], int)
    return payload["inbox_id"]


def counted(metrics: Metrics, agent: str, value: str) -> float:
    sample = metrics.registry.get_sample_value(
        "agent_bridge_feedback_total", {"agent": agent, "value": value}
    )
    return sample or 0.0


# --- the buttons -------------------------------------------------------------------------


async def test_an_answer_carries_the_feedback_buttons(
    tmp_path: Path, slack: FakeSlack, agents: FakeAgentServer
) -> None:
    async with running(make_config(tmp_path, slack, agents), slack) as bridge:
        await bridge.deliver(slack.mention("hello", channel="C1"))
    [post] = bridge.posts()
    message_id = inbox_id(post)
    # Slack refuses markdown_text beside blocks: the answer is a markdown block.
    assert "markdown_text" not in post.args
    assert post.args["blocks"][0] == {"type": "markdown", "text": "echo: hello"}
    assert post.args["blocks"][1] == feedback_block(message_id)
    assert post.feedback_values == [f"good:{message_id}", f"bad:{message_id}"]
    assert post.args["text"] == "echo: hello"  # the notification's fallback
    [element] = post.args["blocks"][1]["elements"]
    assert element["type"] == "feedback_buttons" and element["action_id"] == "agent_feedback"
    # What Slack keeps: the text (read back for crash safety) and the metadata.
    [stored] = [m for m in slack.messages["C1"] if "blocks" in m]
    assert stored["text"] == "echo: hello" and stored["metadata"] == post.args["metadata"]


async def test_only_the_last_piece_of_a_long_answer_has_the_buttons(
    tmp_path: Path, slack: FakeSlack, agents: FakeAgentServer
) -> None:
    answer = ("word " * 300 + "\n\n") * 10  # about 15,000 characters: two pieces
    agents.script(FakeResponse(json={"response": answer, "session_id": "s1", "usage": {}}))
    async with running(make_config(tmp_path, slack, agents), slack) as bridge:
        await bridge.deliver(slack.mention("tell me a lot"))
    first, last = bridge.posts()
    assert "blocks" not in first.args and first.args["markdown_text"]
    assert last.feedback_values == [f"good:{inbox_id(last)}", f"bad:{inbox_id(last)}"]
    assert f"{first.args['markdown_text']}\n{last.markdown}".split() == answer.split()


async def test_an_error_reply_and_a_note_have_no_buttons(
    tmp_path: Path, slack: FakeSlack, agents: FakeAgentServer
) -> None:
    agents.script(FakeResponse(status=402, json={"detail": "Insufficient balance"}))
    async with running(make_config(tmp_path, slack, agents), slack) as bridge:
        await bridge.deliver(slack.mention("hi"))
        await bridge.deliver(slack.mention("reset"))
        await slack.wait_call("chat.postMessage", 2)
    error, note = bridge.posts()
    assert "out of credit" in error.args["markdown_text"]
    assert "blocks" not in error.args and "blocks" not in note.args


async def test_feedback_off_posts_no_buttons(
    tmp_path: Path, slack: FakeSlack, agents: FakeAgentServer
) -> None:
    config = make_config(tmp_path, slack, agents, feedback=False)
    async with running(config, slack) as bridge:
        await bridge.deliver(slack.mention("hello"))
    [post] = bridge.posts()
    assert post.args["markdown_text"] == "echo: hello"
    assert "blocks" not in post.args and "text" not in post.args


# --- the clicks --------------------------------------------------------------------------


async def test_a_click_is_stored_and_counted_and_a_second_one_replaces_it(
    tmp_path: Path, slack: FakeSlack, agents: FakeAgentServer
) -> None:
    async with running(make_config(tmp_path, slack, agents), slack) as bridge:
        await bridge.deliver(slack.mention("hello", channel="C1"))
        [post] = bridge.posts()
        message_id = inbox_id(post)
        store, metrics = bridge.core.store, bridge.core.dispatcher.metrics

        await slack.wait_ack(await slack.send_action(f"good:{message_id}", user="U7"))
        [entry] = await store.list_feedback()
        assert (entry.message_id, entry.user_id, entry.value) == (message_id, "U7", "good")
        assert (entry.agent, entry.platform, entry.chat) == ("default", "slack", "C1")
        assert counted(metrics, "default", "good") == 1

        # A changed mind replaces the value; another user's click is a row of its own.
        await slack.wait_ack(await slack.send_action(f"bad:{message_id}", user="U7"))
        await slack.wait_ack(await slack.send_action(f"good:{message_id}", user="U8"))
        entries = await store.list_feedback()
        assert sorted((e.user_id, e.value) for e in entries) == [("U7", "bad"), ("U8", "good")]
        assert counted(metrics, "default", "bad") == 1
        assert counted(metrics, "default", "good") == 2
        assert b"agent_bridge_feedback_total" in metrics.render()
    # Nothing is posted back: Slack shows the pressed button itself.
    assert len(bridge.posts()) == 1
    assert slack.calls_to("chat.postEphemeral") == []


async def test_a_click_for_an_unknown_message_or_junk_is_acked_and_ignored(
    tmp_path: Path, slack: FakeSlack, agents: FakeAgentServer
) -> None:
    async with running(make_config(tmp_path, slack, agents), slack) as bridge:
        for value in ("good:999999", "meh:1", "good:", "good:x"):
            ack = await slack.wait_ack(await slack.send_action(value))
            assert "payload" not in ack
        assert await bridge.core.store.list_feedback() == []
        assert counted(bridge.core.dispatcher.metrics, "default", "good") == 0


def test_values_are_read_strictly() -> None:
    assert parse_value("good:12") == ("good", 12)
    assert parse_value("bad:7") == ("bad", 7)
    for junk in ("good", "ok:1", "good:-1", "good:1.5", None, 3):
        assert parse_value(junk) is None


# --- streamed answers --------------------------------------------------------------------


@pytest.fixture
def quick_live(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bridge.stream, "LIVE_INTERVAL", 0.05)


@pytest.mark.usefixtures("quick_live")
async def test_a_streamed_answer_ends_with_the_buttons(tmp_path: Path, slack: FakeSlack) -> None:
    held = asyncio.Event()
    agent = ScriptedAgent()
    agent.play("Hello", held, " world")
    async with live_running(live_config(tmp_path, slack), slack, agent) as live:
        await live.ask("hi")
        await slack.wait_call("chat.startStream")
        held.set()
        await slack.wait_call("chat.stopStream")
        await live.core.dispatcher.wait_idle()
    [stop] = slack.calls_to("chat.stopStream")
    message_id = stop.args["metadata"]["event_payload"]["inbox_id"]
    # chat.stopStream takes blocks beside markdown_text: the buttons go under the text.
    assert stop.args["blocks"] == [feedback_block(message_id)]
    [message] = live.bot_messages()
    assert message["text"] == "Hello world"
    assert message["blocks"] == [feedback_block(message_id)]
    assert slack.calls_to("chat.postMessage") == []


@pytest.mark.usefixtures("quick_live")
async def test_an_error_mid_stream_ends_without_buttons(tmp_path: Path, slack: FakeSlack) -> None:
    held = asyncio.Event()
    agent = ScriptedAgent()
    agent.play("Half an answer", held, out_of_credit())
    async with live_running(live_config(tmp_path, slack), slack, agent) as live:
        await live.ask("hi")
        await slack.wait_call("chat.startStream")
        held.set()
        await slack.wait_call("chat.stopStream")
        await live.core.dispatcher.wait_idle()
    [stop] = slack.calls_to("chat.stopStream")
    assert "blocks" not in stop.args
    assert "blocks" not in live.bot_messages()[0]
