"""Exactly once under real operations: a platform that refuses posts, PostgreSQL going
away mid-stream, and SIGKILLs at random moments, each under a steady stream of messages.

Black-box: real ``agent-bridge run`` subprocesses (`tests.e2e.harness.Instance`) against
the fake Telegram, Slack and agent servers on 127.0.0.1; the database outage is a
`TcpProxy` between the bridge and PostgreSQL, cut and restored, so the shared server is
never touched. The PostgreSQL runs need ``AGENT_BRIDGE_TEST_DATABASE_URL`` (each test
gets its own database, ``ab_out_<random>``, dropped afterwards)::

    AGENT_BRIDGE_TEST_DATABASE_URL=postgresql+asyncpg://postgres@127.0.0.1:5432/test \\
        .venv/bin/pytest tests/e2e/test_outages.py -s

Each test prints an ``OUTAGE ...`` line with its figures: lost, doubled, out of order,
agent calls per message. The fake agent echoes (``echo: <message>``), which is how a
reply is mapped back to its message.

The guarantee checked, per platform (README, "delivery guarantee"): every message is
answered, in order per chat, and the agent is asked once per message unless a crash
interrupted its call. Telegram cannot tell whether a post went through before a crash,
so a reply posted in the last instant before a SIGKILL may be posted again: at most one
double per kill. Slack replies carry metadata that the bridge reads back before posting
again, so no double at all.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import URL

from tests.e2e.conftest import fresh_database
from tests.e2e.harness import (
    AgentProxy,
    Cluster,
    Figures,
    Instance,
    Message,
    TomlValue,
    answered_all,
    bridge_env,
    check,
    conversations,
    toml_text,
    wait_quiet,
    wait_until,
)
from tests.fakes.agents import FAKE_AGENT_ID, FAKE_API_KEY, FakeAgentServer
from tests.fakes.slack import FakeSlack
from tests.fakes.tcpproxy import TcpProxy
from tests.fakes.telegram import FakeError, FakeTelegram, User, private_text
from tests.ports import free_port

#: The seed of the kill schedule; printed by the tests, overridable to replay a run.
SEED = int(os.environ.get("AGENT_BRIDGE_OUTAGE_SEED", "20261202"))

CHATS = 10
POLL_INTERVAL = 0.5
#: Long enough that a lease wait would show: the tests' deadlines are shorter.
LEASE_TIMEOUT = 30.0
QUIET = 2.0  # no new reply for this long: nothing late is coming

BACKENDS = [
    "sqlite",
    pytest.param("postgresql", marks=pytest.mark.multi_instance),
]


# --- databases ---------------------------------------------------------------------------


def pg_database() -> AbstractAsyncContextManager[URL]:
    return fresh_database("ab_out")


@asynccontextmanager
async def database(backend: str, tmp_path: Path) -> AsyncIterator[str]:
    """The ``storage.url`` of an empty database of that kind."""
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'bridge.db'}"
        return
    async with pg_database() as url:
        yield url.render_as_string(hide_password=False)


# --- the bridge ----------------------------------------------------------------------------


def write_config(
    tmp_path: Path,
    *,
    db_url: str,
    agent_url: str,
    platform: str,
    section: dict[str, TomlValue],
    dispatcher: dict[str, TomlValue] | None = None,
    http_port: int | None = None,
) -> Path:
    daemon: dict[str, TomlValue] = {"shutdown_grace": 2}
    if http_port is not None:
        daemon["http_listen"] = f"127.0.0.1:{http_port}"
    sections: dict[str, dict[str, TomlValue]] = {
        "storage": {"url": db_url, "lease_timeout": LEASE_TIMEOUT, "poll_interval": POLL_INTERVAL},
        "agents.default": {
            "backend": "thinnest",
            "agent_id": FAKE_AGENT_ID,
            "api_key": FAKE_API_KEY,
            "base_url": agent_url,
            "timeout": 60,  # the PostgreSQL outage test holds the agent for seconds
            "max_retry_wait": 2,
        },
        platform: section,
        "daemon": daemon,
    }
    if dispatcher:
        sections["dispatcher"] = dispatcher
    path = tmp_path / "agent-bridge.toml"
    path.write_text(toml_text(sections), encoding="utf-8")
    return path


def telegram_section(telegram: FakeTelegram) -> dict[str, TomlValue]:
    return {"bot_token": telegram.token, "api_url": telegram.api_url, "allowed_users": ["*"]}


def slack_section(slack: FakeSlack) -> dict[str, TomlValue]:
    return {"bot_token": slack.bot_token, "app_token": slack.app_token, "api_url": slack.api_url}


async def health(port: int) -> tuple[int, dict[str, Any]]:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(f"http://127.0.0.1:{port}/healthz")
        return response.status_code, response.json()


async def wait_health(port: int, status: int, *, within: float) -> dict[str, Any]:
    """Ask /healthz every 0.2 s until it answers ``status``; return its body."""
    deadline = time.monotonic() + within
    while True:
        code, body = await health(port)
        if code == status:
            return body
        if time.monotonic() >= deadline:
            raise AssertionError(f"/healthz still {code} after {within:g}s, not {status}: {body}")
        await asyncio.sleep(0.2)


# --- the platforms, played -----------------------------------------------------------------

TG_USER_BASE = 300_000


def tg_chat(message: Message) -> int:
    return TG_USER_BASE + message.conversation


def tg_conversation(chat: object) -> int | None:
    return chat - TG_USER_BASE if isinstance(chat, int) else None


def tg_push(telegram: FakeTelegram, message: Message) -> None:
    """What a person writing to the bot does: the update waits at Telegram, unconfirmed,
    until the bridge takes it (it is there for the next poller after a crash)."""
    user = User(tg_chat(message), f"user{message.conversation}", f"User{message.conversation}")
    telegram.push(private_text(user, message.text))


def tg_deliver(telegram: FakeTelegram) -> Callable[[Message], Awaitable[None]]:
    async def deliver(message: Message) -> None:
        tg_push(telegram, message)

    return deliver


def last_first_reply(telegram: FakeTelegram) -> float:
    """When the last message got its first reply (monotonic)."""
    first: dict[object, float] = {}
    for call in telegram.sent():
        first.setdefault(call.params.get("text"), call.at)
    return max(first.values(), default=0.0)


def tg_replies(telegram: FakeTelegram) -> list[tuple[object, object]]:
    return [(c.params.get("chat_id"), c.params.get("text")) for c in telegram.sent()]


def slack_channel(message: Message) -> str:
    return f"D{message.conversation:04d}"


def slack_conversation(chat: object) -> int | None:
    if isinstance(chat, str) and chat.startswith("D") and chat[1:].isdigit():
        return int(chat[1:])
    return None


def slack_replies(slack: FakeSlack) -> list[tuple[object, object]]:
    return [
        (c.args.get("channel"), c.args.get("markdown_text") or c.args.get("text"))
        for c in slack.calls_to("chat.postMessage")
    ]


class SlackSocketPlayer:
    """Slack's side of Socket Mode: one DM event per message (its ``ts`` and
    ``event_id`` kept across redeliveries), sent on the open connection; an event not
    acked within ``ack_wait`` seconds (the bridge died, or is reconnecting) is sent again
    with ``retry_attempt`` raised, as Slack does."""

    def __init__(self, slack: FakeSlack, *, ack_wait: float = 3.0, give_up: float = 90.0) -> None:
        self.slack = slack
        self.ack_wait = ack_wait
        self.give_up = give_up
        self.redeliveries = 0
        self._events: dict[Message, tuple[str, dict[str, Any]]] = {}

    async def deliver(self, message: Message) -> None:
        event_id, event = self._events.setdefault(
            message,
            (
                f"EvOut{len(self._events):06d}",
                self.slack.message(
                    message.text,
                    channel=slack_channel(message),
                    user=f"U{message.conversation:04d}",
                    channel_type="im",
                ),
            ),
        )
        deadline = time.monotonic() + self.give_up
        attempt = 0
        while time.monotonic() < deadline:
            try:
                envelope = await self.slack.send_event(
                    event, event_id=event_id, retry_attempt=attempt, retry_reason="timeout"
                )
            except (AssertionError, ConnectionError, RuntimeError):
                # No connection open (the bridge is down or reconnecting): wait for one.
                await asyncio.sleep(0.1)
                continue
            try:
                await self.slack.wait_ack(envelope, within=self.ack_wait)
                return
            except AssertionError:
                attempt += 1
                self.redeliveries += 1
        raise AssertionError(f"{message.text!r} was never acked")


async def play(
    messages: Sequence[Message], deliver: Callable[[Message], Awaitable[None]], *, rate: float
) -> None:
    """Deliver ``messages`` at ``rate`` a second (pacing, not synchronization), each
    conversation's next message only once its previous one was delivered."""
    started = time.monotonic()
    previous: dict[int, asyncio.Task[None]] = {}
    tasks: list[asyncio.Task[None]] = []

    async def one(message: Message, before: asyncio.Task[None] | None) -> None:
        if before is not None:
            await before
        await deliver(message)

    for i, message in enumerate(messages):
        await asyncio.sleep(max(0.0, started + i / rate - time.monotonic()))
        task = asyncio.create_task(one(message, previous.get(message.conversation)))
        previous[message.conversation] = task
        tasks.append(task)
    await asyncio.gather(*tasks)


