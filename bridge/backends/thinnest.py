"""`ThinnestBackend`: the thinnest.ai agent chat API.

``POST {base_url}/v1/agents/{agent_id}/chat`` with ``{"message", "session_id"?}``;
omitting ``session_id`` starts a session, whose id the answer names:
``{"response", "session_id", "usage": {"input_tokens", "output_tokens",
"total_tokens"}}``. Older deployments send ``"tokens_used": <int>`` instead of
``usage`` (docs.thinnest.ai, api-reference/agents/chat).

Streaming (``stream = true``): ``POST {base_url}/chat/stream`` (at the base, not
under ``/v1/agents``) with ``{"agent_id", "message", "session_id"}``; Server-Sent
Events whose JSON data has a ``type``. The docs name the text deltas ``text``,
``token`` and ``content`` in different places, and the text's field likewise:
each is accepted. ``tool_call`` / ``tool_result`` name a tool (shown as
"Using tool: NAME"); ``done`` carries ``session_id`` and ``usage``; ``error``
carries ``message``, which is all there is to classify it by: a message that
speaks of balance or credit is `AgentInsufficientBalance`, of a rate limit
`AgentRateLimited`, anything else `AgentUnavailable`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import httpx

from bridge.backends.base import (
    AgentRequest,
    ReplyFormatError,
    StreamEnd,
    StreamItem,
    require_text,
)
from bridge.backends.http import HttpAgentBackend
from bridge.backends.sse import SseEvent
from bridge.config import ThinnestAgentConfig
from bridge.errors import AgentError, AgentInsufficientBalance, AgentUnavailable
from bridge.model import AgentReply, Usage
from bridge.stream import StatusLine, TextDelta

#: The event types that carry a piece of the answer, and the fields that may hold it.
_TEXT_TYPES = frozenset({"text", "token", "content"})
_TEXT_FIELDS = ("content", "text", "token", "delta")
_TOOL_TYPES = frozenset({"tool_call", "tool_result"})
# How an error event's message is classified (it has no code).
_BALANCE_WORDS = re.compile(r"balance|credit|quota|payment", re.IGNORECASE)
_RATE_WORDS = re.compile(r"\brate\b|rate.?limit|too many requests", re.IGNORECASE)


class ThinnestBackend(HttpAgentBackend[ThinnestAgentConfig]):
    kind = "thinnest"

    @property
    def agent_id(self) -> str:
        return self.config.agent_id

    @property
    def _agent_url(self) -> str:
        base = self.config.base_url.rstrip("/")
        return f"{base}/v1/agents/{quote(self.config.agent_id, safe='')}"

    def __repr__(self) -> str:
        return f"ThinnestBackend(name={self.name!r}, agent_id={self.agent_id!r})"

    def build_request(self, message: str, session_id: str | None) -> AgentRequest:
        body: dict[str, Any] = {"message": message}
        if session_id is not None:
            body["session_id"] = session_id
        return AgentRequest(f"{self._agent_url}/chat", body)

    def parse_reply(self, data: Any, sent_session_id: str | None) -> AgentReply:
        if not isinstance(data, dict):
            raise ReplyFormatError(f"expected a JSON object, got {type(data).__name__}")
        text = require_text(data.get("response"), '"response" text')
        session_id = data.get("session_id")
        if not isinstance(session_id, str) or not session_id:
            session_id = sent_session_id
        return AgentReply(text=text, session_id=session_id, usage=_usage(data))

    # --- streaming ------------------------------------------------------------------

    can_stream = True

    def stream_request(self, message: str, session_id: str | None) -> AgentRequest:
        body: dict[str, Any] = {"agent_id": self.config.agent_id, "message": message}
        if session_id is not None:
            body["session_id"] = session_id
        return AgentRequest(f"{self.config.base_url.rstrip('/')}/chat/stream", body)

    def parse_event(self, event: SseEvent, sent_session_id: str | None) -> Sequence[StreamItem]:
        data = event.json()
        if not isinstance(data, dict):
            raise ReplyFormatError(f"expected a JSON object, got {type(data).__name__}")
        kind = data.get("type") or event.event
        if kind in _TEXT_TYPES:
            text = next((data[k] for k in _TEXT_FIELDS if isinstance(data.get(k), str)), "")
            return [TextDelta(text)]
        if kind in _TOOL_TYPES:
            tool = data.get("name") or data.get("tool") or data.get("tool_name")
            if isinstance(tool, dict):
                tool = tool.get("name")
            return [StatusLine(f"Using tool: {tool}")] if isinstance(tool, str) and tool else []
        if kind == "done":
            session_id = data.get("session_id")
            final = data.get("response")
            return [
                StreamEnd(
                    session_id=session_id if isinstance(session_id, str) and session_id else None,
                    usage=_usage(data),
                    text=final if isinstance(final, str) and final.strip() else None,
                )
            ]
        if kind == "error":
            raise self._stream_error(data)
        return []  # heartbeats, metadata and types of a newer API

    def _stream_error(self, data: dict[str, Any]) -> AgentError:
        message = data.get("message") or data.get("error") or data.get("detail")
        text = message if isinstance(message, str) else str(message)
        detail = f"error event: {text}"
        if _BALANCE_WORDS.search(text):
            return self._error(AgentInsufficientBalance, detail)
        if _RATE_WORDS.search(text):
            delay = data.get("retry_after")
            seconds = float(delay) if isinstance(delay, int | float) and delay > 0 else 1.0
            return self._rate_limited(detail, seconds)
        return self._error(AgentUnavailable, detail)

    # --- probe -----------------------------------------------------------------------

    def probe_request(self) -> AgentRequest:
        return AgentRequest(self._agent_url, method="GET")

    def describe_probe(self, response: httpx.Response) -> str:
        return f"thinnest agent {self.agent_id}: reachable, key accepted"


def _usage(data: dict[str, Any]) -> Usage:
    usage = data.get("usage")
    if isinstance(usage, dict):
        tokens_in = _count(usage.get("input_tokens"))
        tokens_out = _count(usage.get("output_tokens"))
        total = _count(usage.get("total_tokens")) or tokens_in + tokens_out
        return Usage(input_tokens=tokens_in, output_tokens=tokens_out, total_tokens=total)
    # The older API: one number for the turn, without a split.
    return Usage(total_tokens=_count(data.get("tokens_used")))


def _count(value: object) -> int:
    # Token counts are informative: a missing or odd value counts as 0, not a bad reply.
    if isinstance(value, bool):
        return 0
    if isinstance(value, int | float) and value >= 0:
        return int(value)
    return 0
