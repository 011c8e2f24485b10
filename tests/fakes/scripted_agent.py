"""`ScriptedAgent`: a streaming `AgentBackend` that plays scripts, for the delivery side
of streamed answers (the dispatcher, the Telegram drafts, the Slack streams).

A script is a list of steps: a ``str`` is a `TextDelta`, a `StatusLine` is yielded as
is, an `asyncio.Event` holds the stream until the test sets it, an `AgentError` is
raised there (mid-stream). The stream then ends with an `AgentReply` whose text is
``final`` (default: the deltas joined). Tests hold the stream with the events and wait
for the fake platform's calls: no sleeps.

`open_scripted_core` opens the real store, instance and dispatcher (as
`bridge.app.open_core` does) with this backend as every configured agent.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from bridge.app import Core
from bridge.backends import create_http_client
from bridge.backends.base import AgentBackend
from bridge.config import Config
from bridge.dispatcher import Dispatcher
from bridge.errors import AgentError, AgentInsufficientBalance
from bridge.instance import Instance
from bridge.metrics import Metrics
from bridge.model import AgentReply, TurnContext, Usage
from bridge.stream import AgentEvent, StatusLine, TextDelta
from storage.store import Store

Step = str | StatusLine | asyncio.Event | AgentError


@dataclass
class Script:
    steps: Sequence[Step]
    final: str | None = None


@dataclass
class ScriptedAgent(AgentBackend):
    """Plays ``scripts`` in order, one per turn (the last one again when they run out)."""

    name: str = "default"
    scripts: list[Script] = field(default_factory=list)
    streaming: bool = True
    #: The messages the agent was asked, in order.
    asked: list[str] = field(default_factory=list)
    #: Set when a turn began (cleared by the test if it wants the next one).
    began: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def streams(self) -> bool:
        return self.streaming

    async def probe(self) -> str:
        return "scripted"

    def play(self, *steps: Step, final: str | None = None) -> None:
        self.scripts.append(Script(steps, final))

    def _next(self) -> Script:
        return self.scripts.pop(0) if len(self.scripts) > 1 else self.scripts[0]

    async def chat(
        self, message: str, session_id: str | None, *, context: TurnContext | None = None
    ) -> AgentReply:
        reply: AgentReply | None = None
        async for event in self.stream(message, session_id, context=context):
            if isinstance(event, AgentReply):
                reply = event
        assert reply is not None
        return reply

    async def stream(
        self, message: str, session_id: str | None, *, context: TurnContext | None = None
    ) -> AsyncIterator[AgentEvent]:
        self.asked.append(message)
        self.began.set()
        script = self._next()
        text = ""
        for step in script.steps:
            if isinstance(step, asyncio.Event):
                await step.wait()
            elif isinstance(step, AgentError):
                raise step
            elif isinstance(step, StatusLine):
                yield step
            else:
                text += step
                yield TextDelta(step)
        yield AgentReply(
            script.final if script.final is not None else text,
            session_id or "session-1",
            Usage(input_tokens=1, output_tokens=1, total_tokens=2),
        )


def out_of_credit() -> AgentInsufficientBalance:
    return AgentInsufficientBalance(
        "402 Payment Required", user_message="The agent is out of credit.", agent="default"
    )


@contextlib.asynccontextmanager
async def open_scripted_core(config: Config, agent: ScriptedAgent) -> AsyncIterator[Core]:
    """The core of `bridge.app.open_core`, with ``agent`` as every configured agent."""
    metrics = Metrics()
    async with contextlib.AsyncExitStack() as stack:
        store = await stack.enter_async_context(Store(config.storage.url))
        instance = await stack.enter_async_context(
            Instance(store, lease_timeout=config.storage.lease_timeout)
        )
        http = await stack.enter_async_context(create_http_client())
        backends = dict.fromkeys(config.agents, agent)
        dispatcher = await stack.enter_async_context(
            Dispatcher(
                store,
                backends,
                config.dispatcher,
                config.messages,
                instance=instance,
                metrics=metrics,
                retention_days=config.storage.retention_days,
                poll_interval=config.storage.poll_interval,
            )
        )
        yield Core(config, store, http, backends, dispatcher, metrics, instance)