# --- the figures -----------------------------------------------------------------------------


async def settle(
    messages: Sequence[Message],
    replies: Callable[[], list[tuple[object, object]]],
    *,
    within: float,
) -> bool:
    """Wait until every message has a reply (True; False at the deadline), then until
    no reply came for `QUIET` seconds, so that a late double would be seen."""
    answered = await wait_until(lambda: answered_all(messages, replies()), within=within)
    await wait_quiet(lambda: len(replies()), quiet=QUIET, within=15)
    return answered


def figures_of(
    label: str,
    messages: Sequence[Message],
    replies: list[tuple[object, object]],
    *,
    conversation_of_chat: Callable[[object], int | None],
    agents: FakeAgentServer,
    proxy: AgentProxy,
    started: float,
    notes: Sequence[str] = (),
) -> tuple[Figures, Counter[int], int]:
    """The harness's figures, and how many messages got 1, 2... agent calls."""
    calls = Counter(c.message for c in proxy.calls)
    per_message = Counter(calls[m.text] for m in messages)
    forked = forked_conversations(messages, agents.sessions, calls)
    figures = check(
        label,
        messages,
        replies,
        conversation_of_chat=conversation_of_chat,
        sessions=agents.sessions,
        agent_calls=proxy.calls,
        wall=time.monotonic() - started,
        notes=[
            *notes,
            f"agent calls per message {dict(sorted(per_message.items()))}",
            f"forked conversations {forked}",
        ],
    )
    print(f"\nOUTAGE {figures.line()}")
    return figures, per_message, forked


