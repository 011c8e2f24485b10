"""`FakeOpenAI`: an OpenAI-compatible API (Responses, Conversations, Chat Completions,
Models) on a real HTTP server on 127.0.0.1, speaking the wire format, so tests drive
the real `OpenAIBackend` over the real shared httpx client.

Usage::

    async with FakeOpenAI() as api:
        config = openai_config(api.url, api="chat")     # base_url = api.url (".../v1")
        ...
        api.calls[-1].json          # {"model": "fake-model", "messages": [...]}

Endpoints, under ``api.url`` (which ends in ``/v1``):

- ``POST /responses``: ``{model, input, instructions?, conversation?,
  previous_response_id?, store?}``. The answer remembers: ``"echo: <input>"``, then
  ``" [remembers: a | b]"`` listing the earlier user inputs of the same memory (the
  conversation's items, or the chain of stored responses). Its ``output`` holds a
  ``reasoning`` item before the ``message`` one, as reasoning models send. Unknown
  conversation: 404; unknown previous response: 400 ``previous_response_not_found``.
- ``POST /conversations``: a new empty conversation, ``{"id": "conv_N", ...}``.
- ``POST /chat/completions``: ``{model, messages}``, stateless: the same echo, with
  ``[remembers: ...]`` listing the earlier ``user`` messages of ``messages``.
- ``"stream": true`` on ``/responses`` or ``/chat/completions`` answers the same echo as
  Server-Sent Events, one delta per word: Responses ``response.created``,
  ``response.output_text.delta``..., ``response.completed`` (the whole response object);
  Chat Completions ``chat.completion.chunk``s, a usage chunk (``choices: []``) when
  ``stream_options.include_usage``, then ``data: [DONE]``. ``api.stream_error = {...}``
  sends that event data after the first delta instead of the rest (once);
  ``api.stream_calls`` counts streamed requests.
- Images: a Responses ``input`` may be message items whose ``content`` holds
  ``input_text`` and ``input_image`` parts, a Chat Completions user message
  ``text`` and ``image_url`` parts; an image must be a base64 ``data:image/`` URL
  (else 400). The echo is of the text; ``api.images`` keeps (MIME type, bytes).
- ``GET /models``: ``{"object": "list", "data": [{"id": ...}, ...]}`` (``models=``).

Authentication: with ``FakeOpenAI(api_key="sk-...")`` every request needs exactly
``Authorization: Bearer <api_key>``, else 401 ``invalid_api_key``; with
``api_key=None`` (the default, as Ollama) any request is accepted.

Control:

- ``api.script("/responses", FakeResponse(...), ...)``: the next calls to that path get
  these answers, first in, first out (see `openai_error`, `INSUFFICIENT_QUOTA`,
  `rate_limited`; a `FakeResponse` may give a raw ``body`` or a ``delay``); then the
  default answer again.
- ``api.forget("conv_1")`` / ``api.forget("resp_3")``: that conversation or stored
  response is gone from now on (as after OpenAI's retention).
- ``api.calls``: every request, as `OpenAICall`; ``api.calls_to("/responses")`` those to
  one path. ``api.conversations`` maps each conversation id to its user inputs.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json as jsonlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from aiohttp import web

from bridge.config import OpenAIAgentConfig
from tests.fakes.agents import FakeResponse
from tests.fakes.loopback import serve_loopback

FAKE_OPENAI_KEY = "sk-fake-openai-test-key-0123456789"
FAKE_MODEL = "fake-model"


@dataclass(frozen=True)
class OpenAICall:
    """One request the fake received."""

    method: str
    #: The path below ``/v1``, e.g. ``"/responses"``.
    path: str
    headers: Mapping[str, str]
    #: The parsed JSON body; None for a GET or an unparsable body.
    json: Any


def openai_error(
    status: int,
    message: str,
    *,
    type: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> FakeResponse:
    """An error as OpenAI shapes it: ``{"error": {"message", "type", "param", "code"}}``."""
    body = {"error": {"message": message, "type": type, "param": param, "code": code}}
    return FakeResponse(status=status, json=body, headers=dict(headers or {}))


#: Out of credit: OpenAI's 429 with no Retry-After.
INSUFFICIENT_QUOTA = openai_error(
    429,
    "You exceeded your current quota, please check your plan and billing details.",
    type="insufficient_quota",
    code="insufficient_quota",
)


def rate_limited(retry_after: str = "1") -> FakeResponse:
    """A rate limit: OpenAI's 429 ``rate_limit_exceeded`` with ``Retry-After``."""
    return openai_error(
        429,
        "Rate limit reached for requests. Please try again in 1s.",
        type="requests",
        code="rate_limit_exceeded",
        headers={"Retry-After": retry_after},
    )


