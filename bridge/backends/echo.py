"""`EchoBackend`: answers with the user's own text, offline.

For trying the bridge out before any agent is configured (the embedded default
config uses it) and for tests. No HTTP, no key, no tokens. With ``stream = true``
it streams the echo word by word, to try a live answer out offline.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator

from bridge.backends.base import AgentBackend
from bridge.model import AgentReply, TurnContext, Usage
from bridge.stream import AgentEvent, TextDelta


class EchoBackend(AgentBackend):
    def __init__(self, name: str, *, stream: bool = False) -> None:
        self.name = name
        self._stream = stream

    @property
    def streams(self) -> bool:
        return self._stream

    async def stream(
        self, message: str, session_id: str | None, *, context: TurnContext | None = None
    ) -> AsyncGenerator[AgentEvent, None]:
        reply = await self.chat(message, session_id, context=context)
        for word in re.findall(r"\S+\s*|\s+", reply.text):
            yield TextDelta(word)
        yield reply

    def __repr__(self) -> str:
        return f"EchoBackend(name={self.name!r})"

    async def chat(
        self, message: str, session_id: str | None, *, context: TurnContext | None = None
    ) -> AgentReply:
        # The session id goes back as it came, so a conversation keeps whatever it had.
        return AgentReply(text=message, session_id=session_id, usage=Usage())

    async def probe(self) -> str:
        return "echo agent (offline)"
