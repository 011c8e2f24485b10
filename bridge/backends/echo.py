"""`EchoBackend`: answers with the user's own text, offline.

For trying the bridge out before any agent is configured (the embedded default
config uses it) and for tests. No HTTP, no key, no tokens.
"""

from __future__ import annotations

from bridge.backends.base import AgentBackend
from bridge.model import AgentReply, TurnContext, Usage


class EchoBackend(AgentBackend):
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"EchoBackend(name={self.name!r})"

    async def chat(
        self, message: str, session_id: str | None, *, context: TurnContext | None = None
    ) -> AgentReply:
        # The session id goes back as it came, so a conversation keeps whatever it had.
        return AgentReply(text=message, session_id=session_id, usage=Usage())

    async def probe(self) -> str:
        return "echo agent (offline)"