def forked_conversations(
    messages: Sequence[Message], sessions: Mapping[str, Sequence[str]], calls: Counter[str]
) -> int:
    """Conversations whose memory forked: more than one agent session holds a message
    the agent was asked only once. A call a SIGKILL interrupted is asked again; if it
    was a conversation's first, the session the agent opened for it is never learned
    and stays behind holding only that message, which is not a fork."""
    by_text = {m.text: m for m in messages}
    kept: dict[int, set[str]] = {}
    for session, said in sessions.items():
        for text in said:
            message = by_text.get(text)
            if message is not None and calls[text] == 1:
                kept.setdefault(message.conversation, set()).add(session)
    return sum(1 for held in kept.values() if len(held) > 1)


def problems(cluster: Cluster) -> str:
    lines = [
        line
        for line in cluster.stderr.splitlines()
        if " WARNING " in line or " ERROR " in line or "Traceback" in line
    ]
    return "\n".join(lines[-40:])


# --- a: the platform refuses every post for a while ------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
async def test_replies_refused_for_ten_seconds_are_all_posted_once_without_a_restart(
    tmp_path: Path, backend: str
) -> None:
    messages = conversations(CHATS, 4)  # 40 messages, interleaved over 10 chats
    async with (
        database(backend, tmp_path) as db_url,
        FakeTelegram() as telegram,
        FakeAgentServer() as agents,
        AgentProxy(agents.url, "bridge", latency=0.02) as proxy,
    ):
        config = write_config(
            tmp_path,
            db_url=db_url,
            agent_url=proxy.url,
            platform="telegram",
            section=telegram_section(telegram),
            dispatcher={"delivery_retry_max": 2},
        )
        bridge = Instance("bridge", config, bridge_env())
        async with Cluster([bridge]) as cluster:
            await bridge.start()
            started = time.monotonic()
            stream = asyncio.create_task(play(messages, tg_deliver(telegram), rate=4))
            # Mid-stream: once the first replies went through, Telegram refuses all.
            await telegram.wait_sent(count=5, within=20)
            telegram.fail_always("sendMessage", FakeError(502, "Bad Gateway"))
            refusing = time.monotonic()
            await asyncio.sleep(5)  # the outage's length, not a wait for state
            telegram.fail_always(
                "sendMessage",
                FakeError(429, "Too Many Requests: retry after 2", retry_after=2),
            )
            await asyncio.sleep(5)
            telegram.clear_failures()
            cleared = time.monotonic()
            refused = [c for c in telegram.calls_of("sendMessage") if not c.ok]
            refused_codes = Counter(
                "502" if c.at < refusing + 5 else "429"
                for c in refused
                if refusing <= c.at <= cleared
            )
            await stream
            answered = await settle(messages, lambda: tg_replies(telegram), within=20)
            recovered = last_first_reply(telegram) - cleared
            alive, runs = bridge.alive, len(bridge.processes)
            figures, per_message, _ = figures_of(
                f"a telegram sendMessage refused 10s ({backend})",
                messages,
                tg_replies(telegram),
                conversation_of_chat=tg_conversation,
                agents=agents,
                proxy=proxy,
                started=started,
                notes=[
                    f"refused posts {dict(refused_codes)}",
                    f"all answered {recovered:.1f}s after the outage ended: {answered}",
                ],
            )
            log = problems(cluster)
    assert alive and runs == 1, log  # answered by the same process, no restart
    assert refused_codes["502"] and refused_codes["429"], "the outage never hit a post"
    assert answered, f"{figures.line()}\n{log}"
    assert figures.lost == figures.doubled == figures.out_of_order == 0, figures.line()
    assert figures.stray_replies == figures.multi_session == 0, figures.line()
    assert per_message == {1: len(messages)}, figures.line()  # the agent, once each


