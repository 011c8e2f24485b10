"""`OpenAIBackend`: any OpenAI-compatible API, through Responses or Chat Completions.

``api = "responses"`` (the default) sends ``POST {base_url}/responses`` with
``model``, ``input`` (the message), ``instructions`` (the system prompt, on every
turn: ``previous_response_id`` does not carry it over) and the thread's memory:

- ``memory = "conversation"``: one Conversations API conversation per chat thread
  (``POST {base_url}/conversations`` -> ``{"id": "conv_..."}`` at the thread's
  first turn). That id is the thread's session and never changes. A conversation
  that is gone answers 404: `AgentSessionExpired`, and the dispatcher starts a
  new one.
- ``memory = "previous_response_id"``: for servers without conversations (LM
  Studio, vLLM with its store on). The first turn sends none; each answer's
  ``id`` becomes the thread's session for the next turn. A stored response that
  is gone answers 400 ``previous_response_not_found``: `AgentSessionExpired`.

The answer is the ``output_text`` parts of the ``output`` items of type
``message``, concatenated (``response.output_text`` is an SDK convenience, not
part of the wire format); usage ``input_tokens``/``output_tokens``/``total_tokens``.

``api = "chat"`` sends ``POST {base_url}/chat/completions``, which remembers
nothing: the bridge keeps the thread's turns (`bridge.history`) and sends the
system prompt, the newest turns that fit ``history_chars``, then the message.
The answer is ``choices[0].message.content``; usage ``prompt_tokens``/
``completion_tokens``/``total_tokens``. Each thread gets a random session id
(`new_session_id`) that keys its history, so ``/reset`` starts an empty one.

Errors: the base class's table, plus what OpenAI's body
``{"error": {"message", "type", "code", "param"}}`` says: a 429 whose code or
type is ``insufficient_quota`` is out of credit (`AgentInsufficientBalance`,
never retried: it carries no ``Retry-After`` and waiting does not help), other
429s wait as the server says; ``model_not_found`` is `AgentNotFound`.

Streaming (``stream = true``): the same requests with ``"stream": true``.
Responses: ``response.output_text.delta`` events are the deltas, a tool call
item (``response.output_item.added`` of a ``*_call`` type) a status line, and
``response.completed`` carries the whole response, read as `parse_reply()` reads
the plain answer (text, usage, and the id ``previous_response_id`` needs);
``error`` and ``response.failed`` events are mapped as the error bodies are.
Chat Completions: ``stream_options: {"include_usage": true}``; each chunk's
``choices[0].delta.content`` is a delta, the last chunk (``choices: []``) has
the usage, ``data: [DONE]`` ends it; the turn joins the history after the
final text, as in `chat()`.

Why httpx through `HttpAgentBackend` and not the ``openai`` package: the base
class already makes the call on the process's one shared client, with the
bridge's retry policy (bounded by ``max_retry_wait``), its status-to-error table
and its logging. The SDK would bring a second retry and error layer to switch
off and translate back, its own client per backend, a dependency, and import
time, for two JSON requests whose format fits in this module.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncGenerator, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx

from bridge.attachments import images_of
from bridge.backends.base import (
    BACKOFF_BASE,
    AgentRequest,
    ReplyFormatError,
    Sleep,
    StreamEnd,
    StreamItem,
    body_excerpt,
    require_text,
)
from bridge.backends.http import HttpAgentBackend
from bridge.backends.sse import SseEvent
from bridge.config import MessagesConfig, OpenAIAgentConfig
from bridge.errors import (
    AgentError,
    AgentInsufficientBalance,
    AgentNotFound,
    AgentSessionExpired,
    AgentUnavailable,
    StorageError,
)
from bridge.history import ConversationHistory, HistoryTurn
from bridge.model import AgentReply, TurnContext, Usage
from bridge.stream import AgentEvent, StatusLine, TextDelta

log = logging.getLogger("bridge.backends")

#: The request parameters that carry a Responses API thread's memory: a 400 or
#: 404 about one of them means the memory we sent is gone (or is not one).
_MEMORY_PARAMS = frozenset({"conversation", "previous_response_id"})


class OpenAIBackend(HttpAgentBackend[OpenAIAgentConfig]):
    """One ``backend = "openai"`` agent. ``history`` is where ``api = "chat"`` keeps
    the threads' turns (the store); without one, a chat-mode turn raises
    `RuntimeError` (a wiring mistake, not an agent failure).

    Known limitation (chat mode): the turn is added to the history when the agent
    answers, before the dispatcher stores the reply. A crash in between makes the
    dispatcher ask again, and that turn can then be in the history twice.

    Example::

        backend = OpenAIBackend("default", config, messages=messages, client=client,
                                history=store)
        reply = await backend.chat("hello", backend.new_session_id())
        reply = await backend.chat("and then?", reply.session_id)
    """

    kind = "openai"

    def __init__(
        self,
        name: str,
        config: OpenAIAgentConfig,
        *,
        messages: MessagesConfig,
        client: httpx.AsyncClient,
        history: ConversationHistory | None = None,
        sleep: Sleep = asyncio.sleep,
        backoff_base: float = BACKOFF_BASE,
    ) -> None:
        super().__init__(
            name, config, messages=messages, client=client, sleep=sleep, backoff_base=backoff_base
        )
        self._history = history
        self._base = config.base_url.rstrip("/")

    def __repr__(self) -> str:
        return f"OpenAIBackend(name={self.name!r}, model={self.config.model!r}, api={self._mode!r})"

    @property
    def _mode(self) -> str:
        if self.config.api == "chat":
            return "chat"
        return f"responses/{self.config.memory}"

    def new_session_id(self) -> str | None:
        if self.config.api == "chat":
            # The key of the thread's history in our store; the server never sees it.
            return uuid.uuid4().hex
        # A conversation is created at the first turn; a response chain starts with none.
        return None

    #: Photos go to the model as image parts with the text (`bridge.files`).
    takes_images = True

    # --- a turn ---------------------------------------------------------------------

    async def chat(
        self, message: str, session_id: str | None, *, context: TurnContext | None = None
    ) -> AgentReply:
        if self.config.api == "chat":
            return await self._chat_completion(message, session_id)
        if self.config.memory == "conversation" and session_id is None:
            session_id = await self._create_conversation()
        return await super().chat(message, session_id)

    def build_request(self, message: str, session_id: str | None) -> AgentRequest:
        """The Responses request (chat mode: the Chat Completions request without
        history; `chat()` adds the thread's turns)."""
        if self.config.api == "chat":
            return self._chat_request(message, ())
        body: dict[str, Any] = {
            "model": self.config.model,
            **self.config.extra,
            "input": _responses_input(message),
        }
        if self.config.system_prompt is not None:
            body["instructions"] = self.config.system_prompt
        if session_id is not None:
            key = "conversation" if self.config.memory == "conversation" else "previous_response_id"
            body[key] = session_id
        return AgentRequest(f"{self._base}/responses", body)

    def parse_reply(self, data: Any, sent_session_id: str | None) -> AgentReply:
        if self.config.api == "chat":
            return self._parse_chat(data, sent_session_id)
        if not isinstance(data, dict):
            raise ReplyFormatError(f"expected a JSON object, got {type(data).__name__}")
        text = _output_text(data)
        session_id = sent_session_id
        if self.config.memory == "previous_response_id":
            response_id = data.get("id")
            if isinstance(response_id, str) and response_id:
                session_id = response_id
            else:
                log.warning(
                    "agent %s: the response has no id; the next turn continues from the "
                    "previous one",
                    self.name,
                )
        usage = _usage(data.get("usage"), "input_tokens", "output_tokens")
        return AgentReply(text=text, session_id=session_id, usage=usage)

    async def _create_conversation(self) -> str:
        request = AgentRequest(f"{self._base}/conversations", {})
        try:
            return await self.call(request, _conversation_id, sent_session_id=None)
        except AgentNotFound:
            log.error(
                "agent %s: the server has no Conversations API (POST /conversations "
                'answered 404); set agents.%s.memory = "previous_response_id", or '
                'api = "chat"',
                self.name,
                self.name,
            )
            raise

    def _require_history(self) -> ConversationHistory:
        if self._history is None:
            raise RuntimeError(
                f'agents.{self.name}: api = "chat" keeps each thread\'s turns in the store, '
                "and this backend was made without one (create_backend(..., history=store))"
            )
        return self._history

    async def _chat_completion(self, message: str, session_id: str | None) -> AgentReply:
        history = self._require_history()
        if session_id is None:  # a call outside any thread: a history of its own
            session_id = uuid.uuid4().hex
        turns = await history.load(session_id, max_chars=self.config.history_chars)
        request = self._chat_request(message, turns)
        thread = session_id
        # The server knows no session: a 404 is the URL or the model, never our session.
        reply = await self.call(
            request, lambda data: self._parse_chat(data, thread), sent_session_id=None
        )
        await self._remember(history, session_id, message, reply.text)
        return reply

    async def _remember(
        self, history: ConversationHistory, session_id: str, message: str, answer: str
    ) -> None:
        try:
            await history.append(session_id, message, answer)
        except StorageError as exc:
            # The answer is good; failing the turn for its copy would lose it. The
            # next turns just miss this one.
            log.warning(
                "agent %s: the answer could not be added to the thread's history: %s",
                self.name,
                exc,
            )

    # --- streaming ------------------------------------------------------------------

    can_stream = True

    async def stream(
        self, message: str, session_id: str | None, *, context: TurnContext | None = None
    ) -> AsyncGenerator[AgentEvent, None]:
        if self.streams and self.config.api == "chat":
            events = self._stream_chat(message, session_id)
            async for event in self.with_fallback(events, message, session_id, context):
                yield event
            return
        if self.streams and self.config.memory == "conversation" and session_id is None:
            session_id = await self._create_conversation()
        async for event in super().stream(message, session_id, context=context):
            yield event

    def stream_request(self, message: str, session_id: str | None) -> AgentRequest:
        request = self.build_request(message, session_id)
        return AgentRequest(request.url, {**(request.json or {}), "stream": True})

    def parse_event(self, event: SseEvent, sent_session_id: str | None) -> Sequence[StreamItem]:
        data = event.json()
        if not isinstance(data, dict):
            raise ReplyFormatError(f"expected a JSON object, got {type(data).__name__}")
        kind = data.get("type") or event.event
        if kind == "response.output_text.delta":
            delta = data.get("delta")
            return [TextDelta(delta)] if isinstance(delta, str) else []
        if kind == "response.output_item.added":
            item = data.get("item")
            item_type = item.get("type") if isinstance(item, dict) else None
            if (
                isinstance(item, dict)
                and isinstance(item_type, str)
                and item_type.endswith("_call")
            ):
                name = item.get("name")
                tool = name if isinstance(name, str) and name else item_type.removesuffix("_call")
                return [StatusLine(f"Using tool: {tool}")]
            return []
        if kind in ("response.completed", "response.incomplete"):
            response = data.get("response")
            if not isinstance(response, dict):
                raise ReplyFormatError(f"{kind} without its response")
            try:
                reply = self.parse_reply(response, sent_session_id)
            except ReplyFormatError:
                # No output in the final event (some servers): the deltas are the text.
                reply = AgentReply(
                    text="",
                    session_id=self._response_session(response, sent_session_id),
                    usage=_usage(response.get("usage"), "input_tokens", "output_tokens"),
                )
            return [StreamEnd(reply.session_id, reply.usage, reply.text or None)]
        if kind in ("error", "response.failed"):
            raise self._stream_error(data, sent_session_id)
        return []

    def _response_session(self, response: dict[str, Any], sent: str | None) -> str | None:
        if self.config.memory == "previous_response_id":
            response_id = response.get("id")
            if isinstance(response_id, str) and response_id:
                return response_id
        return sent

    def _stream_error(self, data: dict[str, Any], sent_session_id: str | None) -> AgentError:
        """An error event (``{"type": "error", "code", "message"}``, or a failed
        response with its ``error``) as the status table would read its body."""
        error: Any = data
        if isinstance(data.get("response"), dict):
            error = data["response"].get("error") or {}
        elif isinstance(data.get("error"), dict):
            error = data["error"]
        if not isinstance(error, dict):
            error = {"message": str(error)}
        code, kind = error.get("code"), error.get("type")
        detail = f"error event: {code or kind}: {error.get('message')}"
        if "insufficient_quota" in (code, kind):
            return self._error(AgentInsufficientBalance, detail)
        if code in ("rate_limit_exceeded", "rate_limit_error") or kind == "rate_limit_error":
            return self._rate_limited(detail, 1.0)
        if code == "previous_response_not_found" and sent_session_id is not None:
            return self._error(AgentSessionExpired, f"session {sent_session_id}: {detail}")
        return self._error(AgentUnavailable, detail)

    async def _stream_chat(
        self, message: str, session_id: str | None
    ) -> AsyncGenerator[AgentEvent, None]:
        history = self._require_history()
        if session_id is None:
            session_id = uuid.uuid4().hex
        turns = await history.load(session_id, max_chars=self.config.history_chars)
        plain = self._chat_request(message, turns)
        body = {**(plain.json or {}), "stream": True, "stream_options": {"include_usage": True}}
        state = _ChunkState()
        thread = session_id
        events = self.stream_call(
            AgentRequest(plain.url, body),
            sent_session_id=None,  # as in chat(): the server knows no session
            parse=lambda event: self._parse_chunk(event, state),
            finish=lambda text, end: self._finish_chat(text, end, state, thread),
        )
        async for event in events:
            if isinstance(event, AgentReply):
                await self._remember(history, session_id, message, event.text)
            yield event

    def _parse_chunk(self, event: SseEvent, state: _ChunkState) -> list[StreamItem]:
        if event.data.strip() == "[DONE]":
            return [StreamEnd(usage=state.usage)]
        data = event.json()
        if not isinstance(data, dict):
            raise ReplyFormatError(f"expected a JSON object, got {type(data).__name__}")
        if "error" in data:
            raise self._stream_error(data, None)
        if isinstance(data.get("usage"), dict):
            state.usage = _usage(data["usage"], "prompt_tokens", "completion_tokens")
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return []
        if choices[0].get("finish_reason"):
            state.finished = True
        delta = choices[0].get("delta")
        content = delta.get("content") if isinstance(delta, dict) else None
        if isinstance(delta, dict) and isinstance(delta.get("refusal"), str):
            state.refusal += delta["refusal"]
        return [TextDelta(content)] if isinstance(content, str) and content else []

    def _finish_chat(
        self, text: str, end: StreamEnd | None, state: _ChunkState, thread: str
    ) -> AgentReply:
        if end is None and not state.finished:
            raise self._error(AgentUnavailable, "the stream ended before its final chunk")
        if not text.strip():
            text = state.refusal  # as chat(): a refusal beats "unreadable reply"
        usage = state.usage or Usage()
        return AgentReply(
            text=require_text(text, "streamed content"), session_id=thread, usage=usage
        )

    def _chat_request(self, message: str, turns: Sequence[HistoryTurn]) -> AgentRequest:
        messages: list[dict[str, Any]] = []
        if self.config.system_prompt is not None:
            messages.append({"role": "system", "content": self.config.system_prompt})
        for turn in turns:
            messages.append({"role": "user", "content": turn.user})
            messages.append({"role": "assistant", "content": turn.assistant})
        messages.append({"role": "user", "content": _chat_content(message)})
        body = {"model": self.config.model, **self.config.extra, "messages": messages}
        return AgentRequest(f"{self._base}/chat/completions", body)

    def _parse_chat(self, data: Any, session_id: str | None) -> AgentReply:
        if not isinstance(data, dict):
            raise ReplyFormatError(f"expected a JSON object, got {type(data).__name__}")
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise ReplyFormatError('no "choices" in the body')
        answer = choices[0].get("message")
        if not isinstance(answer, dict):
            raise ReplyFormatError('no "choices[0].message" in the body')
        content = answer.get("content")
        if isinstance(content, list):  # some servers send content parts
            content = "".join(
                p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
            )
        if not (isinstance(content, str) and content.strip()):
            # A refusal comes instead of content; showing it beats "unreadable reply".
            content = answer.get("refusal")
        text = require_text(content, '"choices[0].message.content"')
        usage = _usage(data.get("usage"), "prompt_tokens", "completion_tokens")
        return AgentReply(text=text, session_id=session_id, usage=usage)

    # --- errors -----------------------------------------------------------------------

    def classify_error(
        self, response: httpx.Response, sent_session_id: str | None
    ) -> AgentError | None:
        status = response.status_code
        error = _error_body(response)
        code, kind, param = error.get("code"), error.get("type"), error.get("param")
        detail = f"HTTP {status}: {body_excerpt(response)}"
        if status == 429 and "insufficient_quota" in (code, kind):
            # Out of credit, not busy: no Retry-After, and waiting does not help.
            return self._error(AgentInsufficientBalance, detail)
        if code == "model_not_found":
            log.error(
                "agent %s: the server does not know model %r; check agents.%s.model",
                self.name,
                self.config.model,
                self.name,
            )
            return self._error(AgentNotFound, detail)
        if sent_session_id is None or status not in (400, 404, 410):
            return None
        gone = (
            code == "previous_response_not_found"
            or param in _MEMORY_PARAMS
            # The only id in a conversation-mode request is the conversation's.
            or (status == 404 and self.config.memory == "conversation")
        )
        if gone:
            return self._error(AgentSessionExpired, f"session {sent_session_id}: {detail}")
        return None

    # --- probe ------------------------------------------------------------------------

    def probe_request(self) -> AgentRequest:
        # Lists the models: authenticated, and spends no tokens.
        return AgentRequest(f"{self._base}/models", method="GET")

    def describe_probe(self, response: httpx.Response) -> str:
        parts = urlsplit(self._base)
        where = f"openai API at {parts.hostname}" + (f":{parts.port}" if parts.port else "")
        key = "key accepted" if self._api_key is not None else "no key sent"
        try:
            data = response.json()
            models = {m["id"] for m in data["data"] if isinstance(m.get("id"), str)}
        except (ValueError, KeyError, TypeError, AttributeError):
            return f"{where}: reachable, {key} (the model list is unreadable)"
        model = self.config.model
        # Ollama lists "llama3.2:latest" for the model that "llama3.2" names.
        if model in models or f"{model}:latest" in models:
            return f"{where}: reachable, {key}, model {model} available"
        return (
            f"{where}: reachable, {key}; model {model} is not among the "
            f"{len(models)} it lists (check agents.{self.name}.model)"
        )


class _ChunkState:
    """What one Chat Completions stream has said so far besides its text."""

    def __init__(self) -> None:
        self.usage: Usage | None = None
        self.finished = False
        self.refusal = ""


def _conversation_id(data: Any) -> str:
    if isinstance(data, dict):
        return require_text(data.get("id"), 'conversation "id"')
    raise ReplyFormatError(f"expected a JSON object, got {type(data).__name__}")


def _output_text(data: dict[str, Any]) -> str:
    output = data.get("output")
    if not isinstance(output, list):
        raise ReplyFormatError('no "output" list in the body')
    texts: list[str] = []
    refusals: list[str] = []
    for item in output:
        # Reasoning, tool calls and the like are other item types: not the answer.
        if not isinstance(item, dict) or item.get("type") != "message":
            continue
        content = item.get("content")
        for part in content if isinstance(content, list) else []:
            if not isinstance(part, dict):
                continue
            if part.get("type") == "output_text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif part.get("type") == "refusal" and isinstance(part.get("refusal"), str):
                refusals.append(part["refusal"])
    text = "".join(texts)
    if not text.strip():
        text = "".join(refusals)  # showing a refusal beats "unreadable reply"
    status = data.get("status")
    return require_text(text, f"output_text in the response (status {status})")


def _responses_input(message: str) -> str | list[dict[str, Any]]:
    """The Responses ``input``: the text, or with images one user message of
    ``input_text`` and ``input_image`` parts (data URLs)."""
    images = images_of(message)
    if not images:
        return str(message)
    parts: list[dict[str, Any]] = [{"type": "input_text", "text": str(message)}]
    parts += [{"type": "input_image", "image_url": image.data_url} for image in images]
    return [{"role": "user", "content": parts}]


def _chat_content(message: str) -> str | list[dict[str, Any]]:
    """A Chat Completions user message's ``content``: the text, or text and
    ``image_url`` parts."""
    images = images_of(message)
    if not images:
        return str(message)
    parts: list[dict[str, Any]] = [{"type": "text", "text": str(message)}]
    parts += [{"type": "image_url", "image_url": {"url": image.data_url}} for image in images]
    return parts


def _error_body(response: httpx.Response) -> dict[str, Any]:
    """OpenAI's ``{"error": {...}}``, or ``{}`` when the body is something else."""
    try:
        data = response.json()
    except ValueError:
        return {}
    error = data.get("error") if isinstance(data, dict) else None
    return error if isinstance(error, dict) else {}


def _usage(usage: object, tokens_in_key: str, tokens_out_key: str) -> Usage:
    if not isinstance(usage, dict):
        return Usage()
    tokens_in = _count(usage.get(tokens_in_key))
    tokens_out = _count(usage.get(tokens_out_key))
    total = _count(usage.get("total_tokens")) or tokens_in + tokens_out
    return Usage(input_tokens=tokens_in, output_tokens=tokens_out, total_tokens=total)


def _count(value: object) -> int:
    # Token counts are informative: a missing or odd value counts as 0, not a bad reply.
    if isinstance(value, bool):
        return 0
    if isinstance(value, int | float) and value >= 0:
        return int(value)
    return 0
