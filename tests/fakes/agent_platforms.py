"""`FakePlatforms`: Dify, Flowise, Langflow and n8n on one real HTTP server.

It listens on 127.0.0.1 on a random free port and speaks each platform's wire
format (the facts of issue 14), so tests drive the real `GenericHttpBackend`
and the real httpx stack through the presets. Each platform keeps memory by
its own id, so a test can see which turns reached which memory.

Usage::

    async with FakePlatforms() as fake:
        config = http_config("dify", fake)            # the preset pointed at the fake
        ...
        fake.calls[-1].json                           # what the bridge sent
        fake.memory["dify"]                           # {conversation_id: [queries]}

Endpoints (``fake.url`` is the base of all four):

- **Dify** ``POST /v1/chat-messages``, ``Authorization: Bearer DIFY_KEY``. An empty
  ``conversation_id`` starts a conversation ``conv-N`` owned by the ``user`` sent; an
  unknown one, an expired one (`expire`) or one of another ``user`` is 404
  ``{"code": "not_found", "message": "Conversation Not Exists.", "status": 404}``.
  ``response_mode: "streaming"``: SSE with a ``ping`` event, ``agent_message`` chunks
  of the answer and ``message_end`` with ``metadata.usage``; ``"blocking"``: one JSON
  ``{answer, conversation_id, metadata}``, or 400 ``app_unavailable`` when
  ``dify_agent_app`` is set (agent apps refuse it). ``dify_quota = "status"``: 400
  ``provider_quota_exceeded``; ``"stream"``: the same as an ``error`` event in a 200
  stream, after ``dify_error_after`` chunks of the answer (0: before any). Pacing:
  when ``dify_hold`` is an `asyncio.Event`, the stream stops after its first data
  event (a chunk, or the error event) until the test sets it; ``dify_streamed`` is
  set once a stream was written whole. Probe: ``GET /v1/parameters``.
- **Flowise** ``POST /api/v1/prediction/{chatflow_id}`` (Bearer ``FLOWISE_KEY`` when
  ``flowise_key`` is set): ``{question, overrideConfig: {sessionId}}``, answer ``{text,
  sessionId, chatId, ...}``. With ``flowise_override = False`` (Flowise's default
  security setting) the sessionId sent is ignored and each call gets a new one.
  ``GET /api/v1/ping`` answers ``pong``.
- **Langflow** ``POST /api/v1/run/{flow_id}``, ``x-api-key: LANGFLOW_KEY`` (else 403):
  ``{input_value, session_id, input_type, output_type}``; without ``session_id`` every
  call shares the flow's one session (the flow id). Answer nested in
  ``outputs[0].outputs[0].results.message.text``. Probe ``GET /api/v1/flows/{flow_id}``.
- **n8n** ``POST /webhook/{id}/chat`` (the Chat Trigger): ``n8n_auth`` is ``"none"``,
  ``"basic"`` (``N8N_USER:N8N_PASSWORD``) or ``"header"`` (``N8N_HEADER: N8N_PASSWORD``);
  ``{action: "sendMessage", chatInput, sessionId}`` answers ``{"output": ...}`` (or
  ``{"text": ...}`` with ``n8n_field = "text"``). ``GET`` answers 404, as a webhook
  that only takes POST does.

Every answer is ``"echo: <message>"``; usage counts words. ``fake.script(FakeResponse(...))``
queues raw answers for the next chat calls (any platform), first in, first out.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json as jsonlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self

from aiohttp import web

from bridge.config import HttpAgentConfig
from tests.fakes.agents import FakeResponse
from tests.fakes.loopback import serve_loopback

DIFY_KEY = "app-fakeDifyKey0123456789"
FLOWISE_KEY = "fw-fakeFlowiseKey0123456789"
LANGFLOW_KEY = "sk-fakeLangflowKey0123456789"
N8N_USER = "bridge"
N8N_PASSWORD = "n8n-fakePassword0123456789"
N8N_HEADER = "X-N8N-Key"
CHATFLOW_ID = "cf-1111"
FLOW_ID = "fl-2222"
WEBHOOK_ID = "wh-3333"
#: Every secret above, for "never in the output" assertions.
SECRETS = (DIFY_KEY, FLOWISE_KEY, LANGFLOW_KEY, N8N_PASSWORD)

Platform = Literal["dify", "flowise", "langflow", "n8n"]
PLATFORMS: tuple[Platform, ...] = ("dify", "flowise", "langflow", "n8n")


@dataclass(frozen=True)
class PlatformCall:
    """One request the fake received."""

    platform: Platform
    kind: Literal["chat", "probe"]
    method: str
    path: str
    headers: Mapping[str, str]
    json: Any


def http_config_values(platform: Platform, fake: FakePlatforms, **overrides: Any) -> dict[str, Any]:
    """The keys a user writes for ``platform``'s preset, pointed at the fake."""
    values: dict[str, Any] = {"backend": "http", "preset": platform, "timeout": 5.0}
    values["max_retry_wait"] = 0.0
    if platform == "dify":
        values.update(base_url=f"{fake.url}/v1", api_key=DIFY_KEY)
    elif platform == "flowise":
        values.update(base_url=fake.url, params={"chatflow_id": CHATFLOW_ID})
        values["api_key"] = FLOWISE_KEY
    elif platform == "langflow":
        values.update(base_url=fake.url, params={"flow_id": FLOW_ID}, api_key=LANGFLOW_KEY)
    else:
        values["url"] = f"{fake.url}/webhook/{WEBHOOK_ID}/chat"
        if fake.n8n_auth == "basic":
            values["api_key"] = f"{N8N_USER}:{N8N_PASSWORD}"
        elif fake.n8n_auth == "header":
            values.update(api_key=N8N_PASSWORD, auth="header", auth_header=N8N_HEADER)
    values.update(overrides)
    return values