def openai_config(
    url: str,
    *,
    api_key: str | None = FAKE_OPENAI_KEY,
    model: str = FAKE_MODEL,
    **overrides: Any,
) -> OpenAIAgentConfig:
    """An openai agent config pointed at the fake (``timeout=5``, ``max_retry_wait=2``
    unless overridden, so error tests stay fast)."""
    values: dict[str, Any] = {
        "backend": "openai",
        "base_url": url,
        "model": model,
        "timeout": 5.0,
        "max_retry_wait": 2.0,
    }
    if api_key is not None:
        values["api_key"] = api_key
    values.update(overrides)
    return OpenAIAgentConfig.model_validate(values, strict=False)


def openai_config_toml(url: str, name: str = "default", **keys: str | int) -> str:
    """The ``[agents.NAME]`` TOML section of an openai agent pointed at the fake;
    ``keys`` are added as they are (strings quoted)."""
    lines = [
        f"[agents.{name}]",
        'backend = "openai"',
        f'base_url = "{url}"',
        f'model = "{FAKE_MODEL}"',
        "timeout = 5",
        "max_retry_wait = 2",
    ]
    for key, value in keys.items():
        lines.append(f"{key} = {jsonlib.dumps(value)}")
    return "\n".join(lines) + "\n"


class FakeOpenAI:
    """A fake OpenAI-compatible API on 127.0.0.1 (see the module docstring)."""

    def __init__(
        self, *, api_key: str | None = None, models: tuple[str, ...] = (FAKE_MODEL,)
    ) -> None:
        self.api_key = api_key
        self.models = models
        self.calls: list[OpenAICall] = []
        #: Every image part received: (MIME type, the decoded bytes).
        self.images: list[tuple[str, bytes]] = []
        #: conversation id -> the user inputs it holds, in order.
        self.conversations: dict[str, list[str]] = {}
        #: stored response id -> (the response it followed, its user input).
        self.responses: dict[str, tuple[str | None, str]] = {}
        self._scripts: dict[str, list[FakeResponse]] = {}
        self._ids = itertools.count(1)
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""
        self.stream_error: dict[str, Any] | None = None
        self.stream_calls = 0

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_post("/v1/responses", self._responses)
        app.router.add_post("/v1/conversations", self._create_conversation)
        app.router.add_post("/v1/chat/completions", self._chat_completions)
        app.router.add_get("/v1/models", self._models)
        self._runner, port = await serve_loopback(app)
        self.url = f"http://127.0.0.1:{port}/v1"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- control --------------------------------------------------------------------

    def script(self, path: str, *responses: FakeResponse) -> None:
        """Queue answers for the next calls to ``path`` (e.g. ``"/responses"``)."""
        self._scripts.setdefault(path, []).extend(responses)

    def forget(self, memory_id: str) -> None:
        """Make a conversation or a stored response unknown from now on."""
        self.conversations.pop(memory_id, None)
        self.responses.pop(memory_id, None)

    def calls_to(self, path: str) -> list[OpenAICall]:
        return [c for c in self.calls if c.path == path]

    def chain(self, response_id: str) -> list[str]:
        """The user inputs of a stored response's chain, oldest first."""
        inputs: list[str] = []
        current: str | None = response_id
        while current is not None and current in self.responses:
            current, text = self.responses[current]
            inputs.append(text)
        return inputs[::-1]

    # --- handlers -------------------------------------------------------------------

    async def _scripted(self, scripted: FakeResponse) -> web.StreamResponse:
        if scripted.delay > 0:
            # A hanging server; the wait ends early when the fake closes.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), scripted.delay)
        if scripted.body is not None:
            raw = scripted.body.encode() if isinstance(scripted.body, str) else scripted.body
            headers = {"Content-Type": "application/json", **scripted.headers}
            return web.Response(status=scripted.status, body=raw, headers=headers)
        return web.json_response(
            scripted.json, status=scripted.status, headers=dict(scripted.headers)
        )

    async def _begin(self, request: web.Request) -> tuple[Any, web.StreamResponse | None]:
        """Record the call; a scripted answer or a refused key ends it here."""
        body: Any = None
        if request.can_read_body:
            try:
                body = jsonlib.loads(await request.read())
            except ValueError:
                body = None
        path = request.path.removeprefix("/v1")
        self.calls.append(OpenAICall(request.method, path, dict(request.headers), body))
        script = self._scripts.get(path)
        if script:
            return body, await self._scripted(script.pop(0))
        key = self.api_key
        if key is not None and request.headers.get("Authorization") != f"Bearer {key}":
            refused = openai_error(401, "Incorrect API key provided.", code="invalid_api_key")
            return body, web.json_response(refused.json, status=401)
        return body, None

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        body, early = await self._begin(request)
        if early is not None:
            return early
        if not isinstance(body, dict) or "input" not in body:
            return _bad_request("input is required", "input")
        try:
            text = self._input_text(body["input"], "input_text", "input_image")
        except ValueError as exc:
            return _bad_request(str(exc), "input")
        if body.get("model") not in self.models:
            return _model_not_found(body.get("model"))
        conversation = body.get("conversation")
        previous = body.get("previous_response_id")
        if conversation is not None and previous is not None:
            return _bad_request("conversation and previous_response_id are exclusive", None)
        earlier: list[str] = []
        if conversation is not None:
            if conversation not in self.conversations:
                return web.json_response(
                    openai_error(404, f"Conversation with id '{conversation}' not found.").json,
                    status=404,
                )
            earlier = list(self.conversations[conversation])
            self.conversations[conversation].append(text)
        elif previous is not None:
            if previous not in self.responses:
                return web.json_response(
                    openai_error(
                        400,
                        f"Previous response with id '{previous}' not found.",
                        code="previous_response_not_found",
                        param="previous_response_id",
                    ).json,
                    status=400,
                )
            earlier = self.chain(previous)
        response_id = f"resp_{next(self._ids)}"
        if body.get("store", True):
            self.responses[response_id] = (previous, text)
        answer = _echo(text, earlier)
        tokens_in, tokens_out = len(text.split()), len(answer.split())
        data: dict[str, Any] = {
            "id": response_id,
            "object": "response",
            "created_at": int(time.time()),
            "status": "completed",
            "model": body["model"],
            "instructions": body.get("instructions"),
            "previous_response_id": previous,
            "conversation": {"id": conversation} if conversation else None,
            "output": [
                {"id": f"rs_{response_id}", "type": "reasoning", "summary": []},
                {
                    "id": f"msg_{response_id}",
                    "type": "message",
                    "status": "completed",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": answer, "annotations": []}],
                },
            ],
            "usage": {
                "input_tokens": tokens_in,
                "output_tokens": tokens_out,
                "total_tokens": tokens_in + tokens_out,
            },
        }
        if body.get("stream"):
            return await self._stream_response(request, data, answer)
        return web.json_response(data)

    async def _sse(self, request: web.Request, events: list[Any]) -> web.StreamResponse:
        """Send ``events`` (data values; a str as is), cut short by ``stream_error``."""
        self.stream_calls += 1
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for number, item in enumerate(events):
            if number == 2 and self.stream_error is not None:
                item, self.stream_error = self.stream_error, None
                events = []
            data = item if isinstance(item, str) else jsonlib.dumps(item)
            name = item.get("type") if isinstance(item, dict) else None
            head = f"event: {name}\n" if isinstance(name, str) else ""
            await response.write(f"{head}data: {data}\n\n".encode())
            if not events:
                break
        await response.write_eof()
        return response

    async def _stream_response(
        self, request: web.Request, data: dict[str, Any], answer: str
    ) -> web.StreamResponse:
        created = {**data, "status": "in_progress", "output": [], "usage": None}
        pieces = [word + " " for word in answer.split(" ")]
        pieces[-1] = pieces[-1][:-1]
        events: list[Any] = [{"type": "response.created", "response": created}]
        events += [
            {"type": "response.output_text.delta", "item_id": "msg", "delta": p} for p in pieces
        ]
        events += [
            {"type": "response.output_text.done", "item_id": "msg", "text": answer},
            {"type": "response.completed", "response": data},
        ]
        return await self._sse(request, events)

    async def _create_conversation(self, request: web.Request) -> web.StreamResponse:
        _, early = await self._begin(request)
        if early is not None:
            return early
        conversation_id = f"conv_{next(self._ids)}"
        self.conversations[conversation_id] = []
        return web.json_response(
            {
                "id": conversation_id,
                "object": "conversation",
                "created_at": int(time.time()),
                "metadata": {},
            }
        )

    async def _chat_completions(self, request: web.Request) -> web.StreamResponse:
        body, early = await self._begin(request)
        if early is not None:
            return early
        messages = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(messages, list) or not messages:
            return _bad_request("messages is required", "messages")
        if body.get("model") not in self.models:
            return _model_not_found(body.get("model"))
        try:
            users = [
                self._input_text([m], "text", "image_url")
                for m in messages
                if m.get("role") == "user"
            ]
        except ValueError as exc:
            return _bad_request(str(exc), "messages")
        answer = _echo(users[-1], users[:-1])
        prompt = sum(len(str(m.get("content", "")).split()) for m in messages)
        completion = len(answer.split())
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        if body.get("stream"):
            base = {"id": "chatcmpl-s", "object": "chat.completion.chunk", "model": body["model"]}
            pieces = [word + " " for word in answer.split(" ")]
            pieces[-1] = pieces[-1][:-1]
            chunks: list[Any] = [
                {**base, "choices": [{"index": 0, "delta": {"role": "assistant"}}]}
            ]
            chunks += [
                {**base, "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]}
                for p in pieces
            ]
            chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
            options = body.get("stream_options") or {}
            if options.get("include_usage"):
                chunks.append({**base, "choices": [], "usage": usage})
            chunks.append("[DONE]")
            return await self._sse(request, chunks)
        return web.json_response(
            {
                "id": f"chatcmpl-{next(self._ids)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": answer},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "total_tokens": prompt + completion,
                },
            }
        )

    def _input_text(self, value: Any, text_type: str, image_type: str) -> str:
        """The user's text of a Responses ``input`` (a string, or message items with
        content parts) or of Chat Completions user messages; images are checked as
        OpenAI does (a base64 ``data:image/...`` URL) and kept in ``self.images``."""
        if isinstance(value, str):
            return value
        if not isinstance(value, list):
            raise ValueError("expected a string or a list of messages")
        texts: list[str] = []
        for item in value:
            content = item.get("content") if isinstance(item, dict) else None
            if isinstance(content, str):
                texts.append(content)
                continue
            if not isinstance(content, list):
                raise ValueError("expected content parts")
            for part in content:
                kind = part.get("type") if isinstance(part, dict) else None
                if kind == text_type:
                    texts.append(str(part.get("text", "")))
                elif kind == image_type:
                    url = part.get("image_url")
                    url = url.get("url") if isinstance(url, dict) else url
                    self.images.append(_data_url(url))
                else:
                    raise ValueError(f"unknown content part type {kind!r}")
        return "\n".join(texts)

    async def _models(self, request: web.Request) -> web.StreamResponse:
        _, early = await self._begin(request)
        if early is not None:
            return early
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in self.models]
        return web.json_response({"object": "list", "data": data})


def _data_url(url: object) -> tuple[str, bytes]:
    """(MIME type, bytes) of an image's data URL; ValueError for anything else."""
    if not isinstance(url, str) or not url.startswith("data:image/") or ";base64," not in url:
        raise ValueError("image_url must be a base64 data:image/... URL in this fake")
    head, _, data = url.partition(";base64,")
    return head.removeprefix("data:"), base64.b64decode(data, validate=True)


def _echo(text: str, earlier: list[str]) -> str:
    if not earlier:
        return f"echo: {text}"
    return f"echo: {text} [remembers: {' | '.join(earlier)}]"


def _bad_request(message: str, param: str | None) -> web.StreamResponse:
    return web.json_response(openai_error(400, message, param=param).json, status=400)


def _model_not_found(model: object) -> web.StreamResponse:
    error = openai_error(
        404,
        f"The model `{model}` does not exist or you do not have access to it.",
        code="model_not_found",
    )
    return web.json_response(error.json, status=404)
