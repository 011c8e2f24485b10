"""`ThinnestBackend`: the thinnest.ai agent chat API.

``POST {base_url}/v1/agents/{agent_id}/chat`` with ``{"message", "session_id"?}``;
omitting ``session_id`` starts a session, whose id the answer names:
``{"response", "session_id", "usage": {"input_tokens", "output_tokens",
"total_tokens"}}``. Older deployments send ``"tokens_used": <int>`` instead of
``usage`` (docs.thinnest.ai, api-reference/agents/chat).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from bridge.backends.base import (
    AgentRequest,
    HttpAgentBackend,
    ReplyFormatError,
    require_text,
)
from bridge.config import ThinnestAgentConfig
from bridge.model import AgentReply, Usage


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