def http_config(platform: Platform, fake: FakePlatforms, **overrides: Any) -> HttpAgentConfig:
    """``platform``'s preset as a validated config (overrides win)."""
    return HttpAgentConfig.model_validate(http_config_values(platform, fake, **overrides))


def http_config_toml(platform: Platform, fake: FakePlatforms, name: str = "default") -> str:
    """The ``[agents.NAME]`` TOML section of ``platform``'s preset, pointed at the fake."""
    lines = [f"[agents.{name}]"]
    for key, value in http_config_values(platform, fake).items():
        lines.append(f"{key} = {_toml(value)}")
    return "\n".join(lines) + "\n"


def _toml(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return jsonlib.dumps(value)


def _words(text: str) -> int:
    return len(text.split())


class FakePlatforms:
    """The four platforms on 127.0.0.1 (see the module docstring)."""

    def __init__(self) -> None:
        self.calls: list[PlatformCall] = []
        #: Per platform, each memory id and the user messages it received, in order.
        self.memory: dict[Platform, dict[str, list[str]]] = {p: {} for p in PLATFORMS}
        #: Dify: conversation id -> the user that owns it.
        self.dify_owner: dict[str, str] = {}
        self.expired: set[str] = set()
        self.dify_agent_app = True
        self.dify_quota: Literal["", "status", "stream"] = ""
        #: With ``dify_quota = "stream"``: the answer chunks sent before the error event.
        self.dify_error_after = 0
        #: Set by the test to let a held stream go on past its first chunk.
        self.dify_hold: asyncio.Event | None = None
        #: Set when a stream was written to its end (the last event sent).
        self.dify_streamed = asyncio.Event()
        self.flowise_key: str | None = FLOWISE_KEY
        self.flowise_override = True
        self.n8n_auth: Literal["none", "basic", "header"] = "basic"
        self.n8n_field: Literal["output", "text"] = "output"
        self._script: list[FakeResponse] = []
        self._counter = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_post("/v1/chat-messages", self._dify_chat)
        app.router.add_get("/v1/parameters", self._dify_parameters)
        app.router.add_post("/api/v1/prediction/{chatflow_id}", self._flowise_chat)
        app.router.add_get("/api/v1/ping", self._flowise_ping)
        app.router.add_post("/api/v1/run/{flow_id}", self._langflow_run)
        app.router.add_get("/api/v1/flows/{flow_id}", self._langflow_flow)
        app.router.add_post("/webhook/{webhook_id}/chat", self._n8n_chat)
        app.router.add_get("/webhook/{webhook_id}/chat", self._n8n_get)
        self._runner, port = await serve_loopback(app)
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

    # --- control --------------------------------------------------------------------

    def script(self, *responses: FakeResponse) -> None:
        """Queue raw answers for the next chat calls (FIFO)."""
        self._script.extend(responses)

    def expire(self, memory_id: str) -> None:
        """Forget this Dify conversation from now on."""
        self.expired.add(memory_id)

    def chat_calls(self, platform: Platform | None = None) -> list[PlatformCall]:
        return [
            c
            for c in self.calls
            if c.kind == "chat" and (platform is None or c.platform == platform)
        ]

    # --- shared ---------------------------------------------------------------------

    async def _record(self, request: web.Request, platform: Platform, kind: str) -> Any:
        body: Any = None
        if request.can_read_body:
            with contextlib.suppress(ValueError):
                body = jsonlib.loads(await request.read())
        self.calls.append(
            PlatformCall(
                platform=platform,
                kind="chat" if kind == "chat" else "probe",
                method=request.method,
                path=request.path,
                headers=dict(request.headers),
                json=body,
            )
        )
        return body

    def _scripted(self) -> web.StreamResponse | None:
        if not self._script:
            return None
        response = self._script.pop(0)
        if response.body is not None:
            raw = response.body.encode() if isinstance(response.body, str) else response.body
            headers = {"Content-Type": "application/json", **response.headers}
            return web.Response(status=response.status, body=raw, headers=headers)
        return web.json_response(
            response.json, status=response.status, headers=dict(response.headers)
        )

    def _remember(self, platform: Platform, memory_id: str, message: str) -> str:
        self.memory[platform].setdefault(memory_id, []).append(message)
        return f"echo: {message}"

    # --- Dify -----------------------------------------------------------------------

    @staticmethod
    def _dify_error(status: int, code: str, message: str) -> web.Response:
        return web.json_response(
            {"code": code, "message": message, "status": status}, status=status
        )

    async def _dify_chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request, "dify", "chat")
        scripted = self._scripted()
        if scripted is not None:
            return scripted
        if request.headers.get("Authorization") != f"Bearer {DIFY_KEY}":
            return self._dify_error(401, "unauthorized", "Access token is invalid")
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            return self._dify_error(400, "invalid_param", "query is required")
        user = body.get("user")
        if not isinstance(user, str) or not user:
            return self._dify_error(400, "invalid_param", "user is required")
        mode = body.get("response_mode")
        if mode == "blocking" and self.dify_agent_app:
            return self._dify_error(
                400, "app_unavailable", "Agent Chat App does not support blocking mode"
            )
        if self.dify_quota == "status":
            return self._dify_error(
                400,
                "provider_quota_exceeded",
                "Your quota for Dify Hosted Model Provider has been exhausted.",
            )
        conversation = body.get("conversation_id") or ""
        if conversation:
            if (
                conversation in self.expired
                or self.dify_owner.get(conversation, user) != user
                or conversation not in self.memory["dify"]
            ):
                return self._dify_error(404, "not_found", "Conversation Not Exists.")
        else:
            conversation = f"conv-{next(self._counter)}"
            self.dify_owner[conversation] = user
        query: str = body["query"]
        answer = self._remember("dify", conversation, query)
        usage = {
            "prompt_tokens": _words(query),
            "completion_tokens": _words(answer),
            "total_tokens": _words(query) + _words(answer),
        }
        message_id = str(uuid.uuid4())
        if mode != "streaming":
            return web.json_response(
                {
                    "event": "message",
                    "message_id": message_id,
                    "conversation_id": conversation,
                    "answer": answer,
                    "metadata": {"usage": usage},
                }
            )
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"event: ping\n\n")
        # The answer in word-sized chunks, as an agent app streams it.
        pieces = answer.split(" ")
        for i, piece in enumerate(pieces):
            if self.dify_quota == "stream" and i == self.dify_error_after:
                break
            chunk = piece if i == len(pieces) - 1 else piece + " "
            event = {
                "event": "agent_message",
                "conversation_id": conversation,
                "message_id": message_id,
                "answer": chunk,
            }
            await response.write(f"data: {jsonlib.dumps(event)}\n\n".encode())
            if i == 0 and self.dify_hold is not None:
                await self.dify_hold.wait()
        if self.dify_quota == "stream":
            event = {
                "event": "error",
                "message_id": message_id,
                "status": 400,
                "code": "provider_quota_exceeded",
                "message": "Your quota for Dify Hosted Model Provider has been exhausted.",
            }
            await response.write(f"data: {jsonlib.dumps(event)}\n\n".encode())
            if self.dify_error_after == 0 and self.dify_hold is not None:
                await self.dify_hold.wait()
            await response.write_eof()
            self.dify_streamed.set()
            return response
        thought = {"event": "agent_thought", "conversation_id": conversation, "thought": "hmm"}
        await response.write(f"data: {jsonlib.dumps(thought)}\n\n".encode())
        end = {
            "event": "message_end",
            "conversation_id": conversation,
            "message_id": message_id,
            "metadata": {"usage": usage},
        }
        await response.write(f"data: {jsonlib.dumps(end)}\n\n".encode())
        await response.write_eof()
        self.dify_streamed.set()
        return response

    async def _dify_parameters(self, request: web.Request) -> web.StreamResponse:
        await self._record(request, "dify", "probe")
        if request.headers.get("Authorization") != f"Bearer {DIFY_KEY}":
            return self._dify_error(401, "unauthorized", "Access token is invalid")
        return web.json_response({"opening_statement": "", "user_input_form": []})

    # --- Flowise ----------------------------------------------------------------------

    async def _flowise_chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request, "flowise", "chat")
        scripted = self._scripted()
        if scripted is not None:
            return scripted
        if self.flowise_key is not None and (
            request.headers.get("Authorization") != f"Bearer {self.flowise_key}"
        ):
            return web.json_response({"error": "Unauthorized Access"}, status=401)
        if request.match_info["chatflow_id"] != CHATFLOW_ID:
            return web.json_response(
                {"message": f"Chatflow {request.match_info['chatflow_id']} not found"}, status=404
            )
        if not isinstance(body, dict) or not isinstance(body.get("question"), str):
            return web.json_response({"message": "question is required"}, status=500)
        override = body.get("overrideConfig") or {}
        sent = override.get("sessionId") if isinstance(override, dict) else None
        session = sent if self.flowise_override and sent else str(uuid.uuid4())
        question: str = body["question"]
        text = self._remember("flowise", session, question)
        return web.json_response(
            {
                "text": text,
                "question": question,
                "chatId": session,
                "chatMessageId": str(uuid.uuid4()),
                "sessionId": session,
            }
        )

    async def _flowise_ping(self, request: web.Request) -> web.StreamResponse:
        await self._record(request, "flowise", "probe")
        return web.Response(text="pong")

    # --- Langflow ---------------------------------------------------------------------

    async def _langflow_run(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request, "langflow", "chat")
        scripted = self._scripted()
        if scripted is not None:
            return scripted
        if request.headers.get("x-api-key") != LANGFLOW_KEY:
            return web.json_response({"detail": "Invalid or missing API key"}, status=403)
        flow_id = request.match_info["flow_id"]
        if flow_id != FLOW_ID:
            return web.json_response({"detail": f"Flow {flow_id} not found"}, status=404)
        if not isinstance(body, dict) or not isinstance(body.get("input_value"), str):
            return web.json_response({"detail": "input_value is required"}, status=422)
        # Without a session_id every caller shares the flow's own session.
        session = body.get("session_id") or flow_id
        message: str = body["input_value"]
        text = self._remember("langflow", session, message)
        result = {
            "results": {"message": {"text": text, "sender": "Machine", "session_id": session}},
            "artifacts": {"message": text},
            "messages": [{"message": text, "type": "text"}],
        }
        return web.json_response(
            {
                "session_id": session,
                "outputs": [{"inputs": {"input_value": message}, "outputs": [result]}],
            }
        )

    async def _langflow_flow(self, request: web.Request) -> web.StreamResponse:
        await self._record(request, "langflow", "probe")
        if request.headers.get("x-api-key") != LANGFLOW_KEY:
            return web.json_response({"detail": "Invalid or missing API key"}, status=403)
        flow_id = request.match_info["flow_id"]
        if flow_id != FLOW_ID:
            return web.json_response({"detail": "Flow not found"}, status=404)
        return web.json_response({"id": flow_id, "name": "Fake flow"})

    # --- n8n --------------------------------------------------------------------------

    def _n8n_authorized(self, request: web.Request) -> bool:
        if self.n8n_auth == "none":
            return True
        if self.n8n_auth == "header":
            return request.headers.get(N8N_HEADER) == N8N_PASSWORD
        expected = base64.b64encode(f"{N8N_USER}:{N8N_PASSWORD}".encode()).decode()
        return request.headers.get("Authorization") == f"Basic {expected}"

    async def _n8n_chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request, "n8n", "chat")
        scripted = self._scripted()
        if scripted is not None:
            return scripted
        if not self._n8n_authorized(request):
            return web.Response(status=403, text="Authorization data is wrong!")
        if request.match_info["webhook_id"] != WEBHOOK_ID:
            return web.json_response(
                {"code": 404, "message": "The requested webhook is not registered."}, status=404
            )
        if not isinstance(body, dict) or body.get("action") != "sendMessage":
            return web.json_response({"message": "unknown action"}, status=400)
        session = body.get("sessionId")
        message = body.get("chatInput")
        if not isinstance(session, str) or not session or not isinstance(message, str):
            return web.json_response(
                {"message": "sessionId and chatInput are required"}, status=500
            )
        text = self._remember("n8n", session, message)
        return web.json_response({self.n8n_field: text})

    async def _n8n_get(self, request: web.Request) -> web.StreamResponse:
        await self._record(request, "n8n", "probe")
        return web.json_response(
            {"code": 404, "message": "This webhook is not registered for GET requests."},
            status=404,
        )