# --- b: PostgreSQL goes away while answers come back -----------------------------------------


@pytest.mark.multi_instance
async def test_postgresql_cut_mid_stream_keeps_the_answers_and_asks_the_agent_once(
    tmp_path: Path,
) -> None:
    messages = conversations(CHATS, 4)
    first, rest = messages[:CHATS], messages[CHATS:]  # one per chat, then 30 more
    cut_for = 8.0  # shorter than the lease timeout: no other instance could step in
    http_port = free_port()
    async with pg_database() as pg_url:
        assert pg_url.host is not None
        async with (
            TcpProxy(pg_url.host, pg_url.port or 5432) as db_proxy,
            FakeTelegram() as telegram,
            FakeAgentServer() as agents,
            AgentProxy(agents.url, "bridge", latency=0.02) as proxy,
        ):
            via_proxy = pg_url.set(host="127.0.0.1", port=db_proxy.port)
            config = write_config(
                tmp_path,
                db_url=via_proxy.render_as_string(hide_password=False),
                agent_url=proxy.url,
                platform="telegram",
                section=telegram_section(telegram),
                http_port=http_port,
            )
            bridge = Instance("bridge", config, bridge_env())
            async with Cluster([bridge]) as cluster:
                await bridge.start()
                await wait_health(http_port, 200, within=10)
                started = time.monotonic()

                # Every chat's first message at the agent, held there.
                agents.hold()
                for message in first:
                    tg_push(telegram, message)
                await agents.wait_for_calls(CHATS, within=20)
                await db_proxy.cut()
                cut_at = time.monotonic()
                agents.release()  # the answers come back while the database is gone
                stream = asyncio.create_task(play(rest, tg_deliver(telegram), rate=4))
                unhealthy = await wait_health(http_port, 503, within=cut_for - 2)
                answered_during_cut = len(tg_replies(telegram))
                await asyncio.sleep(max(0.0, cut_at + cut_for - time.monotonic()))  # outage
                # The agent had answered every held call before the database came back.
                agent_answers_while_cut = sum(len(said) for said in agents.sessions.values())
                db_proxy.restore()
                restored = time.monotonic()
                await stream
                answered = await settle(messages, lambda: tg_replies(telegram), within=30)
                recovered = last_first_reply(telegram) - restored
                healthy = await wait_health(http_port, 200, within=15)
                alive, runs = bridge.alive, len(bridge.processes)
                figures, per_message, _ = figures_of(
                    "b postgresql cut 8s mid-stream",
                    messages,
                    tg_replies(telegram),
                    conversation_of_chat=tg_conversation,
                    agents=agents,
                    proxy=proxy,
                    started=started,
                    notes=[
                        f"cut {cut_for:g}s after {CHATS} agent calls were in flight",
                        f"connections refused while cut {db_proxy.refused}",
                        f"agent answers while cut {agent_answers_while_cut}",
                        f"replies posted while cut {answered_during_cut}",
                        f"all answered {recovered:.1f}s after the restore: {answered}",
                        f"healthz while cut {unhealthy['problems']}",
                    ],
                )
                log = problems(cluster)
    assert alive and runs == 1, log
    assert db_proxy.refused > 0, "the bridge never tried the database while it was cut"
    assert agent_answers_while_cut == CHATS, "the answers did not come back during the cut"
    assert any(p.startswith(("database:", "store:")) for p in unhealthy["problems"]), unhealthy
    assert unhealthy["database"] != "ok", unhealthy
    assert healthy["database"] == "ok" and healthy["problems"] == [], healthy
    assert answered, f"{figures.line()}\n{log}"
    assert figures.lost == figures.doubled == figures.out_of_order == 0, figures.line()
    assert figures.stray_replies == figures.multi_session == 0, figures.line()
    # The answers that came back while the database was gone were kept, not asked again.
    assert per_message == {1: len(messages)}, f"{figures.line()}\n{log}"


