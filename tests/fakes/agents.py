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

Streaming (``/chat/stream`` at the base for thinnest, ``/ai-agent/{project_id}/chat/stream``
for Peaka): recorded as ``kind="stream"`` (``agents.stream_calls``). Default answer: the same
echo as chat, as Server-Sent Events, one event per word: thinnest ``{"type":
agents.stream_text_type, agents.stream_text_field: piece}`` events then ``{"type": "done",
"session_id", "usage"}``; Peaka an ``event: metadata`` then ``event: messages`` events whose
data is ``[AIMessageChunk, metadata]`` (LangChain-serialized, the id ``run-1``), and no final
event. ``agents.script_stream(FakeStream(...))`` queues other answers (FIFO): other ``events``
(each a JSON-able data value, or a ``(event name, data)`` pair, or a raw ``str`` block),
``status``/``body``/``content_type`` (a missing endpoint, a JSON body), ``hold_after=N``
(send N events, set ``agents.stream_holding``, wait for ``agents.release_stream()``),
``cut_after=N`` (send N events, then drop the connection without ending the body),
``chunk_size`` (write the body in pieces of that many bytes), ``gates={N: event}`` (wait
for that `asyncio.Event` before sending event number N: several pauses in one stream),
``pace`` (seconds between two events, a steady writer); ``sent_at`` collects the
``time.monotonic()`` right after each event was written (pass your own list to read it).
Expired sessions get the chat's 404 here too; ``agents.stream_status = 404`` (or 405)
answers every stream call so.

Config helpers: `thinnest_config` / `peaka_config` build the typed agent config pointed at the
fake, and `thinnest_config_toml` / `peaka_config_toml` the ``[agents.NAME]`` TOML section.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json as jsonlib
import time
from collections.abc import Mapping, Sequence
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
class FakeStream:
    """One scripted streaming answer (see the module docstring)."""

    events: Sequence[Any] | None = None
    status: int = 200
    body: str | None = None
    content_type: str = "text/event-stream"
    hold_after: int | None = None
    cut_after: int | None = None
    chunk_size: int | None = None
    #: Event number -> an `asyncio.Event` to wait for before sending that event.
    gates: Mapping[int, asyncio.Event] = field(default_factory=dict)
    #: Seconds to wait before each event after the first.
    pace: float = 0.0
    #: ``time.monotonic()`` right after each event was written, appended as they go.
    sent_at: list[float] = field(default_factory=list)


def sse_block(item: Any) -> str:
    """One event of the stream: a raw ``str``, an ``(event, data)`` pair, or data alone."""
    if isinstance(item, str):
        return item
    name = None
    if isinstance(item, tuple):
        name, item = item
    data = item if isinstance(item, str) else jsonlib.dumps(item)
    head = f"event: {name}\n" if name else ""
    return head + "".join(f"data: {line}\n" for line in data.split("\n")) + "\n"


