"""`FakeAgentServer`: both agent APIs (thinnest.ai and Peaka) on one real HTTP server.

It listens on 127.0.0.1 on a random free port and speaks the real wire format, so
tests drive the real backends (and the real shared httpx client) through their
configurable base URL. Nothing is mocked below the socket.

Usage::

    async with FakeAgentServer() as agents:
        config = thinnest_config(agents.url)          # or peaka_config(agents.url)
        ...                                           # make calls through a backend
        agents.calls[-1].json                         # {"message": "hi", "session_id": "sess-1"}

Endpoints (``agents.url`` is the base URL of both APIs):

- thinnest: ``POST /v1/agents/{agent_id}/chat`` and the probe ``GET /v1/agents/{agent_id}``.
  Default answer: ``{"response": "echo: <message>", "session_id": <the one sent, or a new
  "sess-N">, "usage": {...}}``. Usage counts words: ``input_tokens`` = words of the message,
  ``output_tokens`` = words of the reply, ``total_tokens`` = their sum.
- peaka: ``POST /ai-agent/{project_id}/chat`` and the probe ``GET /ai-agent/{project_id}/threads``.
  Default answer: a LangGraph state ``{"threadId": <as sent, or a new "thread-N">, "messages":
  [...every turn of the thread, LangChain-serialized...]}`` whose last AI message is
  ``"echo: <message>"``.

Authentication: every request needs ``Authorization: Bearer <token>`` (any non-empty token), or
exactly ``Bearer <api_key>`` when the server was made with ``FakeAgentServer(api_key=...)``;
otherwise 401 ``{"detail": "Invalid API key"}``.

Scripting and control:

- ``agents.script(FakeResponse(status=402, json={...}), ...)``: the next chat calls (POST)
  get these responses, first in, first out; after that, the default answer again. A
  `FakeResponse` may give ``json`` or a raw ``body`` (for malformed replies), ``headers``
  (``Retry-After``...), and a ``delay`` in seconds before answering (a hanging agent: the
  delay ends early when the server closes, so a test never waits for it).
  ``agents.script_probe(...)`` does the same for the probe endpoints (GET).
- ``agents.expire("sess-1")``: from now on, a chat call with that session id (or threadId)
  gets 404 ``{"detail": "Session not found"}``, as an expired thinnest session does.
- ``agents.hold()`` / ``agents.release()``: hold every chat answer until released (a slow
  agent). ``agents.arrived`` is an `asyncio.Event` set whenever a chat call arrives
  (clear it yourself to wait for the next one); ``await agents.wait_for_calls(n)`` waits
  until ``n`` chat calls have arrived in total.
- ``agents.calls``: every request received, as `RecordedCall` (probes too, ``kind="probe"``);
  ``agents.chat_calls`` only the chat calls. ``agents.sessions`` maps each session id or
  threadId to the user messages it received, in order.

Config helpers: `thinnest_config` / `peaka_config` build the typed agent config pointed at the
fake, and `thinnest_config_toml` / `peaka_config_toml` the ``[agents.NAME]`` TOML section.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json as jsonlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Self

from aiohttp import web

from bridge.config import PeakaAgentConfig, ThinnestAgentConfig
from tests.fakes.loopback import serve_loopback

FAKE_API_KEY = "ak_fake_test_key_1234567890"
FAKE_AGENT_ID = "ag_fake"
FAKE_PROJECT_ID = "prj_fake"


@dataclass(frozen=True)
class FakeResponse:
    """One scripted answer. ``json`` is sent as JSON; ``body`` (str or bytes) is sent raw
    instead, e.g. ``FakeResponse(body="<html>oops")`` for an unreadable reply."""

    status: int = 200
    json: Any = None
    body: str | bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass(frozen=True)
class RecordedCall:
    """One request the fake received."""

    api: Literal["thinnest", "peaka"]
    kind: Literal["chat", "probe"]
    method: str
    path: str
    headers: Mapping[str, str]
    #: The parsed JSON body; None for a GET or an unparsable body.
    json: Any


def thinnest_config(
    url: str, *, agent_id: str = FAKE_AGENT_ID, api_key: str = FAKE_API_KEY, **overrides: Any
) -> ThinnestAgentConfig:
    """A thinnest agent config pointed at the fake (``timeout=5`` and ``max_retry_wait=2``
    unless overridden, so error tests stay fast)."""
    values: dict[str, Any] = {
        "backend": "thinnest",
        "agent_id": agent_id,
        "api_key": api_key,
        "base_url": url,
        "timeout": 5.0,
        "max_retry_wait": 2.0,
    }
    values.update(overrides)
    return ThinnestAgentConfig.model_validate(values, strict=False)


def peaka_config(
    url: str, *, project_id: str = FAKE_PROJECT_ID, api_key: str = FAKE_API_KEY, **overrides: Any
) -> PeakaAgentConfig:
    """A peaka agent config pointed at the fake (``timeout=5``, ``max_retry_wait=2``)."""
    values: dict[str, Any] = {
        "backend": "peaka",
        "project_id": project_id,
        "api_key": api_key,
        "base_url": url,
        "timeout": 5.0,
        "max_retry_wait": 2.0,
    }
    values.update(overrides)
    return PeakaAgentConfig.model_validate(values, strict=False)


def thinnest_config_toml(url: str, name: str = "default", *, api_key: str = FAKE_API_KEY) -> str:
    """The ``[agents.NAME]`` TOML section of a thinnest agent pointed at the fake."""
    return (
        f"[agents.{name}]\n"
        'backend = "thinnest"\n'
        f'agent_id = "{FAKE_AGENT_ID}"\n'
        f'api_key = "{api_key}"\n'
        f'base_url = "{url}"\n'
        "timeout = 5\n"
        "max_retry_wait = 2\n"
    )


def peaka_config_toml(url: str, name: str = "default", *, api_key: str = FAKE_API_KEY) -> str:
    """The ``[agents.NAME]`` TOML section of a peaka agent pointed at the fake."""
    return (
        f"[agents.{name}]\n"
        'backend = "peaka"\n'
        f'project_id = "{FAKE_PROJECT_ID}"\n'
        f'api_key = "{api_key}"\n'
        f'base_url = "{url}"\n'
        "timeout = 5\n"
        "max_retry_wait = 2\n"
    )


def _lc_message(kind: Literal["human", "ai"], content: str) -> dict[str, Any]:
    # How LangChain serializes a message (langchain_core.load.dumpd), as Peaka's state holds it.
    cls = "HumanMessage" if kind == "human" else "AIMessage"
    return {
        "lc": 1,
        "type": "constructor",
        "id": ["langchain_core", "messages", cls],
        "kwargs": {"content": content, "type": kind, "additional_kwargs": {}},
    }


class FakeAgentServer:
    """A fake of both agent APIs on 127.0.0.1 (see the module docstring)."""

    def __init__(self, *, api_key: str | None = None) -> None:
        self.api_key = api_key
        self.calls: list[RecordedCall] = []
        self.sessions: dict[str, list[str]] = {}
        self.expired: set[str] = set()
        self.arrived = asyncio.Event()
        self._chat_script: list[FakeResponse] = []
        self._probe_script: list[FakeResponse] = []
        self._released = asyncio.Event()
        self._released.set()
        self._closing = asyncio.Event()
        self._changed = asyncio.Condition()
        self._counter = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.url = ""

    # --- lifecycle ------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/agents/{agent_id}/chat", self._thinnest_chat)
        app.router.add_get("/v1/agents/{agent_id}", self._thinnest_probe)
        app.router.add_post("/ai-agent/{project_id}/chat", self._peaka_chat)
        app.router.add_get("/ai-agent/{project_id}/threads", self._peaka_probe)
        self._runner, port = await serve_loopback(app)
        self.url = f"http://127.0.0.1:{port}"

    async def close(self) -> None:
        # Wake every delayed or held handler so that shutdown does not wait for them.
        self._closing.set()
        self._released.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- control --------------------------------------------------------------------

    def script(self, *responses: FakeResponse) -> None:
        """Queue answers for the next chat calls (FIFO)."""
        self._chat_script.extend(responses)

    def script_probe(self, *responses: FakeResponse) -> None:
        """Queue answers for the next probe calls (FIFO)."""
        self._probe_script.extend(responses)

    def expire(self, session_id: str) -> None:
        """Make this session id / threadId unknown to the agent from now on."""
        self.expired.add(session_id)

    def hold(self) -> None:
        """Hold every chat answer until `release()`."""
        self._released.clear()

    def release(self) -> None:
        self._released.set()

    @property
    def chat_calls(self) -> list[RecordedCall]:
        return [c for c in self.calls if c.kind == "chat"]

    async def wait_for_calls(self, count: int, *, within: float = 5.0) -> None:
        """Wait until at least ``count`` chat calls have arrived in total (at most ``within``
        seconds; then `TimeoutError`)."""
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(lambda: len(self.chat_calls) >= count)

    # --- handlers -------------------------------------------------------------------

    async def _record(
        self, request: web.Request, api: Literal["thinnest", "peaka"], kind: str
    ) -> RecordedCall:
        body: Any = None
        if request.can_read_body:
            raw = await request.read()
            try:
                body = jsonlib.loads(raw)
            except ValueError:
                body = None
        call = RecordedCall(
            api=api,
            kind="chat" if kind == "chat" else "probe",
            method=request.method,
            path=request.path,
            headers=dict(request.headers),
            json=body,
        )
        self.calls.append(call)
        async with self._changed:
            self._changed.notify_all()
        if kind == "chat":
            self.arrived.set()
        return call

    def _authorized(self, request: web.Request) -> bool:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Bearer" or not token:
            return False
        return self.api_key is None or token == self.api_key

    async def _pause(self, seconds: float) -> None:
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), seconds)

    async def _scripted(self, script: list[FakeResponse]) -> web.StreamResponse | None:
        if not script:
            return None
        response = script.pop(0)
        await self._pause(response.delay)
        if response.body is not None:
            body = response.body.encode() if isinstance(response.body, str) else response.body
            return web.Response(
                status=response.status,
                body=body,
                headers={"Content-Type": "application/json", **response.headers},
            )
        return web.json_response(
            response.json, status=response.status, headers=dict(response.headers)
        )

    async def _before_chat(self, request: web.Request, api: Literal["thinnest", "peaka"]) -> Any:
        call = await self._record(request, api, "chat")
        await self._released.wait()
        return call.json

    async def _thinnest_chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._before_chat(request, "thinnest")
        scripted = await self._scripted(self._chat_script)
        if scripted is not None:
            return scripted
        if not self._authorized(request):
            return web.json_response({"detail": "Invalid API key"}, status=401)
        if not isinstance(body, dict) or not isinstance(body.get("message"), str):
            return web.json_response({"detail": "message is required"}, status=422)
        session_id = body.get("session_id")
        if session_id in self.expired:
            return web.json_response({"detail": "Session not found"}, status=404)
        if not session_id:
            session_id = f"sess-{next(self._counter)}"
        message: str = body["message"]
        self.sessions.setdefault(session_id, []).append(message)
        reply = f"echo: {message}"
        words_in, words_out = len(message.split()), len(reply.split())
        return web.json_response(
            {
                "response": reply,
                "session_id": session_id,
                "usage": {
                    "input_tokens": words_in,
                    "output_tokens": words_out,
                    "total_tokens": words_in + words_out,
                },
            },
            headers={"X-RateLimit-Limit": "60", "X-RateLimit-Remaining": "59"},
        )

    async def _peaka_chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._before_chat(request, "peaka")
        scripted = await self._scripted(self._chat_script)
        if scripted is not None:
            return scripted
        if not self._authorized(request):
            return web.json_response({"message": "Unauthorized"}, status=401)
        if not isinstance(body, dict) or not isinstance(body.get("message"), str):
            return web.json_response({"message": "message is required"}, status=400)
        thread_id = body.get("threadId")
        if thread_id in self.expired:
            return web.json_response({"detail": "Session not found"}, status=404)
        if not thread_id:
            thread_id = f"thread-{next(self._counter)}"
        message: str = body["message"]
        history = self.sessions.setdefault(thread_id, [])
        history.append(message)
        messages: list[dict[str, Any]] = []
        for earlier in history:
            messages.append(_lc_message("human", earlier))
            messages.append(_lc_message("ai", f"echo: {earlier}"))
        return web.json_response(
            {
                "threadId": thread_id,
                "messages": messages,
                "userIntentReasoning": "The user wants an echo.",
            }
        )

    async def _thinnest_probe(self, request: web.Request) -> web.StreamResponse:
        await self._record(request, "thinnest", "probe")
        scripted = await self._scripted(self._probe_script)
        if scripted is not None:
            return scripted
        if not self._authorized(request):
            return web.json_response({"detail": "Invalid API key"}, status=401)
        agent_id = request.match_info["agent_id"]
        return web.json_response({"id": agent_id, "name": "Fake agent"})

    async def _peaka_probe(self, request: web.Request) -> web.StreamResponse:
        await self._record(request, "peaka", "probe")
        scripted = await self._scripted(self._probe_script)
        if scripted is not None:
            return scripted
        if not self._authorized(request):
            return web.json_response({"message": "Unauthorized"}, status=401)
        return web.json_response([{"threadId": t} for t in self.sessions])