# --- c, d: SIGKILL at random moments -----------------------------------------------------------


async def kill_at_random(
    bridge: Instance, rng: random.Random, *, kills: int, until: asyncio.Task[None]
) -> list[float]:
    """SIGKILL ``bridge`` ``kills`` times, each a random 0.5-3 s after it was ready,
    and start it again at once; returns when it was killed (monotonic)."""
    killed: list[float] = []
    for _ in range(kills):
        await asyncio.sleep(rng.uniform(0.5, 3.0))  # the random moment
        await bridge.kill()
        killed.append(time.monotonic())
        await bridge.start()
    if not until.done():
        await until
    return killed


async def kill_run(
    label: str,
    bridge: Instance,
    cluster: Cluster,
    messages: Sequence[Message],
    deliver: Callable[[Message], Awaitable[None]],
    replies: Callable[[], list[tuple[object, object]]],
    *,
    conversation_of_chat: Callable[[object], int | None],
    agents: FakeAgentServer,
    proxy: AgentProxy,
    kills: int,
    seed: int,
) -> tuple[Figures, Counter[int], int, str]:
    rng = random.Random(seed)
    print(f"\n{label}: kill schedule seed {seed}")
    await bridge.start()
    started = time.monotonic()
    stream = asyncio.create_task(play(messages, deliver, rate=5))
    killed = await kill_at_random(bridge, rng, kills=kills, until=stream)
    streamed = time.monotonic()  # the last message is at Telegram / Slack
    # A third of the lease timeout: the restarts must take the dead processes' work
    # over at once (same machine, pid gone), not wait for their leases to expire.
    answered = await settle(messages, replies, within=LEASE_TIMEOUT / 3)
    answered_in = time.monotonic() - streamed - QUIET
    figures, per_message, forked = figures_of(
        label,
        messages,
        replies(),
        conversation_of_chat=conversation_of_chat,
        agents=agents,
        proxy=proxy,
        started=started,
        notes=[
            f"seed {seed}",
            f"killed at +{', +'.join(f'{k - started:.1f}' for k in killed)}s",
            f"all answered {answered_in:.1f}s after the stream ended: {answered}",
        ],
    )
    assert answered, f"{figures.line()}\n{problems(cluster)}"
    return figures, per_message, forked, problems(cluster)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_telegram_sigkilled_three_times_under_a_stream_loses_nothing(
    tmp_path: Path, backend: str
) -> None:
    kills = 3
    messages = conversations(CHATS, 6)  # 60 messages
    async with (
        database(backend, tmp_path) as db_url,
        FakeTelegram() as telegram,
        FakeAgentServer() as agents,
        AgentProxy(agents.url, "bridge", latency=0.1) as proxy,  # kills land mid-call too
    ):
        config = write_config(
            tmp_path,
            db_url=db_url,
            agent_url=proxy.url,
            platform="telegram",
            section=telegram_section(telegram),
        )
        bridge = Instance("bridge", config, bridge_env())
        async with Cluster([bridge]) as cluster:
            figures, per_message, forked, log = await kill_run(
                f"c telegram polling, {kills} SIGKILLs ({backend})",
                bridge,
                cluster,
                messages,
                tg_deliver(telegram),
                lambda: tg_replies(telegram),
                conversation_of_chat=tg_conversation,
                agents=agents,
                proxy=proxy,
                kills=kills,
                seed=SEED,
            )
    assert figures.lost == 0, f"{figures.line()}\n{log}"
    assert figures.out_of_order == 0, f"{figures.line()}\n{log}"
    assert figures.stray_replies == 0, figures.line()
    # The documented window: a post in the last instant before a kill may be repeated.
    assert figures.doubled <= kills, f"{figures.line()}\n{log}"
    # The agent is asked again only for a call a kill interrupted: at most one per chat.
    assert figures.agent_repeats <= kills * CHATS, figures.line()
    assert sum(per_message.values()) == len(messages) and 0 not in per_message
    assert forked == 0, figures.line()  # one agent session per chat, through the kills