@dataclass(frozen=True)
class RecordedCall:
    """One request the fake received."""

    api: Literal["thinnest", "peaka"]
    kind: Literal["chat", "probe", "stream"]
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
        #: The usage each thinnest chat answer reported, in order (the bill to match).
        self.reported_usage: list[dict[str, int]] = []
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
        self._stream_script: list[FakeStream] = []
        self.stream_text_type = "text"
        self.stream_text_field = "content"
        self.stream_status: int | None = None
        self.stream_holding = asyncio.Event()
        self._stream_released = asyncio.Event()

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
        app.router.add_post("/chat/stream", self._thinnest_stream)
        app.router.add_post("/ai-agent/{project_id}/chat/stream", self._peaka_stream)
        app.router.add_get("/ai-agent/{project_id}/threads", self._peaka_probe)
        self._runner, port = await serve_loopback(app)
        self.url = f"http://127.0.0.1:{port}"

    async def close(self) -> None:
        # Wake every delayed or held handler so that shutdown does not wait for them.
        self._closing.set()
        self._released.set()
        self._stream_released.set()
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

    def script_stream(self, *answers: FakeStream) -> None:
        """Queue answers for the next streaming calls (FIFO)."""
        self._stream_script.extend(answers)

    def release_stream(self) -> None:
        """Let a stream held by ``hold_after`` send the rest."""
        self._stream_released.set()

    @property
    def stream_calls(self) -> list[RecordedCall]:
        return [c for c in self.calls if c.kind == "stream"]

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
            kind="chat" if kind == "chat" else "stream" if kind == "stream" else "probe",
            method=request.method,
            path=request.path,
            headers=dict(request.headers),
            json=body,
        )
        self.calls.append(call)
        async with self._changed:
            self._changed.notify_all()
        if kind in ("chat", "stream"):
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
        usage = {
            "input_tokens": words_in,
            "output_tokens": words_out,
            "total_tokens": words_in + words_out,
        }
        self.reported_usage.append(usage)
        return web.json_response(
            {"response": reply, "session_id": session_id, "usage": usage},
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

    # --- streaming ------------------------------------------------------------------

    async def _stream_start(
        self, request: web.Request, api: Literal["thinnest", "peaka"], session_key: str
    ) -> tuple[dict[str, Any], FakeStream, web.StreamResponse | None]:
        call = await self._record(request, api, "stream")
        await self._released.wait()
        body = call.json if isinstance(call.json, dict) else {}
        scripted = self._stream_script.pop(0) if self._stream_script else FakeStream()
        if self.stream_status is not None:
            return body, scripted, web.Response(status=self.stream_status)
        if not self._authorized(request):
            return body, scripted, web.json_response({"detail": "Invalid API key"}, status=401)
        if body.get(session_key) in self.expired:
            return body, scripted, web.json_response({"detail": "Session not found"}, status=404)
        if scripted.body is not None or scripted.status != 200:
            answer = web.Response(
                status=scripted.status,
                text=scripted.body or "",
                headers={"Content-Type": scripted.content_type},
            )
            return body, scripted, answer
        return body, scripted, None

    async def _send_stream(
        self, request: web.Request, scripted: FakeStream, events: Sequence[Any]
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": scripted.content_type})
        await response.prepare(request)
        for number, item in enumerate(events):
            if scripted.hold_after is not None and number == scripted.hold_after:
                self.stream_holding.set()
                await self._stream_released.wait()
            if number in scripted.gates:
                await self._gate(scripted.gates[number])
            if scripted.pace > 0 and number > 0:
                await self._pause(scripted.pace)
            if scripted.cut_after is not None and number == scripted.cut_after:
                assert request.transport is not None
                request.transport.abort()  # gone mid-body, no terminating chunk
                return response
            data = sse_block(item).encode()
            size = scripted.chunk_size or len(data)
            for start in range(0, len(data), size):
                await response.write(data[start : start + size])
            scripted.sent_at.append(time.monotonic())
        await response.write_eof()
        return response

    async def _gate(self, gate: asyncio.Event) -> None:
        """Wait for ``gate`` (or the server's closing)."""
        waiters = {asyncio.ensure_future(gate.wait()), asyncio.ensure_future(self._closing.wait())}
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _thinnest_stream(self, request: web.Request) -> web.StreamResponse:
        body, scripted, early = await self._stream_start(request, "thinnest", "session_id")
        if early is not None:
            return early
        events = scripted.events
        if events is None:
            message = str(body.get("message", ""))
            session_id = body.get("session_id") or f"sess-{next(self._counter)}"
            self.sessions.setdefault(session_id, []).append(message)
            reply = f"echo: {message}"
            words_in, words_out = len(message.split()), len(reply.split())
            pieces = [word + " " for word in reply.split(" ")]
            pieces[-1] = pieces[-1][:-1]
            text_events: list[Any] = [
                {"type": self.stream_text_type, self.stream_text_field: p} for p in pieces
            ]
            usage = {
                "input_tokens": words_in,
                "output_tokens": words_out,
                "total_tokens": words_in + words_out,
            }
            events = [*text_events, {"type": "done", "session_id": session_id, "usage": usage}]
        return await self._send_stream(request, scripted, events)

    async def _peaka_stream(self, request: web.Request) -> web.StreamResponse:
        body, scripted, early = await self._stream_start(request, "peaka", "threadId")
        if early is not None:
            return early
        events = scripted.events
        if events is None:
            message = str(body.get("message", ""))
            thread_id = body.get("threadId") or f"thread-{next(self._counter)}"
            self.sessions.setdefault(thread_id, []).append(message)
            reply = f"echo: {message}"
            pieces = [word + " " for word in reply.split(" ")]
            pieces[-1] = pieces[-1][:-1]
            meta = {"langgraph_node": "agent", "thread_id": thread_id}
            events = [("metadata", {"run_id": "run-1"})] + [
                ("messages", [peaka_chunk(p), meta]) for p in pieces
            ]
        return await self._send_stream(request, scripted, events)


def peaka_chunk(content: str, *, kind: str = "AIMessageChunk", id: str = "run-1") -> dict[str, Any]:
    """An AI message chunk as LangChain serializes it (langchain_core.load.dumpd)."""
    return {
        "lc": 1,
        "type": "constructor",
        "id": ["langchain_core", "messages", kind],
        "kwargs": {"content": content, "type": "AIMessageChunk", "id": id},
    }
