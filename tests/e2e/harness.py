"""A black-box harness for several `agent-bridge run` processes on one database.

Nothing here knows the bridge's internals: the instances are real subprocesses
(``python -m bridge run --config``), driven only through their HTTP endpoints and
observed only through the fakes they talk to.

- `Forwarder`: a round-robin HTTP balancer in front of the instances' webhook ports.
  Each POST goes to the next instance in turn, headers kept (the Telegram secret, the
  Slack signature); a connection refused moves on to the next instance, as a balancer
  does; an instance dying mid-request gets the sender a 502.
- `AgentProxy`: one per instance, between that instance and the shared
  `FakeAgentServer`. It adds a small latency (the fake answers at once) and records which
  instance made each agent call, so that a test can tell who did the work.
- `Instance` / `Cluster`: bridge processes with their own notify socket (READY=1 is the
  readiness signal), SIGKILL and restart with the same config.
- `LoadGenerator`: plays the platform: POSTs one request per message at a steady pace
  with a few in flight, retries on a non-2xx answer, a connection error or a timeout (as
  Telegram and Slack do), and never sends a conversation's next message before the
  previous one was accepted, so that "the order the messages were sent" is well defined.
- `TelegramPlayer` / `SlackPlayer`: the requests Telegram's webhook and Slack's Events
  API would send for a `Message`.
- `check()` turns what was sent and what came back into `Figures`: doubled, lost,
  conversations out of order, conversations with more than one agent session.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

import aiohttp
from aiohttp import web

from tests.daemon.conftest import REPO, BridgeProcess, NotifyListener, subprocess_env
from tests.fakes.loopback import serve_loopback
from tests.fakes.slack import FakeSlack, signed_headers

#: What the fake agent puts before the message it echoes.
ECHO_PREFIX = "echo: "

# --- messages ------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    """One user message: ``seq`` orders it within its conversation; ``text`` is unique."""

    conversation: int
    seq: int

    @property
    def text(self) -> str:
        return f"u{self.conversation} m{self.seq}"


def conversations(count: int, per_conversation: int) -> list[Message]:
    """``count`` conversations of ``per_conversation`` messages, interleaved round-robin
    (u0 m0, u1 m0, ..., u0 m1, ...), the way many people write at once."""
    return [Message(c, s) for s in range(per_conversation) for c in range(count)]


#: Builds the HTTP request for a message's ``attempt``-th delivery: (body, headers).
RequestBuilder = Callable[[Message, int], tuple[bytes, dict[str, str]]]


class TelegramPlayer:
    """Telegram's webhook requests: one update per message, the same ``update_id`` on
    every retry, the secret in ``X-Telegram-Bot-Api-Secret-Token``."""

    USER_BASE = 200_000

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self._update_ids: dict[Message, int] = {}
        self._ids = itertools.count(1)

    def chat_of(self, message: Message) -> int:
        return self.USER_BASE + message.conversation

    def conversation_of_chat(self, chat: object) -> int | None:
        return chat - self.USER_BASE if isinstance(chat, int) else None

    def request(self, message: Message, attempt: int) -> tuple[bytes, dict[str, str]]:
        update_id = self._update_ids.setdefault(message, next(self._ids))
        user_id = self.chat_of(message)
        user = {"id": user_id, "is_bot": False, "first_name": f"User{message.conversation}"}
        update = {
            "update_id": update_id,
            "message": {
                "message_id": 10_000 + message.seq,  # per chat, as Telegram numbers them
                "date": int(time.time()),
                "chat": {"id": user_id, "type": "private", "first_name": user["first_name"]},
                "from": user,
                "text": message.text,
            },
        }
        headers = {
            "Content-Type": "application/json",
            "X-Telegram-Bot-Api-Secret-Token": self.secret,
        }
        return json.dumps(update).encode(), headers


class SlackPlayer:
    """Slack's Events API requests: a ``message.im`` event per message in its own DM
    channel, a unique ``event_id`` and ``ts`` kept across retries, signed at each
    attempt, ``X-Slack-Retry-Num`` on redeliveries."""

    def __init__(self, slack: FakeSlack, signing_secret: str) -> None:
        self.slack = slack
        self.signing_secret = signing_secret
        self._events: dict[Message, tuple[str, str]] = {}
        self._ids = itertools.count(1)

    def chat_of(self, message: Message) -> str:
        return f"D{message.conversation:04d}"

    def conversation_of_chat(self, chat: object) -> int | None:
        if isinstance(chat, str) and chat.startswith("D") and chat[1:].isdigit():
            return int(chat[1:])
        return None

    def request(self, message: Message, attempt: int) -> tuple[bytes, dict[str, str]]:
        event_id, ts = self._events.setdefault(
            message, (f"EvE2E{next(self._ids):06d}", self.slack.next_user_ts())
        )
        event = self.slack.message(
            message.text,
            channel=self.chat_of(message),
            user=f"U{message.conversation:04d}",
            ts=ts,
            channel_type="im",
        )
        body = json.dumps(self.slack.event_payload(event, event_id=event_id)).encode()
        headers = signed_headers(body, self.signing_secret)
        if attempt > 0:
            headers["X-Slack-Retry-Num"] = str(attempt)
            headers["X-Slack-Retry-Reason"] = "http_error"
        return body, headers


# --- waiting ---------------------------------------------------------------------------


async def wait_until(
    predicate: Callable[[], bool], *, within: float, interval: float = 0.1
) -> bool:
    """Ask ``predicate()`` every ``interval`` seconds until it holds (True) or ``within``
    seconds have passed (False). The state lives in other processes and in fakes, so it
    is polled; the caller decides what a timeout means."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(interval)
    return True


