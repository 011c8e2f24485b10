"""Several `agent-bridge run` processes on one PostgreSQL: every message answered exactly
once, in order, in one agent session per conversation, through a crash.

Black-box: real subprocesses behind a round-robin `Forwarder`, fake Telegram / Slack /
agent servers in this process (see `tests.e2e.harness`). Run with::

    AGENT_BRIDGE_TEST_DATABASE_URL=postgresql+asyncpg://postgres@127.0.0.1:5432/test \\
        .venv/bin/pytest tests/e2e -m multi_instance -s

Each test prints one ``E2E ...`` line with its figures (also in the assertion message).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.harness import (
    AgentProxy,
    Cluster,
    Figures,
    Forwarder,
    Instance,
    LoadGenerator,
    Message,
    RequestBuilder,
    SlackPlayer,
    TelegramPlayer,
    TomlValue,
    answered_all,
    bridge_env,
    check,
    conversations,
    kill_and_restart,
    toml_text,
    wait_quiet,
    wait_until,
)
from tests.fakes.agents import FAKE_AGENT_ID, FAKE_API_KEY, FakeAgentServer
from tests.fakes.slack import FakeSlack
from tests.fakes.telegram import FakeTelegram
from tests.ports import free_port

pytestmark = pytest.mark.multi_instance

WEBHOOK_SECRET = "e2e-webhook-secret_0123"
SIGNING_SECRET = "e2e-slack-signing-secret"
LEASE_TIMEOUT = 3.0
POLL_INTERVAL = 0.5
#: Added by each instance's `AgentProxy` to every agent call.
AGENT_LATENCY = 0.05

# The balanced runs (A, B): 1,000 messages over 100 conversations, one instance of three
# SIGKILLed after KILL_AFTER accepted messages and restarted a second later.
INSTANCES = 3
USERS = 100
PER_USER = 10
RATE = 70.0  # messages a second
IN_FLIGHT = 8
KILL_AFTER = 400
ANSWER_DEADLINE = 60.0  # seconds after the last message was accepted
QUIET = 2.0  # no new reply for this long: nothing late is coming

# The busy-instance runs (C, D): 30 messages in 10 conversations, the agent held.
BUSY_USERS = 10
BUSY_PER_USER = 3


def bridge_sections(
    db_url: str, agent_url: str, *, platform: str, section: dict[str, TomlValue]
) -> dict[str, dict[str, TomlValue]]:
    return {
        "storage": {
            "url": db_url,
            "lease_timeout": LEASE_TIMEOUT,
            "poll_interval": POLL_INTERVAL,
        },
        "agents.default": {
            "backend": "thinnest",
            "agent_id": FAKE_AGENT_ID,
            "api_key": FAKE_API_KEY,
            "base_url": agent_url,
            "timeout": 60,  # C and D hold the agent for seconds
            "max_retry_wait": 2,
        },
        platform: section,
        "daemon": {"shutdown_grace": 2},
    }


def telegram_section(telegram: FakeTelegram, port: int, webhook_url: str) -> dict[str, TomlValue]:
    return {
        "bot_token": telegram.token,
        "api_url": telegram.api_url,
        "allowed_users": ["*"],
        "mode": "webhook",
        "webhook_url": webhook_url,
        "webhook_secret": WEBHOOK_SECRET,
        "listen": f"127.0.0.1:{port}",
    }


def slack_section(slack: FakeSlack, port: int) -> dict[str, TomlValue]:
    return {
        "bot_token": slack.bot_token,
        "api_url": slack.api_url,
        "mode": "http",
        "signing_secret": SIGNING_SECRET,
        "listen": f"127.0.0.1:{port}",
    }


def telegram_replies(telegram: FakeTelegram) -> list[tuple[object, object]]:
    return [(c.params.get("chat_id"), c.params.get("text")) for c in telegram.sent()]


def slack_replies(slack: FakeSlack) -> list[tuple[object, object]]:
    return [
        (c.args.get("channel"), c.args.get("markdown_text") or c.args.get("text"))
        for c in slack.calls_to("chat.postMessage")
    ]


@dataclass
class Platform:
    """What differs between Telegram and Slack for these tests."""

    name: str  # the config section
    path: str  # where the webhook / Events API requests go
    #: The section for an instance listening on a port, given the public URL (the
    #: balancer's) that the platform posts to.
    section: Callable[[int, str], dict[str, TomlValue]]
    build: RequestBuilder
    replies: Callable[[], list[tuple[object, object]]]
    conversation_of_chat: Callable[[object], int | None]
    #: How long the platform waits for an answer before it delivers again.
    timeout: float


@asynccontextmanager
async def bridges(
    tmp_path: Path,
    db_url: str,
    agents: FakeAgentServer,
    platform: Platform,
    ports: list[int],
    public_url: str,
) -> AsyncIterator[tuple[Cluster, list[AgentProxy]]]:
    """One instance per port, each with its own `AgentProxy` to ``agents``; not started.
    ``public_url`` is the balancer's, or "" for each instance's own address."""
    async with AsyncExitStack() as stack:
        proxies = []
        instances = []
        for n, port in enumerate(ports):
            name = f"i{n + 1}"
            proxy = await stack.enter_async_context(
                AgentProxy(agents.url, name, latency=AGENT_LATENCY)
            )
            proxies.append(proxy)
            config = tmp_path / f"{name}.toml"
            sections = bridge_sections(
                db_url,
                proxy.url,
                platform=platform.name,
                section=platform.section(port, public_url or f"http://127.0.0.1:{port}"),
            )
            config.write_text(toml_text(sections), encoding="utf-8")
            instances.append(Instance(name, config, bridge_env()))
        cluster = await stack.enter_async_context(Cluster(instances))
        yield cluster, proxies


async def balanced_run(
    label: str,
    tmp_path: Path,
    db_url: str,
    agents: FakeAgentServer,
    platform: Platform,
    window_doubles: Callable[[float], int] | None = None,
) -> Figures:
    """A and B: 1,000 messages through a balancer over three instances, one killed and
    restarted mid-way; returns the figures once everything is answered (or the deadline).
    ``window_doubles(killed_at)`` counts the doubles the README allows for the platform."""
    ports = [free_port() for _ in range(INSTANCES)]
    messages = conversations(USERS, PER_USER)
    async with (
        Forwarder([f"http://127.0.0.1:{p}" for p in ports]) as forwarder,
        bridges(tmp_path, db_url, agents, platform, ports, forwarder.url) as (cluster, proxies),
    ):
        await cluster.start()
        load = LoadGenerator(
            forwarder.url + platform.path,
            platform.build,
            rate=RATE,
            in_flight=IN_FLIGHT,
            timeout=platform.timeout,
        )
        async with asyncio.TaskGroup() as tasks:
            chaos = tasks.create_task(
                kill_and_restart(cluster[1], when=load.wait_accepted(KILL_AFTER))
            )
            tasks.create_task(load.run(messages))
        killed_at, back_at = chaos.result()

        answered = await wait_until(
            lambda: answered_all(messages, platform.replies()), within=ANSWER_DEADLINE
        )
        last_reply = time.monotonic()
        quiet = await wait_quiet(lambda: len(platform.replies()), quiet=QUIET, within=15)
        agent_calls = [c for p in proxies for c in p.calls]
        notes = [
            f"sent in {load.finished_at - load.started_at:.1f}s",
            f"killed {cluster[1].name} at +{killed_at - load.started_at:.1f}s, "
            f"ready again after {back_at - killed_at:.1f}s",
            f"delivery failures {dict(load.failures())}",
        ]
        if not answered:
            notes.append(f"NOT all answered within {ANSWER_DEADLINE:g}s")
        if not quiet:
            notes.append("replies still coming 15s after the last answer")
        figures = check(
            label,
            messages,
            platform.replies(),
            conversation_of_chat=platform.conversation_of_chat,
            sessions=agents.sessions,
            agent_calls=agent_calls,
            load=load,
            wall=last_reply - load.started_at,
            notes=notes,
        )
        if window_doubles is not None:
            tolerated = window_doubles(killed_at)
            figures = dataclasses.replace(
                figures,
                tolerated_doubles=tolerated,
                notes=(*figures.notes, f"doubles posted across the kill: {tolerated}"),
            )
        print(f"\n{figures.line()}")
        if not figures.ok:
            problems = [
                line
                for line in cluster.stderr.splitlines()
                if " WARNING " in line or " ERROR " in line or "Traceback" in line
            ]
            print("instance warnings and errors (last 30):", *problems[-30:], sep="\n")
    return figures


async def test_telegram_webhook_three_instances_behind_a_balancer_with_a_crash(
    tmp_path: Path, pg_database: str
) -> None:
    player = TelegramPlayer(WEBHOOK_SECRET)
    async with FakeTelegram() as telegram, FakeAgentServer() as agents:
        platform = Platform(
            name="telegram",
            path="/telegram",
            section=lambda port, url: telegram_section(telegram, port, f"{url}/telegram"),
            build=player.request,
            replies=lambda: telegram_replies(telegram),
            conversation_of_chat=player.conversation_of_chat,
            timeout=10.0,
        )
        figures = await balanced_run(
            "A telegram webhook x3",
            tmp_path,
            pg_database,
            agents,
            platform,
            window_doubles=lambda killed_at: doubles_across(telegram, killed_at),
        )
    assert figures.ok, figures.line()


def doubles_across(telegram: FakeTelegram, killed_at: float) -> int:
    """README, "Delivery guarantees": on Telegram a reply whose post went through in
    the instant before a crash may be posted again. Such a double is posted once
    before the kill and once after it; any other double is a bug, not tolerated."""
    posts: dict[tuple[object, object], list[float]] = {}
    for call in telegram.sent():
        if call.ok:
            posts.setdefault((call.params.get("chat_id"), call.params.get("text")), []).append(
                call.at
            )
    return sum(1 for times in posts.values() if len(times) == 2 and times[0] < killed_at < times[1])


async def test_slack_http_three_instances_behind_a_balancer_with_a_crash(
    tmp_path: Path, pg_database: str
) -> None:
    async with FakeSlack() as slack, FakeAgentServer() as agents:
        player = SlackPlayer(slack, SIGNING_SECRET)
        platform = Platform(
            name="slack",
            path="/slack/events",
            section=lambda port, url: slack_section(slack, port),
            build=player.request,
            replies=lambda: slack_replies(slack),
            conversation_of_chat=player.conversation_of_chat,
            timeout=3.0,  # Slack redelivers an event not acked within 3 seconds
        )
        figures = await balanced_run("B slack http x3", tmp_path, pg_database, agents, platform)
    assert figures.ok, figures.line()


# --- C and D: a busy instance ------------------------------------------------------------


@dataclass
class Pair:
    cluster: Cluster
    proxies: list[AgentProxy]
    ports: list[int]
    player: TelegramPlayer
    messages: list[Message]


@asynccontextmanager
async def busy_pair(
    tmp_path: Path, db_url: str, telegram: FakeTelegram, agents: FakeAgentServer
) -> AsyncIterator[Pair]:
    """Two Telegram webhook instances, each on its own port (the messages go to the
    first one only); 30 messages in 10 conversations ready to send."""
    ports = [free_port(), free_port()]
    player = TelegramPlayer(WEBHOOK_SECRET)
    platform = Platform(
        name="telegram",
        path="/telegram",
        section=lambda port, url: telegram_section(telegram, port, f"{url}/telegram"),
        build=player.request,
        replies=lambda: telegram_replies(telegram),
        conversation_of_chat=player.conversation_of_chat,
        timeout=10.0,
    )
    async with bridges(tmp_path, db_url, agents, platform, ports, "") as (cluster, proxies):
        yield Pair(cluster, proxies, ports, player, conversations(BUSY_USERS, BUSY_PER_USER))


async def make_busy(
    port: int, player: TelegramPlayer, messages: list[Message], proxy: AgentProxy
) -> LoadGenerator:
    """Deliver ``messages`` to the instance on ``port`` and wait until its agent calls
    for the first message of every conversation are in flight (held by the agent)."""
    load = LoadGenerator(
        f"http://127.0.0.1:{port}/telegram", player.request, rate=200, in_flight=4, timeout=10
    )
    await load.run(messages)
    assert not load.not_accepted, load.failures()
    started = await wait_until(lambda: len(proxy.calls) >= BUSY_USERS, within=15)
    assert started, f"{len(proxy.calls)} agent calls in flight, wanted {BUSY_USERS}"
    return load


async def test_an_instance_started_beside_a_busy_one_takes_none_of_its_work(
    tmp_path: Path, pg_database: str
) -> None:
    async with (
        FakeTelegram() as telegram,
        FakeAgentServer() as agents,
        busy_pair(tmp_path, pg_database, telegram, agents) as pair,
    ):
        cluster, proxies, player, messages = pair.cluster, pair.proxies, pair.player, pair.messages
        first, second = cluster[0], cluster[1]
        await first.start()
        agents.hold()
        load = await make_busy(pair.ports[0], player, messages, proxies[0])

        await second.start()
        # A lease timeout and two polls: long enough for the newcomer to steal work if it
        # would; it ends at once if the newcomer calls the agent.
        window = LEASE_TIMEOUT + 2 * POLL_INTERVAL
        stole = await wait_until(lambda: bool(proxies[1].calls), within=window)
        agents.release()
        answered = await wait_until(
            lambda: answered_all(messages, telegram_replies(telegram)), within=20
        )
        await wait_quiet(lambda: len(telegram.sent()), quiet=QUIET, within=15)
        alive = first.alive
        figures = check(
            "C newcomer beside a busy instance",
            messages,
            telegram_replies(telegram),
            conversation_of_chat=player.conversation_of_chat,
            sessions=agents.sessions,
            agent_calls=[c for p in proxies for c in p.calls],
            load=load,
            wall=time.monotonic() - load.started_at,
            notes=[
                f"newcomer called the agent during the {window:g}s window: {stole}",
                f"all answered: {answered}",
            ],
        )
        print(f"\n{figures.line()}")
    assert alive, "the busy instance died"
    assert figures.ok, figures.line()
    assert proxies[1].calls == [], figures.line()


async def test_a_killed_instance_s_work_is_taken_over_within_the_lease_timeout(
    tmp_path: Path, pg_database: str
) -> None:
    margin = 5.0  # a poll, three turns per conversation, and a loaded 2-core machine
    async with (
        FakeTelegram() as telegram,
        FakeAgentServer() as agents,
        busy_pair(tmp_path, pg_database, telegram, agents) as pair,
    ):
        cluster, proxies, player, messages = pair.cluster, pair.proxies, pair.player, pair.messages
        busy, heir = cluster[0], cluster[1]
        # The heir starts once the busy instance holds every conversation: started
        # together, an idle heir may claim a message in the instant between its
        # acceptance by the busy one and that one's own claim (any instance may take
        # unleased work), and the busy instance would not hold all ten.
        await busy.start()
        agents.hold()
        load = await make_busy(pair.ports[0], player, messages, proxies[0])
        await heir.start()
        assert proxies[1].calls == []  # the heir has taken nothing so far

        await busy.kill()
        killed_at = time.monotonic()
        agents.release()  # the dead instance's calls finish at the agent, unheard
        answered = await wait_until(
            lambda: answered_all(messages, telegram_replies(telegram)),
            within=LEASE_TIMEOUT + margin,
        )
        took = time.monotonic() - killed_at
        await wait_quiet(lambda: len(telegram.sent()), quiet=QUIET, within=15)
        heir_alive = heir.alive
        heir_calls = [c for c in proxies[1].calls if c.at >= killed_at]
        first_heir_call = min((c.at for c in heir_calls), default=None)
        figures = check(
            "D takeover after a kill",
            messages,
            telegram_replies(telegram),
            conversation_of_chat=player.conversation_of_chat,
            # The killed instance's held calls ran at the agent too; their sessions were
            # never recorded by the bridge, so a second session there is expected.
            sessions={},
            agent_calls=[c for p in proxies for c in p.calls],
            load=load,
            wall=time.monotonic() - load.started_at,
            notes=[
                f"all answered {took:.1f}s after the kill"
                if answered
                else f"NOT all answered within {LEASE_TIMEOUT + margin:g}s of the kill",
                "heir's first agent call "
                + (
                    f"{first_heir_call - killed_at:.1f}s after the kill"
                    if first_heir_call is not None
                    else "never"
                ),
                f"agent sessions per conversation: {_sessions_per_conversation(agents, messages)}",
            ],
        )
        print(f"\n{figures.line()}")
    assert heir_alive, "the heir died"
    assert answered, figures.line()
    assert figures.ok, figures.line()


def _sessions_per_conversation(agents: FakeAgentServer, messages: list[Message]) -> str:
    texts = {m.text: m.conversation for m in messages}
    per: dict[int, set[str]] = {}
    for session, said in agents.sessions.items():
        for text in said:
            if text in texts:
                per.setdefault(texts[text], set()).add(session)
    counts = sorted(len(s) for s in per.values())
    return f"min {counts[0]} max {counts[-1]}" if counts else "none"
