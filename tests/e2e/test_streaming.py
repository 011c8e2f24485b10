"""Streamed answers end to end: ``agent-bridge run`` as a real subprocess, a thinnest
agent with ``stream = true`` pointed at `FakeAgentServer` (``POST /chat/stream``), and
the platforms faked in this process: Telegram (`FakeTelegram`, drafts in a private
chat, then the final ``sendMessage``) and Slack (`FakeSlack` over Socket Mode, a
message built by ``chat.startStream`` / ``appendStream`` / ``stopStream``).

The fake agent's stream is paced by `asyncio.Event` gates (``FakeStream.gates``,
``hold_after``), never by sleeps: each step waits for what the fakes saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from bridge.config import MessagesConfig
from tests.daemon.conftest import BridgeProcess, subprocess_env
from tests.fakes.agents import FakeAgentServer, FakeStream, thinnest_config_toml
from tests.fakes.slack import FakeSlack
from tests.fakes.telegram import ALICE, BOB, ApiCall, FakeTelegram, private_text

#: Generous bounds: a bridge starts in a second or two, but CI machines are slow.
START_WITHIN = 30.0
STEP_WITHIN = 15.0

OUT_OF_CREDIT = MessagesConfig().insufficient_balance


# --- config and processes ---------------------------------------------------------------


def agent_toml(agents: FakeAgentServer, name: str = "default", *, stream: bool = True) -> str:
    return thinnest_config_toml(agents.url, name) + f"stream = {'true' if stream else 'false'}\n"


def telegram_config(
    tmp_path: Path, tg: FakeTelegram, agents_section: str, *, telegram_extra: str = ""
) -> Path:
    path = tmp_path / "agent-bridge.toml"
    path.write_text(
        "[storage]\n"
        f'url = "sqlite+aiosqlite:///{tmp_path}/bridge.db"\n\n'
        f"{agents_section}\n"
        "[telegram]\n"
        f'bot_token = "{tg.token}"\n'
        f'api_url = "{tg.api_url}"\n'
        f"allowed_users = [{ALICE.id}, {BOB.id}]\n"
        f"{telegram_extra}",
        encoding="utf-8",
    )
    return path


def slack_config(tmp_path: Path, slack: FakeSlack, agents: FakeAgentServer) -> Path:
    path = tmp_path / "agent-bridge.toml"
    path.write_text(
        "[storage]\n"
        f'url = "sqlite+aiosqlite:///{tmp_path}/bridge.db"\n\n'
        f"{agent_toml(agents)}\n"
        "[slack]\n"
        'bot_token = "${SLACK_BOT_TOKEN}"\n'
        'app_token = "${SLACK_APP_TOKEN}"\n'
        f'api_url = "{slack.api_url}"\n',
        encoding="utf-8",
    )
    return path


bridge_env = subprocess_env


@contextlib.asynccontextmanager
async def telegram_bridge(config: Path, tg: FakeTelegram) -> AsyncIterator[BridgeProcess]:
    """A bridge polling ``tg``; killed on the way out if still running."""
    polls = len(tg.calls_of("getUpdates"))
    bridge = BridgeProcess(config, bridge_env())
    try:
        await bridge.start()
        try:
            await tg.wait_calls("getUpdates", count=polls + 1, within=START_WITHIN)
        except TimeoutError:
            raise AssertionError(f"the bridge did not poll:\n{bridge.stderr}") from None
        yield bridge
    finally:
        await bridge.kill()


async def stop(bridge: BridgeProcess) -> None:
    bridge.signal(signal.SIGTERM)
    assert await bridge.wait() == 0, bridge.stderr


def drafts(tg: FakeTelegram, chat_id: int) -> list[ApiCall]:
    """The drafts Telegram accepted in ``chat_id``, in order."""
    return [c for c in tg.calls_of("sendMessageDraft") if c.ok and c.params["chat_id"] == chat_id]


def draft_texts(tg: FakeTelegram, chat_id: int) -> list[str]:
    return [str(c.params.get("text") or "") for c in drafts(tg, chat_id)]


async def wait_draft(tg: FakeTelegram, chat_id: int, word: str) -> None:
    """Wait for a draft in ``chat_id`` that shows ``word``."""
    try:
        await tg.wait_for(
            lambda: any(word in text for text in draft_texts(tg, chat_id)), within=STEP_WITHIN
        )
    except TimeoutError:
        raise AssertionError(f"no draft with {word!r}: {draft_texts(tg, chat_id)}") from None


def text_event(piece: str) -> dict[str, Any]:
    return {"type": "text", "content": piece}


# --- 1. pieces while the stream is open, then the same final message as without ----------


async def test_telegram_streams_in_pieces_and_ends_as_the_unstreamed_answer(
    tmp_path: Path,
) -> None:
    question = "one **two** three `four` five six seven eight"
    # The echo streams one event per word: "echo: ", "one ", "**two** ", "three ", ...
    after_two, after_five = asyncio.Event(), asyncio.Event()
    async with FakeTelegram() as tg, FakeAgentServer() as agents:
        agents.script_stream(FakeStream(gates={3: after_two, 6: after_five}))
        config = telegram_config(
            tmp_path,
            tg,
            agent_toml(agents) + "\n" + agent_toml(agents, "plain", stream=False),
            telegram_extra=f'chat_agents = {{ "{BOB.id}" = "plain" }}\n',
        )
        async with telegram_bridge(config, tg) as bridge:
            tg.push(private_text(ALICE, question))
            await wait_draft(tg, ALICE.id, "two")
            # The agent holds before "three": what is shown is what came so far.
            assert not any("three" in t for t in draft_texts(tg, ALICE.id))
            assert tg.sent(ALICE.id) == []
            after_two.set()
            await wait_draft(tg, ALICE.id, "five")
            assert not any("six" in t for t in draft_texts(tg, ALICE.id))
            assert tg.sent(ALICE.id) == []  # the stream is still open
            after_five.set()
            [streamed] = await tg.wait_sent(ALICE.id, within=STEP_WITHIN)

            # The same question to an agent that does not stream (BOB's chat).
            tg.push(private_text(BOB, question))
            [plain] = await tg.wait_sent(BOB.id, within=STEP_WITHIN)
            await stop(bridge)

    shown = draft_texts(tg, ALICE.id)
    assert len(shown) >= 2, shown
    for earlier, later in itertools.pairwise(shown):
        assert later.startswith(earlier.rstrip()), shown  # the draft only grows
    assert len({c.params["draft_id"] for c in drafts(tg, ALICE.id)}) == 1
    assert "seven eight" in streamed.params["text"]
    assert streamed.params["text"] == plain.params["text"]
    assert streamed.params.get("entities") == plain.params.get("entities")
    assert drafts(tg, BOB.id) == []  # no stream, no draft
    assert [c.json["message"] for c in agents.stream_calls] == [question]
    assert [c.json["message"] for c in agents.chat_calls] == [question]
    assert tg.sent(ALICE.id) == [streamed]


# --- 2. no streaming endpoint: the plain one answers, from then on directly --------------


async def test_telegram_stream_endpoint_404_falls_back_once(tmp_path: Path) -> None:
    async with FakeTelegram() as tg, FakeAgentServer() as agents:
        agents.stream_status = 404
        config = telegram_config(tmp_path, tg, agent_toml(agents))
        async with telegram_bridge(config, tg) as bridge:
            tg.push(private_text(ALICE, "first question"))
            await tg.wait_sent(ALICE.id, within=STEP_WITHIN)
            tg.push(private_text(ALICE, "second question"))
            replies = await tg.wait_sent(ALICE.id, count=2, within=STEP_WITHIN)
            await stop(bridge)

    assert [r.params["text"] for r in replies] == ["echo: first question", "echo: second question"]
    assert len(agents.stream_calls) == 1  # only the first message tried the stream
    assert [c.json["message"] for c in agents.chat_calls] == ["first question", "second question"]
    warnings = [line for line in bridge.stderr_lines if "WARNING" in line]
    falling_back = [line for line in warnings if "falling back" in line]
    assert len(falling_back) == 1, bridge.stderr
    assert "404" in falling_back[0]
    assert "Traceback" not in bridge.stderr


# --- 3. the agent fails mid-stream: what was shown stays, and why it stops ---------------


async def test_telegram_error_mid_stream_keeps_the_text_shown(tmp_path: Path) -> None:
    go_on = asyncio.Event()
    out_of_credit = [
        text_event("Half of "),
        text_event("an answer"),
        {"type": "error", "message": "Insufficient balance: please top up your credit"},
    ]
    cut = [text_event("Cut "), text_event("short"), text_event(" never seen")]
    async with FakeTelegram() as tg, FakeAgentServer() as agents:
        agents.script_stream(
            FakeStream(events=out_of_credit, gates={2: go_on}),
            FakeStream(events=cut, cut_after=2),  # the connection drops mid-body
            FakeStream(status=402, body='{"detail": "Insufficient balance"}'),  # at once
        )
        config = telegram_config(tmp_path, tg, agent_toml(agents))
        async with telegram_bridge(config, tg) as bridge:
            tg.push(private_text(ALICE, "tell me"))
            await wait_draft(tg, ALICE.id, "an answer")
            go_on.set()
            await tg.wait_sent(ALICE.id, within=STEP_WITHIN)
            tg.push(private_text(ALICE, "and now?"))
            await tg.wait_sent(ALICE.id, count=2, within=STEP_WITHIN)
            tg.push(private_text(ALICE, "and then?"))
            replies = await tg.wait_sent(ALICE.id, count=3, within=STEP_WITHIN)
            await stop(bridge)

    assert [r.params["text"] for r in replies] == [
        f"Half of an answer\n\n{OUT_OF_CREDIT}",
        f"Cut short\n\n{MessagesConfig().unavailable}",
        OUT_OF_CREDIT,  # nothing was shown: the friendly text alone
    ]
    # Neither retried nor answered by the plain endpoint: the agent may have billed it.
    assert len(agents.stream_calls) == 3 and agents.chat_calls == []
    assert "falling back" not in bridge.stderr
    assert "Traceback" not in bridge.stderr


# --- 4. crash safety ---------------------------------------------------------------------


async def test_slack_killed_mid_stream_leaves_one_complete_answer(tmp_path: Path) -> None:
    question = "survive this stream please"
    full = f"echo: {question}"
    more = asyncio.Event()
    async with FakeSlack() as slack, FakeAgentServer() as agents:
        # "echo: ", "survive ": started; "this ", "stream ": appended; then the agent holds.
        agents.script_stream(FakeStream(gates={2: more}, hold_after=4))
        config = slack_config(tmp_path, slack, agents)
        env = bridge_env(SLACK_BOT_TOKEN=slack.bot_token, SLACK_APP_TOKEN=slack.app_token)
        first = BridgeProcess(config, env)
        second = BridgeProcess(config, env)
        try:
            await first.start()
            try:
                await slack.wait_connected(1, within=START_WITHIN)
            except AssertionError:
                raise AssertionError(first.stderr) from None
            root = slack.mention(question)
            await slack.wait_ack(await slack.send_event(root), within=STEP_WITHIN)
            started = await slack.wait_call("chat.startStream", within=STEP_WITHIN)
            more.set()
            await slack.wait_call("chat.appendStream", within=STEP_WITHIN)
            await asyncio.wait_for(agents.stream_holding.wait(), STEP_WITHIN)
            first.signal(signal.SIGKILL)
            assert await first.wait() == -signal.SIGKILL
            channel = started.args["channel"]
            [dangling] = bot_replies(slack, channel, root["ts"])
            assert (channel, dangling["ts"]) in slack.streaming
            assert full.startswith(dangling["text"]) and dangling["text"] != full

            await second.start()  # answers the message again, from the store
            await slack.wait_connected(2, within=START_WITHIN)

            def complete() -> bool:
                return any(
                    m["text"] == full and (channel, m["ts"]) not in slack.streaming
                    for m in bot_replies(slack, channel, root["ts"])
                )

            try:
                await slack._wait(complete, STEP_WITHIN, "the complete answer")
            except AssertionError:
                raise AssertionError(second.stderr) from None
            await stop(second)
        finally:
            await first.kill()
            await second.kill()

    [answer] = bot_replies(slack, channel, root["ts"])  # one message: no second copy
    assert answer["ts"] == dangling["ts"] and answer["text"] == full
    assert (channel, answer["ts"]) not in slack.streaming
    assert slack.calls_to("chat.postMessage") == []
    assert len(slack.calls_to("chat.startStream")) == 1  # the restart streamed no new one
    assert [c.json["message"] for c in agents.stream_calls] == [question, question]


def bot_replies(slack: FakeSlack, channel: str, thread_ts: str) -> list[dict[str, Any]]:
    return [
        m
        for m in slack.messages.get(channel, [])
        if m.get("bot_id") == slack.bot_id and m.get("thread_ts") == thread_ts
    ]


async def test_telegram_killed_mid_draft_sends_one_complete_answer(tmp_path: Path) -> None:
    question = "survive this draft please"
    async with FakeTelegram() as tg, FakeAgentServer() as agents:
        agents.script_stream(FakeStream(hold_after=3))  # "echo: survive this ", then holds
        config = telegram_config(tmp_path, tg, agent_toml(agents))
        async with telegram_bridge(config, tg) as first:
            tg.push(private_text(ALICE, question))
            await wait_draft(tg, ALICE.id, "survive")
            await asyncio.wait_for(agents.stream_holding.wait(), STEP_WITHIN)
            first.signal(signal.SIGKILL)
            assert await first.wait() == -signal.SIGKILL
        assert tg.sent(ALICE.id) == []

        async with telegram_bridge(config, tg) as second:  # the second stream is whole
            await tg.wait_sent(ALICE.id, within=STEP_WITHIN)
            await stop(second)

    [reply] = tg.sent(ALICE.id)
    assert reply.params["text"] == f"echo: {question}"
    assert [c.json["message"] for c in agents.stream_calls] == [question, question]


# --- 5. time to first text ---------------------------------------------------------------


async def test_telegram_time_to_first_draft(tmp_path: Path) -> None:
    """From the agent's first event leaving the fake to the first draft reaching
    Telegram, for an agent writing 20 events over 4 s. Printed (``pytest -s``);
    asserted only loosely."""
    stream = FakeStream(
        events=[text_event(f"w{n} ") for n in range(20)] + [{"type": "done"}], pace=0.2
    )
    async with FakeTelegram() as tg, FakeAgentServer() as agents:
        agents.script_stream(stream)
        config = telegram_config(tmp_path, tg, agent_toml(agents))
        async with telegram_bridge(config, tg) as bridge:
            tg.push(private_text(ALICE, "count to twenty"))
            [reply] = await tg.wait_sent(ALICE.id, within=STEP_WITHIN)
            await stop(bridge)

    first_draft = drafts(tg, ALICE.id)[0]
    first_text = first_draft.at - stream.sent_at[0]
    total = reply.at - stream.sent_at[0]
    print(
        f"\ntime to first text: {first_text * 1000:.1f} ms; "
        f"{len(drafts(tg, ALICE.id))} drafts; final message {total:.2f} s after the first event"
    )
    assert 0 <= first_text < 2.0
    assert len(drafts(tg, ALICE.id)) >= 4  # a few updates a second, not one per event
    assert reply.params["text"] == "".join(f"w{n} " for n in range(20)).strip()
