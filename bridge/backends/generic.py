"""`GenericHttpBackend`: any agent with an HTTP chat API, described by data.

The config (`bridge.config.HttpAgentConfig`, with or without a preset) says
what to send and where the answer is; this module only fills the template in
and reads the reply with the config's compiled JMESPath expressions. The base
class does the call, the retries and the status table as for every backend.

Sessions. ``session = "client"``: `new_session_id()` makes an id per chat
thread and the store keeps it; it is sent every turn and is also the thread's
``{conversation}``. ``session = "server"``: the first turn sends
``first_session`` and the reply names the session (``session_path``); the
store keeps the latest. When the template also uses ``{conversation}`` (Dify's
``user``), that needs a value stable across the thread's turns before the
server has named anything, so the bridge makes one on the first turn and
stores it with the server's id as ``t<32 hex>:<server id>``; the
``{session_id}`` sent is only the server's part.

Turn context. ``{user_id}`` and ``{user_name}`` come from the optional
``context`` of `chat()` (empty until the dispatcher passes one).

Streaming. With ``reply_format = "sse"`` and ``stream = true``, `stream()` sends
the same request and reads the event stream as it comes: each JSON event is
looked at alone, as ``{"events": [event]}``; ``error_code_path`` on it raises the
mapped error at once (after the deltas already yielded), and ``answer_path`` on
it is the event's `TextDelta` (Dify's path joins the ``message``/``agent_message``
chunks, so one event gives its own chunk). The final reply is read from all the
events together, exactly as `chat()` reads the whole body: the same text,
session and usage. Without ``reply_format = "sse"`` nothing streams.

Each turn's state (the thread id made when the request is built, needed again
when the reply is read) is a `_Call` passed from one step to the next, never
stored on the backend: one backend serves many threads at once.

Example::

    backend = GenericHttpBackend("dify", config, messages=messages, client=client)
    reply = await backend.chat("hello", backend.new_session_id())
    again = await backend.chat("and then?", reply.session_id)
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from jmespath.exceptions import JMESPathError

from bridge.backends.base import (
    BACKOFF_BASE,
    AgentRequest,
    ReplyFormatError,
    Sleep,
    StreamItem,
    body_excerpt,
    require_text,
    retry_delay,
)
from bridge.backends.http import HttpAgentBackend
from bridge.backends.presets import SESSION_HINTS
from bridge.backends.sse import SseEvent
from bridge.config import HttpAgentConfig, MessagesConfig
from bridge.config.agent_http import TURN_PLACEHOLDERS, expand_url, render
from bridge.errors import (
    AgentError,
    AgentInsufficientBalance,
    AgentNotFound,
    AgentSessionExpired,
    AgentUnauthorized,
    AgentUnavailable,
)
from bridge.model import AgentReply, TurnContext, Usage
from bridge.stream import AgentEvent, TextDelta

log = logging.getLogger("bridge.backends")

#: Shown instead of every secret header value.
REDACTED = "***"

# A stored server-mode session that carries the bridge's own thread id.
_THREAD_SESSION = re.compile(r"^(t[0-9a-f]{32}):(.*)$", re.DOTALL)

_KINDS: dict[str, type[AgentError]] = {
    "balance": AgentInsufficientBalance,
    "auth": AgentUnauthorized,
    "not_found": AgentNotFound,
    "unavailable": AgentUnavailable,
    "session_gone": AgentSessionExpired,
}


@dataclass(slots=True)
class _Call:
    """The state of one turn (`chat()` or `stream()`), from building its request to
    reading its reply: who asks, and the thread id the request was built with."""

    context: TurnContext
    thread: str = ""


def split_session(session_id: str | None) -> tuple[str | None, str | None]:
    """A stored session as (thread id, server session id); either may be None."""
    if session_id is None:
        return None, None
    match = _THREAD_SESSION.match(session_id)
    if match is None:
        return None, session_id
    return match.group(1), match.group(2) or None


def _new_thread() -> str:
    return f"t{uuid.uuid4().hex}"


class GenericHttpBackend(HttpAgentBackend[HttpAgentConfig]):
    kind = "http"

    def __init__(
        self,
        name: str,
        config: HttpAgentConfig,
        *,
        messages: MessagesConfig,
        client: httpx.AsyncClient,
        sleep: Sleep = asyncio.sleep,
        backoff_base: float = BACKOFF_BASE,
    ) -> None:
        super().__init__(
            name, config, messages=messages, client=client, sleep=sleep, backoff_base=backoff_base
        )
        self.kind = config.preset or "http"
        used = config.body_placeholders()
        self._thread_in_session = config.session == "server" and "conversation" in used
        self._warned_session = False
        # Only an event stream can be passed on as it comes.
        self.can_stream = config.reply_format == "sse"

    def __repr__(self) -> str:
        return f"GenericHttpBackend(name={self.name!r}, preset={self.config.preset!r})"

    # --- sessions -----------------------------------------------------------------------

    def new_session_id(self) -> str | None:
        # Server mode: None, so that a first turn sends no session as far as the base
        # class's error table is concerned (a 404 then is the agent, not a session).
        return str(uuid.uuid4()) if self.config.session == "client" else None

    async def chat(
        self, message: str, session_id: str | None, *, context: TurnContext | None = None
    ) -> AgentReply:
        call = _Call(context or TurnContext())
        request = self._build_request(message, session_id, call)
        log.debug("agent %s: sending %r (session %s)", self.name, message, session_id)
        reply = await self.call(
            request,
            lambda data: self._parse_reply(data, session_id, call),
            sent_session_id=session_id,
        )
        log.debug("agent %s: reply %r (session %s)", self.name, reply.text, reply.session_id)
        return reply

    # --- streaming ----------------------------------------------------------------------

    #: The stream has no final event of its own: it is complete when the body ends.
    stream_needs_end = False

    async def stream(
        self, message: str, session_id: str | None, *, context: TurnContext | None = None
    ) -> AsyncGenerator[AgentEvent, None]:
        if not self.streams:
            async for event in super().stream(message, session_id, context=context):
                yield event
            return
        call = _Call(context or TurnContext())
        request = self._build_request(message, session_id, call)
        log.debug("agent %s: streaming %r (session %s)", self.name, message, session_id)
        seen: list[Any] = []  # this stream's JSON events so far, for the final reply
        events = self.stream_call(
            request,
            sent_session_id=session_id,
            parse=lambda event: self._parse_event(event, session_id, seen),
            finish=lambda _text, _end: self._parse_reply({"events": seen}, session_id, call),
        )
        async for event in self.with_fallback(events, message, session_id, context):
            yield event

    def stream_request(self, message: str, session_id: str | None) -> AgentRequest:
        # The same request: an SSE agent always answers with the event stream.
        return self.build_request(message, session_id)

    def parse_event(self, event: SseEvent, sent_session_id: str | None) -> Sequence[StreamItem]:
        return self._parse_event(event, sent_session_id, [])

    def _parse_event(
        self, event: SseEvent, sent_session_id: str | None, seen: list[Any]
    ) -> list[StreamItem]:
        try:
            data = event.json()
        except ValueError:
            return []  # not JSON ("[DONE]" and the like): skipped, as `parse_sse` does
        seen.append(data)
        alone = {"events": [data]}
        code = self._search("error_code_path", alone)
        mapped = self._mapped_error(None, code, sent_session_id)
        if mapped is not None:
            raise mapped  # Dify's error event, after the chunks already passed on
        answer = self._search("answer_path", alone)
        return [TextDelta(answer)] if isinstance(answer, str) and answer else []

    # --- the request --------------------------------------------------------------------

    def turn_values(
        self, message: str, session_id: str | None, call: _Call | None = None
    ) -> dict[str, str]:
        """What each placeholder stands for in this turn (``call`` keeps the thread
        id made here for reading the reply; none: a turn of its own)."""
        call = call if call is not None else _Call(TurnContext())
        config = self.config
        if config.session == "client":
            own = session_id or call.thread or str(uuid.uuid4())
            call.thread = own
            sent, conversation = own, own
        else:
            thread, server = split_session(session_id)
            if self._thread_in_session and thread is None:
                thread = call.thread or _new_thread()
            call.thread = thread or ""
            sent = server or config.first_session
            conversation = thread or server or ""
        return {
            "message": message,
            "session_id": sent,
            "conversation": conversation,
            "user_id": call.context.user_id,
            "user_name": call.context.user_name,
        }

    def build_request(self, message: str, session_id: str | None) -> AgentRequest:
        return self._build_request(message, session_id, _Call(TurnContext()))

    def _build_request(self, message: str, session_id: str | None, call: _Call) -> AgentRequest:
        values = self.turn_values(message, session_id, call)
        config = self.config
        url = expand_url(
            config.url,
            base_url=config.base_url,
            base_path=config.base_path,
            params=config.params,
            turn=values,
        )
        headers = {name: secret.get_secret_value() for name, secret in config.headers.items()}
        if config.reply_format == "sse":
            headers.setdefault("Accept", "text/event-stream")
        return AgentRequest(url, _fill(config.body, values), config.method, headers)

    def auth_headers(self) -> dict[str, str]:
        config = self.config
        if config.api_key is None:
            return {}
        key = config.api_key.get_secret_value()
        if config.auth == "basic":
            return {"Authorization": "Basic " + base64.b64encode(key.encode()).decode("ascii")}
        if config.auth == "header":
            return {config.auth_header: key}
        return {"Authorization": f"Bearer {key}"}

    # --- the reply ----------------------------------------------------------------------

    def parse_body(self, response: httpx.Response) -> Any:
        if self.config.reply_format == "sse":
            return {"events": parse_sse(response.text)}
        return response.json()

    def parse_reply(self, data: Any, sent_session_id: str | None) -> AgentReply:
        return self._parse_reply(data, sent_session_id, _Call(TurnContext()))

    def _parse_reply(self, data: Any, sent_session_id: str | None, call: _Call) -> AgentReply:
        config = self.config
        mapped = self._mapped_error(None, self._search("error_code_path", data), sent_session_id)
        if mapped is not None:
            raise mapped  # a 2xx that says it failed (Dify's error event)
        answer = self._search("answer_path", data)
        if not isinstance(answer, str):
            shown = "nothing" if answer is None else f"a {type(answer).__name__}"
            raise ReplyFormatError(f"answer_path {config.answer_path!r} found {shown}, not text")
        text = require_text(answer, f"answer at answer_path {config.answer_path!r}")
        return AgentReply(
            text=text,
            session_id=self._reply_session(data, sent_session_id, call),
            usage=_usage(self._search("usage_path", data)),
        )

    def _search(self, key: str, data: Any) -> Any:
        expression = self.config.expression(key)
        if expression is None:
            return None
        try:
            return expression.search(data)
        except JMESPathError as exc:  # e.g. join() over something that is not text
            raise ReplyFormatError(f"{key}: {exc}") from exc

    def _reply_session(self, data: Any, sent_session_id: str | None, call: _Call) -> str | None:
        config = self.config
        named = self._search("session_path", data)
        named = str(named) if isinstance(named, str | int) and str(named) else None
        if config.session == "client":
            own = call.thread or sent_session_id
            if named is not None and own is not None and named != own:
                self._warn_session(named, own)
            # Ours either way: a changed id means the agent ignores it, and keeping
            # ours keeps the thread's key stable for when it is fixed.
            return own
        _, sent_server = split_session(sent_session_id)
        server = named or sent_server
        if self._thread_in_session:
            return f"{call.thread}:{server or ''}"
        return server

    def _warn_session(self, named: str, sent: str) -> None:
        if self._warned_session:
            return
        self._warned_session = True
        hint = SESSION_HINTS.get(self.config.preset or "", "")
        log.warning(
            "agent %s: the reply names session %r, not the %r the bridge sent: the agent "
            "does not keep this thread's memory%s (said once)",
            self.name,
            named,
            sent,
            f"; {hint}" if hint else "",
        )

    # --- errors -------------------------------------------------------------------------

    def classify_error(
        self, response: httpx.Response, sent_session_id: str | None
    ) -> AgentError | None:
        try:
            data = response.json()
        except ValueError:
            data = None
        try:
            code = self._search("error_code_path", data)
        except ReplyFormatError:
            code = None
        return self._mapped_error(response, code, sent_session_id)

    def _mapped_error(
        self, response: httpx.Response | None, code: Any, sent_session_id: str | None
    ) -> AgentError | None:
        errors = self.config.errors
        if not errors:
            return None
        status = str(response.status_code) if response is not None else None
        code_text = str(code) if isinstance(code, str | int) and str(code) else None
        keys: list[str] = []
        if code_text is not None:
            if status is not None:
                keys.append(f"{status}:{code_text}")
            keys.append(f"*:{code_text}")
        if status is not None:
            keys.append(status)
        kind = next((errors[k] for k in keys if k in errors), None)
        if kind is None:
            return None
        detail = _detail(response, code_text)
        if kind == "session_gone":
            _, server = split_session(sent_session_id)
            sent = server if self.config.session == "server" else sent_session_id
            if not sent:
                # No session was sent, so none can be gone: the status table decides
                # (a 404 on a first turn is a wrong URL or id).
                return None
            return self._error(AgentSessionExpired, f"session {sent}: {detail}")
        if kind == "rate_limit":
            delay = retry_delay(response.headers) if response is not None else None
            return self._rate_limited(detail, delay if delay is not None else 1.0)
        if kind == "auth":
            log.error(
                "agent %s: the API refused the credentials (%s); check agents.%s.api_key "
                "or its headers",
                self.name,
                detail,
                self.name,
            )
        return self._error(_KINDS[kind], detail)

    # --- probe --------------------------------------------------------------------------

    def probe_request(self) -> AgentRequest:
        config = self.config
        template = config.probe_url or config.url
        values = dict.fromkeys(TURN_PLACEHOLDERS, "")
        url = expand_url(
            template,
            base_url=config.base_url,
            base_path=config.base_path,
            params=config.params,
            turn=values,
        )
        return AgentRequest(url, method="GET")

    async def probe(self) -> str:
        if self.config.probe_checks_key:
            return await super().probe()
        # No free call of this API proves the key: any HTTP answer below 500 shows the
        # agent's address is right, and that is all this says.
        request = self.probe_request()
        started = time.monotonic()
        try:
            response = await self._send(request, min(self.timeout, 15.0))
        except httpx.HTTPError as exc:
            error = self._transport_error(exc)
            raise getattr(error, "error", error) from exc
        self._log_attempt(1, f"probe {response.status_code}", started)
        if response.status_code >= 500:
            raise self._error(AgentUnavailable, f"probe: HTTP {response.status_code}")
        return (
            f"{self.kind} agent reachable (probe answered HTTP {response.status_code}); the key "
            f"is not verified without spending a turn: check --probe {self.name} sends one"
        )


def _fill(node: Any, values: dict[str, str]) -> Any:
    if isinstance(node, str):
        return render(node, values)
    if isinstance(node, dict):
        return {key: _fill(value, values) for key, value in node.items()}
    if isinstance(node, list):
        return [_fill(item, values) for item in node]
    return node


def parse_sse(text: str) -> list[Any]:
    """The JSON ``data:`` payloads of an event stream, in order. Comments, other
    fields (``event: ping``) and data that is not JSON (``[DONE]``) are skipped;
    multi-line data is joined as the SSE spec says."""
    events: list[Any] = []
    data: list[str] = []

    def flush() -> None:
        if data:
            # Not JSON ("[DONE]" and the like): not an event of ours.
            with contextlib.suppress(ValueError):
                events.append(json.loads("\n".join(data)))
            data.clear()

    for line in text.splitlines():
        if not line:
            flush()
        elif line.startswith("data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(" ") else value)
    flush()
    if not events and text.strip():
        raise ValueError("no JSON data in the event stream")
    return events


def _usage(value: Any) -> Usage:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return Usage(total_tokens=_count(value))
    if not isinstance(value, dict):
        return Usage()
    tokens_in = _count(value.get("input_tokens", value.get("prompt_tokens")))
    tokens_out = _count(value.get("output_tokens", value.get("completion_tokens")))
    total = _count(value.get("total_tokens")) or tokens_in + tokens_out
    return Usage(input_tokens=tokens_in, output_tokens=tokens_out, total_tokens=total)


def _count(value: object) -> int:
    # Token counts are informative: an odd value counts as 0, not as a bad reply.
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return 0
    return int(value)


def _detail(response: httpx.Response | None, code: str | None) -> str:
    where = f"HTTP {response.status_code}" if response is not None else "reply"
    what = f" ({code})" if code else ""
    excerpt = body_excerpt(response) if response is not None else ""
    return f"{where}{what}: {excerpt}" if excerpt else f"{where}{what}"


def request_summary(config: HttpAgentConfig) -> list[str]:
    """What `check` shows of an http agent: the request as it goes out, with
    ``{placeholders}`` left in and every credential replaced by ``***``."""
    url = expand_url(
        config.url,
        base_url=config.base_url,
        base_path=config.base_path,
        params=config.params,
        turn={name: f"{{{name}}}" for name in TURN_PLACEHOLDERS},
    )
    headers: list[str] = []
    if config.api_key is not None:
        if config.auth == "bearer":
            headers.append(f"Authorization: Bearer {REDACTED}")
        elif config.auth == "basic":
            headers.append(f"Authorization: Basic {REDACTED}")
        else:
            headers.append(f"{config.auth_header}: {REDACTED}")
    headers.extend(f"{name}: {REDACTED}" for name in config.headers)
    lines = [
        f"request: {config.method} {url}",
        f"headers: {', '.join(headers) if headers else '(none: no credentials sent)'}",
        f"body: {json.dumps(config.body, ensure_ascii=False)}",
        f"reply: {config.reply_format}, answer {config.answer_path}",
    ]
    if config.session == "client":
        session = "client (one id per thread, made by the bridge)"
    else:
        session = f"server (from {config.session_path}; first turn sends {config.first_session!r})"
    lines.append(f"session: {session}")
    if config.usage_path:
        lines.append(f"usage: {config.usage_path}")
    if config.errors:
        rows = ", ".join(f"{key} -> {kind}" for key, kind in config.errors.items())
        via = f" (code from {config.error_code_path})" if config.error_code_path else ""
        lines.append(f"errors: {rows}{via}")
    probe_url = expand_url(
        config.probe_url or config.url,
        base_url=config.base_url,
        base_path=config.base_path,
        params=config.params,
        turn=dict.fromkeys(TURN_PLACEHOLDERS, ""),
    )
    checks = "checks the key" if config.probe_checks_key else "reachability only"
    lines.append(f"probe: GET {probe_url} ({checks})")
    return lines
