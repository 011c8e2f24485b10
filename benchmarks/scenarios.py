"""What the benchmark does to a process under test: one `Session` is one process (the
bridge or the relay) with its own fresh fakes; the load functions drive it and measure.

A session runs on one platform: Telegram (long polling) or Slack (Socket Mode, direct
messages). Every load ends by awaiting the fake platform's "every message answered" event, and
every session ends by stopping its process and checking that each message it was sent
got exactly one reply, with the echoed text, in its own chat (`BenchError` otherwise).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.fakes import AGENT_ID, API_KEY, BenchAgent, BenchPlatform, BenchTelegram, text_of
from benchmarks.fakes_slack import BenchSlack
from benchmarks.processes import BenchError, Process, bridge_argv, relay_argv, slack_relay_argv

BRIDGE = "bridge"
RELAY = "relay"
TELEGRAM = "telegram"
SLACK = "slack"
PLATFORMS = (TELEGRAM, SLACK)

#: Each load gets its own users (chat ids), so that no two loads share a conversation.
_user_bases = itertools.count(1)
_tags = itertools.count(1)


def limit_setting() -> tuple[str, int] | None:
    """The Telegram config key (and value) that switches the bridge's flood limiter
    off, if this version of the bridge has one: ``telegram.max_messages_per_second``,
    where 0 (or, if 0 is refused, a big number) means no limit."""
    from bridge.config import TelegramConfig

    key = "max_messages_per_second"
    if key not in TelegramConfig.model_fields:
        return None
    for value in (0, 1_000_000):
        try:
            TelegramConfig.model_validate(
                {"bot_token": "1:x", "allowed_users": ["*"], key: value}, strict=False
            )
        except ValueError:
            continue
        return key, value
    return None


def bridge_max_concurrency() -> int:
    """The bridge's default ``dispatcher.max_concurrency``: the relay gets the same bound
    on agent calls in flight, so that the two differ by the store and the limiter."""
    from bridge.config import DispatcherConfig

    value = DispatcherConfig.model_fields["max_concurrency"].default
    return value if isinstance(value, int) and value > 0 else 64


def _toml(value: object) -> str:
    return json.dumps(value)  # a JSON string, number or list of those is TOML too


def write_config(
    path: Path,
    *,
    storage_url: str,
    platform: BenchPlatform,
    agent: BenchAgent,
    limit_off: bool,
) -> None:
    """A real config file for ``agent-bridge run``: defaults everywhere but the
    addresses of the fakes and the database (and the flood limit, when ``limit_off``)."""
    sections: dict[str, dict[str, Any]] = {
        "storage": {"url": storage_url},
        "agents.default": {
            "backend": "thinnest",
            "agent_id": AGENT_ID,
            "api_key": API_KEY,
            "base_url": agent.url,
        },
    }
    if isinstance(platform, BenchSlack):
        slack: dict[str, Any] = {
            "bot_token": platform.bot_token,
            "app_token": platform.app_token,
            "api_url": platform.api_url,
        }
        if limit_off:
            slack["channel_messages_per_second"] = 0
        sections["slack"] = slack
    elif isinstance(platform, BenchTelegram):
        telegram: dict[str, Any] = {
            "bot_token": platform.token,
            "allowed_users": ["*"],
            "api_url": platform.api_url,
        }
        if limit_off:
            setting = limit_setting()
            if setting is None:
                raise BenchError("this bridge has no key to switch the Telegram flood limit off")
            telegram[setting[0]] = setting[1]
        sections["telegram"] = telegram
    lines: list[str] = []
    for name, keys in sections.items():
        lines.append(f"[{name}]")
        lines.extend(f"{key} = {_toml(value)}" for key, value in keys.items())
        lines.append("")
    path.write_text("\n".join(lines))


@dataclass
class Session:
    system: str
    platform: BenchPlatform
    agent: BenchAgent
    process: Process
    #: Seconds from spawn to READY=1.
    startup: float = 0.0
    #: Every message text sent in this session.
    sent: set[str] = field(default_factory=set)

    async def close(self, *, check: bool = True) -> None:
        try:
            code = await self.process.stop()
            if check:
                if code != 0:
                    raise BenchError(f"{self.system} exited {code}:\n{self.process.tail()}")
                self.check_exactly_once()
        finally:
            await self.platform.close()
            await self.agent.close()

    def check_exactly_once(self) -> None:
        fake = self.platform
        lost = [t for t in self.sent if not fake.answers[t]]
        doubled = [t for t in self.sent if fake.answers[t] > 1]
        if lost or doubled or fake.stray:
            raise BenchError(
                f"{self.system}: {len(self.sent)} messages sent, {len(lost)} unanswered "
                f"(e.g. {sorted(lost)[:3]}), {len(doubled)} answered more than once "
                f"(e.g. {sorted(doubled)[:3]}), {fake.stray} stray replies"
            )


async def open_session(
    system: str,
    workdir: Path,
    *,
    platform: str = TELEGRAM,
    storage_url: str = "",
    agent_latency: float = 0.0,
    limit_off: bool = False,
) -> Session:
    """Fresh fakes, then the process under test, started and READY."""
    fake: BenchPlatform = BenchSlack() if platform == SLACK else BenchTelegram()
    agent = BenchAgent(latency=agent_latency)
    await fake.start()
    await agent.start()
    if system == BRIDGE:
        config = workdir / "agent-bridge.toml"
        write_config(
            config, storage_url=storage_url, platform=fake, agent=agent, limit_off=limit_off
        )
        argv = bridge_argv(config) + (["-vv"] if os.environ.get("BENCH_VV") else [])
    elif isinstance(fake, BenchSlack):
        argv = slack_relay_argv(
            fake.api_url, fake.bot_token, fake.app_token, agent.url, AGENT_ID, API_KEY
        )
        argv += ["--max-in-flight", str(bridge_max_concurrency())]
    else:
        assert isinstance(fake, BenchTelegram)
        argv = relay_argv(fake.api_url, fake.token, agent.url, AGENT_ID, API_KEY)
        argv += ["--max-in-flight", str(bridge_max_concurrency())]
    process = Process(f"{system}-{platform}", argv, workdir)
    session = Session(system, fake, agent, process)
    try:
        session.startup = await process.start()
    except BaseException:
        await session.close(check=False)
        raise
    return session


# --- loads -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Burst:
    throughput: float
    cpu_ms_per_message: float
    #: This process's (the fakes') CPU time per message meanwhile.
    fakes_cpu_ms_per_message: float


def _own_cpu() -> float:
    times = os.times()
    return times.user + times.system


async def burst(session: Session, messages: int, chats: int, *, within: float) -> Burst:
    """``messages`` queued at once, spread over ``chats`` private chats; throughput from
    the first one offered to the last reply, and the process's CPU time per message."""
    tag, base = f"b{next(_tags)}", next(_user_bases) * 100_000
    texts = [text_of(tag, i % chats, i // chats) for i in range(messages)]
    fake = session.platform
    fake.expect(set(texts))
    session.sent.update(texts)
    cpu_before, own_before = session.process.cpu_seconds(), _own_cpu()
    started = time.monotonic()
    for i, text in enumerate(texts):
        fake.push(base + i % chats, text)
    await _wait(session, within)
    finished = max(fake.answered_at[t] for t in texts)
    cpu = session.process.cpu_seconds() - cpu_before
    own = _own_cpu() - own_before
    return Burst(messages / (finished - started), cpu * 1000 / messages, own * 1000 / messages)


@dataclass(frozen=True)
class Latency:
    #: Update offered -> the agent call arrived, per message (seconds).
    inbound: list[float]
    #: The agent answered -> the sendMessage arrived, per message (seconds).
    outbound: list[float]


async def paced(
    session: Session, messages: int, rate: float, chats: int, *, within: float
) -> Latency:
    """``messages`` offered one by one at ``rate`` a second, round robin over ``chats``."""
    tag, base = f"p{next(_tags)}", next(_user_bases) * 100_000
    texts = [text_of(tag, i % chats, i // chats) for i in range(messages)]
    fake, agent = session.platform, session.agent
    fake.expect(set(texts))
    session.sent.update(texts)
    start = time.monotonic()
    for i, text in enumerate(texts):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)  # the pace of the load, not a wait for a state
        fake.push(base + i % chats, text)
    await _wait(session, within)
    inbound = [agent.arrived_at[t] - fake.pushed_at[t] for t in texts]
    outbound = [fake.answered_at[t] - agent.answered_at[t] for t in texts]
    return Latency(inbound, outbound)


@dataclass(frozen=True)
class Crowd:
    wall: float
    peak_rss_kib: int


async def crowd(session: Session, conversations: int, *, within: float) -> Crowd:
    """One message in each of ``conversations`` chats at once (the agent is slow)."""
    tag, base = f"c{next(_tags)}", next(_user_bases) * 100_000
    texts = [text_of(tag, i, 0) for i in range(conversations)]
    fake = session.platform
    fake.expect(set(texts))
    session.sent.update(texts)
    started = time.monotonic()
    for i, text in enumerate(texts):
        fake.push(base + i, text)
    await _wait(session, within)
    finished = max(fake.answered_at[t] for t in texts)
    return Crowd(finished - started, session.process.memory_kib("VmHWM"))


async def soak(
    session: Session, minutes: float, rate: float, chats: int, *, sample_every: float = 10.0
) -> list[int]:
    """A steady ``rate`` for ``minutes``; VmRSS (KiB) sampled every ``sample_every`` s."""
    tag, base = f"s{next(_tags)}", next(_user_bases) * 100_000
    fake = session.platform
    samples = [session.process.memory_kib("VmRSS")]
    start = time.monotonic()
    end = start + minutes * 60
    next_sample = start + sample_every
    texts: list[str] = []
    i = 0
    while (now := time.monotonic()) < end:
        if now >= next_sample:
            samples.append(session.process.memory_kib("VmRSS"))
            next_sample += sample_every
        text = text_of(tag, i % chats, i // chats)
        texts.append(text)
        session.sent.add(text)
        fake.push(base + i % chats, text)
        i += 1
        await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))  # the pace
    fake.expect(set(texts))
    await _wait(session, 120.0)
    samples.append(session.process.memory_kib("VmRSS"))
    return samples


async def _wait(session: Session, within: float) -> None:
    """Wait for every expected reply; fail early if the process died meanwhile."""
    proc = session.process.proc
    assert proc is not None
    answered = asyncio.create_task(session.platform.wait_answered(within))
    exited = asyncio.create_task(proc.wait())
    await asyncio.wait({answered, exited}, return_when=asyncio.FIRST_COMPLETED)
    exited.cancel()
    if not answered.done():
        answered.cancel()
        raise BenchError(f"{session.system} exited during the load:\n{session.process.tail()}")
    try:
        answered.result()
    except TimeoutError:
        missing = session.platform.missing()
        raise BenchError(
            f"{session.system}: {len(missing)} messages unanswered after {within:.0f} s "
            f"(e.g. {missing[:3]}):\n{session.process.tail()}"
        ) from None


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)