async def wait_quiet(
    count: Callable[[], int], *, quiet: float, within: float, interval: float = 0.1
) -> bool:
    """Wait until ``count()`` has not changed for ``quiet`` seconds (True), at most
    ``within`` seconds (False). A late duplicate can only be seen by watching a while."""
    deadline = time.monotonic() + within
    last, since = count(), time.monotonic()
    while time.monotonic() < deadline:
        await asyncio.sleep(interval)
        now = count()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return True
    return False


# --- servers -----------------------------------------------------------------------------

_HOP_BY_HOP = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade"}
)


class _Server:
    """An aiohttp app on 127.0.0.1 with a client session, as an async context manager."""

    def __init__(self) -> None:
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    def _app(self) -> web.Application:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, force_close=True)
        )
        try:
            self._runner, port = await serve_loopback(self._app())
        except BaseException:
            await self._session.close()
            raise
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "not started"
        return self._session


def _forwardable(headers: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() not in _HOP_BY_HOP}


class Forwarder(_Server):
    """Round-robin balancer: each POST to the next target, or on a refused connection
    to the one after it; the target's status and body go back to the sender."""

    def __init__(self, targets: Sequence[str], *, timeout: float = 30.0) -> None:
        super().__init__()
        self.targets = list(targets)
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        #: (target, status) -> count; status 0 for "connection refused".
        self.results: Counter[tuple[str, int]] = Counter()
        self._turn = itertools.count()

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = _forwardable(request.headers)
        first = next(self._turn)
        for i in range(len(self.targets)):
            target = self.targets[(first + i) % len(self.targets)]
            try:
                async with self.session.post(
                    target + request.path_qs, data=body, headers=headers, timeout=self.timeout
                ) as resp:
                    payload = await resp.read()
                    self.results[(target, resp.status)] += 1
                    kind = resp.headers.get("Content-Type")
                    out = {"Content-Type": kind} if kind else {}
                    return web.Response(status=resp.status, body=payload, headers=out)
            except aiohttp.ClientConnectorError:
                self.results[(target, 0)] += 1  # nothing listens there: try the next
            except (aiohttp.ClientError, TimeoutError):
                # The request may have been handled before the instance died: a balancer
                # cannot know, so it answers 502 and the sender delivers again.
                self.results[(target, 502)] += 1
                return web.Response(status=502)
        return web.Response(status=502)


@dataclass(frozen=True)
class AgentCall:
    """One chat call an instance made, as its `AgentProxy` saw it."""

    instance: str
    message: str
    session_id: str | None
    at: float