@asynccontextmanager
async def cancelled_at_exit(task: asyncio.Task[Any]) -> AsyncIterator[None]:
    try:
        yield
    finally:
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def lose_post_answers(slack: FakeSlack, *, after: Sequence[int]) -> int:
    """Once ``n`` chat.postMessage calls arrived, for each ``n`` of ``after``: the next
    one posts, but its answer is lost. Returns how many were lost."""
    for count in after:
        await slack.wait_call("chat.postMessage", count, within=60)
        slack.lose_response("chat.postMessage")
    await slack.wait_call("chat.postMessage", after[-1] + 1, within=60)
    return len(after)


async def test_slack_socket_mode_sigkilled_three_times_under_a_stream_posts_nothing_twice(
    tmp_path: Path,
) -> None:
    kills = 3
    messages = conversations(CHATS, 6)
    async with (
        FakeSlack() as slack,
        FakeAgentServer() as agents,
        AgentProxy(agents.url, "bridge", latency=0.1) as proxy,
    ):
        config = write_config(
            tmp_path,
            db_url=f"sqlite+aiosqlite:///{tmp_path / 'bridge.db'}",
            agent_url=proxy.url,
            platform="slack",
            section=slack_section(slack),
        )
        player = SlackSocketPlayer(slack)
        bridge = Instance("bridge", config, bridge_env())
        # Besides the kills, three posts go through while their answer is lost on the
        # way back: the same doubt a crash leaves ("did it post?"), on a live bridge,
        # so that every run has replies to post again and must not double them.
        losing = asyncio.create_task(lose_post_answers(slack, after=(10, 25, 40)))
        async with Cluster([bridge]) as cluster, cancelled_at_exit(losing):
            figures, per_message, forked, log = await kill_run(
                f"d slack socket mode, {kills} SIGKILLs (sqlite)",
                bridge,
                cluster,
                messages,
                player.deliver,
                lambda: slack_replies(slack),
                conversation_of_chat=slack_conversation,
                agents=agents,
                proxy=proxy,
                kills=kills,
                seed=SEED + 1,
            )
        lost_answers = await losing
        read_backs = len(slack.calls_to("conversations.history"))
        print(
            f"slack: events redelivered {player.redeliveries}, post answers lost "
            f"{lost_answers}, read-backs {read_backs}"
        )
    assert lost_answers == 3
    assert figures.lost == 0, f"{figures.line()}\n{log}"
    assert figures.out_of_order == 0, f"{figures.line()}\n{log}"
    assert figures.stray_replies == 0, figures.line()
    # Slack: the bridge reads its own posts back before posting again.
    assert figures.doubled == 0, f"{figures.line()}\n{log}"
    assert figures.agent_repeats <= kills * CHATS, figures.line()
    assert sum(per_message.values()) == len(messages) and 0 not in per_message
    assert forked == 0, figures.line()  # one agent session per chat, through the kills
