"""Lean fakes for the end-to-end benchmark: a Telegram Bot API and a thinnest.ai agent
(the Slack one is in `benchmarks.fakes_slack`, on the same `BenchPlatform`).

Both are plain aiohttp servers on 127.0.0.1, built to cost as little CPU per request as
possible so that they are not what is measured (tests/fakes/ checks the wire format
strictly instead; these check only what the benchmark needs). They record the time of
every event the benchmark reports on:

- `BenchTelegram`: when each update was offered (queued for getUpdates, `pushed_at`),
  and when each sendMessage arrived (`replies`). ``getUpdates`` long-polls as Telegram
  does (it returns as soon as an update is queued, or after its ``timeout``), and an
  ``offset`` confirms the updates below it. `wait_answered()` waits for the event "every
  expected message got a reply".
- `BenchAgent`: ``POST /v1/agents/{agent_id}/chat`` with ``{message, session_id?}``
  answers ``{response: "echo: <message>", session_id, usage}`` after ``latency``
  seconds; it records when each message arrived and when its answer left.

Message texts are unique across a whole benchmark (`text_of`), so a reply is matched to
its message by its text alone.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

TOKEN = "123456789:AAbenchmarkTokenForTheFakeTelegram_x"
BOT_ID = 123456789
AGENT_ID = "ag_bench"
API_KEY = "ak_bench_key_0123456789"
ECHO = "echo: "

_BOT = {"id": BOT_ID, "is_bot": True, "first_name": "Bench", "username": "bench_bot"}
_GET_ME = json.dumps(
    {
        "ok": True,
        "result": {
            **_BOT,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        },
    }
).encode()
_TRUE = b'{"ok":true,"result":true}'
_CONFLICT = json.dumps(
    {
        "ok": False,
        "error_code": 409,
        "description": "Conflict: terminated by other getUpdates request",
    }
).encode()

# Unique across the whole benchmark (the bridge's store dedupes on bot:chat:message_id,
# and a second start reuses the database).
_update_ids = itertools.count(1)
_message_ids = itertools.count(1)
_session_ids = itertools.count(1)


def text_of(tag: str, conversation: int, seq: int) -> str:
    """A message text unique to (tag, conversation, seq); plain words, no Markdown."""
    return f"bench {tag} c{conversation} m{seq}"


def json_response(body: bytes, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, content_type="application/json")


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
    await site.start()
    port: int = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


@dataclass
class Sent:
    """One reply the fake received (sendMessage, chat.postMessage)."""

    at: float
    chat: object
    text: str


@dataclass
class BenchPlatform:
    """What the loads need of a fake chat platform, whichever it is: `push` offers a
    private message from a user, `expect` / `wait_answered` wait for the replies, and
    the bookkeeping below matches each reply to its message by the echoed text."""

    url: str = ""
    #: message text -> when it was offered to the bridge (queued for delivery).
    pushed_at: dict[str, float] = field(default_factory=dict)
    #: message text -> the chat it was sent in.
    chat_of: dict[str, object] = field(default_factory=dict)
    replies: list[Sent] = field(default_factory=list)
    #: message text -> number of replies that echo it.
    answers: Counter[str] = field(default_factory=Counter)
    #: Replies that echo no message we sent, or went to the wrong chat.
    stray: int = 0
    #: message text -> when its first reply arrived.
    answered_at: dict[str, float] = field(default_factory=dict)
    calls: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._closing = False
        self._expected: set[str] = set()
        self._all_answered = asyncio.Event()
        self._runner: web.AppRunner | None = None

    async def close(self) -> None:
        self._closing = True
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def start(self) -> None:
        raise NotImplementedError

    def push(self, user_id: int, text: str) -> None:
        """Offer a private message from ``user_id`` to the process under test."""
        raise NotImplementedError

    def expect(self, texts: set[str]) -> None:
        """From now on, `wait_answered()` waits for a reply to each of ``texts``."""
        self._expected = set(texts)
        self._all_answered.clear()
        self._check_answered()

    async def wait_answered(self, within: float) -> None:
        """Wait until every expected message has a reply (`TimeoutError` after ``within``)."""
        async with asyncio.timeout(within):
            await self._all_answered.wait()

    def missing(self) -> list[str]:
        return sorted(t for t in self._expected if not self.answers[t])

    def doubled(self) -> list[str]:
        return sorted(t for t in self._expected if self.answers[t] > 1)

    def _check_answered(self) -> None:
        if all(self.answers[t] for t in self._expected):
            self._all_answered.set()

    def _offered(self, text: str, chat: object) -> None:
        self.pushed_at[text] = time.monotonic()
        self.chat_of[text] = chat

    def _replied(self, chat: object, text: str) -> None:
        """A reply arrived: count it for the message it echoes, if it went to its chat."""
        now = time.monotonic()
        self.replies.append(Sent(now, chat, text))
        message = text.removeprefix(ECHO) if text.startswith(ECHO) else None
        if message is not None and self.chat_of.get(message) == chat:
            self.answers[message] += 1
            self.answered_at.setdefault(message, now)
            if message in self._expected and not self._all_answered.is_set():
                self._check_answered()
        else:
            self.stray += 1


@dataclass
class BenchTelegram(BenchPlatform):
    token: str = TOKEN
    #: update_id -> JSON bytes, oldest first; confirmed ones are dropped.
    queue: deque[tuple[int, bytes]] = field(default_factory=deque)

    def __post_init__(self) -> None:
        super().__post_init__()
        self._wake = asyncio.Event()
        self._generation = 0

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/bot{token}/{method}", self._handle)
        app.router.add_get("/bot{token}/{method}", self._handle)
        self._runner, self.url = await serve(app)

    async def close(self) -> None:
        self._closing = True
        self._wake.set()
        await super().close()

    @property
    def api_url(self) -> str:
        """The value for ``telegram.api_url``."""
        return f"{self.url}/bot"

    # --- load ------------------------------------------------------------------------

    def push(self, user_id: int, text: str) -> None:
        """Queue a private message from ``user_id`` (its chat id too) for getUpdates."""
        update_id = next(_update_ids)
        update = {
            "update_id": update_id,
            "message": {
                "message_id": next(_message_ids),
                "date": int(time.time()),
                "chat": {"id": user_id, "type": "private", "first_name": "U"},
                "from": {"id": user_id, "is_bot": False, "first_name": "U"},
                "text": text,
            },
        }
        self.queue.append((update_id, json.dumps(update, separators=(",", ":")).encode()))
        self._offered(text, user_id)
        self._wake.set()

    # --- the API ---------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return json_response(b'{"ok":false,"error_code":401,"description":"Unauthorized"}', 401)
        method = request.match_info["method"]
        self.calls[method] += 1
        if method == "getUpdates":
            return await self._get_updates(await params_of(request))
        if method == "sendMessage":
            return self._send_message(await params_of(request))
        if method == "getMe":
            return json_response(_GET_ME)
        # sendChatAction, setMyCommands, deleteWebhook, deleteMyCommands, ...
        await request.read()
        return json_response(_TRUE)

    async def _get_updates(self, params: dict[str, Any]) -> web.Response:
        # One consumer per token, as on Telegram: a newer call ends a pending older one.
        self._generation += 1
        mine = self._generation
        self._wake.set()
        self._wake = asyncio.Event()
        offset = int(params.get("offset") or 0)
        while self.queue and self.queue[0][0] < offset:
            self.queue.popleft()
        timeout = float(params.get("timeout") or 0)
        if not self.queue and timeout > 0 and not self._closing:
            wake = self._wake
            try:
                async with asyncio.timeout(timeout):
                    await wake.wait()
            except TimeoutError:
                pass
            if mine != self._generation:
                return json_response(_CONFLICT, 409)
        limit = int(params.get("limit") or 100)
        batch = [body for _, body in itertools.islice(self.queue, limit)]
        return json_response(b'{"ok":true,"result":[' + b",".join(batch) + b"]}")

    def _send_message(self, params: dict[str, Any]) -> web.Response:
        chat_id = int(params.get("chat_id") or 0)
        text = str(params.get("text") or "")
        self._replied(chat_id, text)
        body = {
            "ok": True,
            "result": {
                "message_id": next(_message_ids),
                "date": int(time.time()),
                "chat": {"id": chat_id, "type": "private"},
                "from": _BOT,
                "text": text,
            },
        }
        return json_response(json.dumps(body).encode())


async def params_of(request: web.Request) -> dict[str, Any]:
    """JSON (the relay) or form-encoded (python-telegram-bot) parameters."""
    if not request.can_read_body:
        return dict(request.query)
    if request.content_type == "application/json":
        data = await request.json()
        return dict(data) if isinstance(data, dict) else {}
    return {k: v for k, v in (await request.post()).items() if isinstance(v, str)}


@dataclass
class BenchAgent:
    latency: float = 0.0
    url: str = ""
    #: message text -> when its chat call arrived / when its answer left.
    arrived_at: dict[str, float] = field(default_factory=dict)
    answered_at: dict[str, float] = field(default_factory=dict)
    calls: int = 0

    def __post_init__(self) -> None:
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/agents/{agent_id}/chat", self._chat)
        app.router.add_get("/v1/agents/{agent_id}", self._probe)
        self._runner, self.url = await serve(app)

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _probe(self, request: web.Request) -> web.Response:
        return json_response(b'{"id":"' + AGENT_ID.encode() + b'"}')

    async def _chat(self, request: web.Request) -> web.Response:
        arrived = time.monotonic()
        body = await request.json()
        message = str(body.get("message", ""))
        self.calls += 1
        self.arrived_at.setdefault(message, arrived)
        session = body.get("session_id") or f"sess-{next(_session_ids)}"
        if self.latency > 0:
            await asyncio.sleep(self.latency)  # the agent "thinking"
        words = len(message.split())
        answer = {
            "response": ECHO + message,
            "session_id": session,
            "usage": {"input_tokens": words, "output_tokens": words + 1, "total_tokens": 2 * words},
        }
        self.answered_at.setdefault(message, time.monotonic())
        return json_response(json.dumps(answer).encode())