class AgentProxy(_Server):
    """Stands between one instance and the shared agent fake: adds ``latency`` seconds
    to every chat call and records it under the instance's name."""

    def __init__(self, upstream: str, instance: str, *, latency: float = 0.03) -> None:
        super().__init__()
        self.upstream = upstream
        self.instance = instance
        self.latency = latency
        self.calls: list[AgentCall] = []

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.Response:
        try:
            return await self._forward(request)
        except (aiohttp.ClientError, ConnectionError, TimeoutError):
            # The instance died mid-call, or the agent fake is closing: nobody listens.
            return web.Response(status=502)

    async def _forward(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.method == "POST":
            with contextlib.suppress(ValueError):
                sent = json.loads(body)
                if isinstance(sent, dict) and isinstance(sent.get("message"), str):
                    session = sent.get("session_id") or sent.get("threadId")
                    self.calls.append(
                        AgentCall(self.instance, sent["message"], session, time.monotonic())
                    )
            await asyncio.sleep(self.latency)
        async with self.session.request(
            request.method,
            self.upstream + request.path_qs,
            data=body or None,
            headers=_forwardable(request.headers),
            timeout=aiohttp.ClientTimeout(total=120),
        ) as resp:
            payload = await resp.read()
            return web.Response(
                status=resp.status, body=payload, headers=_forwardable(resp.headers)
            )


# --- bridge processes ------------------------------------------------------------------


#: The source tree the instances run from: this checkout, or another one (e.g. an
#: exported older commit, to measure a baseline with these same tests).
SOURCE = Path(os.environ.get("AGENT_BRIDGE_E2E_SOURCE") or REPO).resolve()


def bridge_env(**extra: str) -> dict[str, str]:
    """The environment of a bridge subprocess: ours, without systemd's variables."""
    return subprocess_env(**{"PYTHONPATH": str(SOURCE), **extra})


TomlValue = str | int | float | bool | list[str] | list[int]


def toml_text(sections: Mapping[str, Mapping[str, TomlValue]]) -> str:
    """A TOML document from ``{"section": {"key": value}}`` (flat values only)."""

    def value(v: TomlValue) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return json.dumps(v)  # a JSON string is a TOML basic string
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return repr(v)

    out = []
    for name, keys in sections.items():
        out.append(f"[{name}]")
        out.extend(f"{k} = {value(v)}" for k, v in keys.items())
        out.append("")
    return "\n".join(out)


class _Process(BridgeProcess):
    """`BridgeProcess`, run from `SOURCE` (``python -m`` imports from its cwd first)."""

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bridge",
            "run",
            "--config",
            str(self.config),
            cwd=str(SOURCE),
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        self._reader = asyncio.get_running_loop().create_task(self._read())


class Instance:
    """One bridge instance: its config, and every process run with it (a restart is a
    new process with the same config)."""

    def __init__(self, name: str, config: Path, env: Mapping[str, str]) -> None:
        self.name = name
        self.config = config
        self.env = dict(env)
        self.processes: list[BridgeProcess] = []
        # AF_UNIX paths are limited to ~107 bytes; pytest's tmp_path can be longer.
        self.notify = NotifyListener(f"/tmp/ab-e2e-{os.getpid()}-{time.monotonic_ns()}.sock")

    async def start(self, *, within: float = 30.0) -> None:
        """Start a process and wait for its READY=1."""
        if not self.processes:
            self.notify.start()
        process = _Process(self.config, {**self.env, "NOTIFY_SOCKET": self.notify.path})
        self.processes.append(process)
        ready_before = len(self.notify.with_key("READY", "1"))
        await process.start()
        try:
            await self.notify.wait_for("READY", "1", count=ready_before + 1, within=within)
        except TimeoutError:
            raise AssertionError(f"{self.name}: no READY=1; stderr:\n{process.stderr}") from None

    @property
    def alive(self) -> bool:
        return (
            bool(self.processes)
            and self.processes[-1].proc is not None
            and (self.processes[-1].proc.returncode is None)
        )

    async def kill(self) -> None:
        """SIGKILL the running process and wait for it to be gone."""
        process = self.processes[-1]
        process.signal(signal.SIGKILL)
        code = await process.wait()
        assert code == -signal.SIGKILL, f"{self.name} exited {code} before the kill"

    @property
    def stderr(self) -> str:
        return "\n".join(
            f"--- {self.name} run {i + 1}\n{p.stderr}" for i, p in enumerate(self.processes)
        )

    async def close(self) -> None:
        for process in self.processes:
            await process.kill()
        if self.processes:
            await self.notify.close()


class Cluster:
    """Instances started together (migrations are serialized by the store), all killed
    at exit."""

    def __init__(self, instances: Iterable[Instance]) -> None:
        self.instances = list(instances)

    def __getitem__(self, index: int) -> Instance:
        return self.instances[index]

    async def start(self, *indexes: int) -> None:
        chosen = indexes or tuple(range(len(self.instances)))
        await asyncio.gather(*(self.instances[i].start() for i in chosen))

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for instance in self.instances:
            await instance.close()

    @property
    def stderr(self) -> str:
        return "\n".join(i.stderr for i in self.instances)


async def kill_and_restart(
    instance: Instance, *, when: Awaitable[bool], down_for: float = 1.0
) -> tuple[float, float]:
    """Once ``when`` is true: SIGKILL ``instance``, start it again ``down_for`` seconds
    later with the same config. Returns (killed at, ready again at), monotonic."""
    assert await when, f"{instance.name}: the moment to kill it never came"
    await instance.kill()
    killed = time.monotonic()
    await asyncio.sleep(down_for)  # the outage the scenario asks for, not a wait for state
    await instance.start()
    return killed, time.monotonic()


# --- load --------------------------------------------------------------------------------


@dataclass
class Delivery:
    """What the load generator saw of one message."""

    message: Message
    attempts: int = 0
    accepted_at: float | None = None
    failures: Counter[str] = field(default_factory=Counter)


class LoadGenerator:
    """POSTs one request per message to ``url`` at ``rate`` messages a second with at
    most ``in_flight`` outstanding; retries until a 2xx answer, at most until ``give_up``
    seconds after the last message was due."""

    def __init__(
        self,
        url: str,
        build: RequestBuilder,
        *,
        rate: float,
        in_flight: int,
        timeout: float,
        retry_delay: float = 0.25,
        give_up: float = 60.0,
    ) -> None:
        self.url = url
        self.build = build
        self.rate = rate
        self.in_flight = in_flight
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.retry_delay = retry_delay
        self.give_up = give_up
        self.deliveries: dict[Message, Delivery] = {}
        self.accepted = 0
        self.started_at = 0.0
        self.finished_at = 0.0
        self._deadline = 0.0
        self._changed = asyncio.Condition()

    async def wait_accepted(self, count: int) -> bool:
        """Wait until ``count`` messages were accepted (True), or the run ended (False)."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.accepted >= count or self.finished_at > 0)
        return self.accepted >= count

    @property
    def retries(self) -> int:
        return sum(d.attempts - 1 for d in self.deliveries.values() if d.attempts)

    @property
    def not_accepted(self) -> list[Message]:
        return [m for m, d in self.deliveries.items() if d.accepted_at is None]

    def failures(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for d in self.deliveries.values():
            total.update(d.failures)
        return total

    async def run(self, messages: Sequence[Message]) -> None:
        slots = asyncio.Semaphore(self.in_flight)
        previous: dict[int, asyncio.Event] = {}
        tasks: list[asyncio.Task[None]] = []
        self.started_at = time.monotonic()
        self._deadline = self.started_at + len(messages) / self.rate + self.give_up
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, force_close=True)
        ) as session:
            for i, message in enumerate(messages):
                due = self.started_at + i / self.rate
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                await slots.acquire()
                done = asyncio.Event()
                before = previous.get(message.conversation)
                previous[message.conversation] = done
                self.deliveries[message] = Delivery(message)
                task = asyncio.create_task(self._deliver(session, message, before, done))
                task.add_done_callback(lambda _: slots.release())
                tasks.append(task)
            try:
                await asyncio.gather(*tasks)
            finally:
                async with self._changed:
                    self.finished_at = time.monotonic()
                    self._changed.notify_all()

    async def _deliver(
        self,
        session: aiohttp.ClientSession,
        message: Message,
        before: asyncio.Event | None,
        done: asyncio.Event,
    ) -> None:
        delivery = self.deliveries[message]
        try:
            if before is not None:
                await before.wait()  # a conversation's messages are sent one after another
            while time.monotonic() < self._deadline:
                body, headers = self.build(message, delivery.attempts)
                delivery.attempts += 1
                try:
                    async with session.post(
                        self.url, data=body, headers=headers, timeout=self.timeout
                    ) as resp:
                        await resp.read()
                        if 200 <= resp.status < 300:
                            delivery.accepted_at = time.monotonic()
                            async with self._changed:
                                self.accepted += 1
                                self._changed.notify_all()
                            return
                        delivery.failures[f"HTTP {resp.status}"] += 1
                except (aiohttp.ClientError, TimeoutError) as exc:
                    delivery.failures[type(exc).__name__] += 1
                await asyncio.sleep(self.retry_delay)
        finally:
            done.set()


# --- checking ----------------------------------------------------------------------------


def message_of_reply(text: object) -> str | None:
    """The message text a reply answers (the fake agent echoes it), or None."""
    if isinstance(text, str) and text.startswith(ECHO_PREFIX):
        return text.removeprefix(ECHO_PREFIX).strip()
    return None


@dataclass(frozen=True)
class Figures:
    """What a run came to."""

    label: str
    messages: int
    #: Messages answered more than once.
    doubled: int
    #: Messages never answered.
    lost: int
    #: Conversations whose replies came in another order than their messages.
    out_of_order: int
    #: Conversations whose messages went to more than one agent session.
    multi_session: int
    #: Replies beyond the first for a message.
    extra_replies: int
    #: Replies that answer no message we sent, or went to another chat.
    stray_replies: int
    #: Messages the agent received more than once (each may be billed).
    agent_repeats: int
    #: Messages the load generator never got a 2xx for.
    not_accepted: int
    #: Deliveries the load generator had to retry.
    retries: int
    #: From the first POST to the last reply (or the deadline), seconds.
    wall: float
    #: Agent calls per instance.
    agent_calls: Mapping[str, int] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    #: Doubles the README allows: on Telegram, a reply posted in the instant before
    #: a SIGKILL (Telegram has no way to read a bot's posts back); one per kill.
    tolerated_doubles: int = 0

    @property
    def ok(self) -> bool:
        return not (
            self.doubled > self.tolerated_doubles
            or self.lost
            or self.out_of_order
            or self.multi_session
            or self.stray_replies
            or self.not_accepted
        )

    def line(self) -> str:
        calls = ", ".join(f"{k}={v}" for k, v in sorted(self.agent_calls.items()))
        text = (
            f"E2E {self.label}: messages={self.messages} doubled={self.doubled} "
            f"lost={self.lost} out_of_order={self.out_of_order} "
            f"multi_session={self.multi_session} extra_replies={self.extra_replies} "
            f"stray={self.stray_replies} agent_repeats={self.agent_repeats} "
            f"not_accepted={self.not_accepted} retries={self.retries} "
            f"wall={self.wall:.1f}s agent_calls[{calls}]"
        )
        return "; ".join([text, *self.notes])


def check(
    label: str,
    messages: Sequence[Message],
    replies: Sequence[tuple[object, object]],
    *,
    conversation_of_chat: Callable[[object], int | None],
    sessions: Mapping[str, Sequence[str]],
    agent_calls: Sequence[AgentCall],
    load: LoadGenerator | None = None,
    wall: float = 0.0,
    notes: Sequence[str] = (),
) -> Figures:
    """Figures for ``messages`` given ``replies`` as (chat, text) in the order the
    platform received them and the agent's ``sessions`` (session id -> messages)."""
    by_text = {m.text: m for m in messages}
    answers: Counter[Message] = Counter()
    order: dict[int, list[int]] = defaultdict(list)
    stray = 0
    for chat, text in replies:
        message = by_text.get(message_of_reply(text) or "")
        if message is None or conversation_of_chat(chat) != message.conversation:
            stray += 1
            continue
        if not answers[message]:
            order[message.conversation].append(message.seq)
        answers[message] += 1

    sessions_of: dict[int, set[str]] = defaultdict(set)
    for session, said in sessions.items():
        for text in said:
            if text in by_text:
                sessions_of[by_text[text].conversation].add(session)

    seen_by_agent = Counter(c.message for c in agent_calls if c.message in by_text)
    return Figures(
        label=label,
        messages=len(messages),
        doubled=sum(1 for n in answers.values() if n > 1),
        lost=sum(1 for m in messages if not answers[m]),
        out_of_order=sum(1 for seqs in order.values() if seqs != sorted(seqs)),
        multi_session=sum(1 for s in sessions_of.values() if len(s) > 1),
        extra_replies=sum(n - 1 for n in answers.values() if n > 1),
        stray_replies=stray,
        agent_repeats=sum(1 for n in seen_by_agent.values() if n > 1),
        not_accepted=len(load.not_accepted) if load is not None else 0,
        retries=load.retries if load is not None else 0,
        wall=wall,
        agent_calls=dict(Counter(c.instance for c in agent_calls)),
        notes=tuple(notes),
    )


def answered_all(messages: Iterable[Message], replies: Iterable[tuple[object, object]]) -> bool:
    wanted = {m.text for m in messages}
    got = {message_of_reply(text) for _, text in replies}
    return wanted <= got
