"""`ChatAdapter`: the one base class every chat platform implements (a port of the
core: the dispatcher calls it; `adapters/` implements it).

An adapter owns its platform connection. It turns platform events into
`IncomingMessage`s and hands them to `Dispatcher.submit()` (which commits them
to the store before returning, so the adapter may then acknowledge the event
to the platform), and it posts the `Reply`s the dispatcher gives it.

Lifecycle, owned by one lifespan (``async with adapter:``): ``start()``
connects and raises `AdapterError` with the platform's reason when it cannot
(bad token...); ``stop()`` disconnects and is safe to call after a failed
start.

Example::

    class ConsoleAdapter(ChatAdapter):
        platform = "console"

        async def start(self) -> None: ...
        async def stop(self) -> None: ...
        async def send_reply(self, message: InboxMessage, reply: Reply) -> None:
            print(reply.text)
"""

from __future__ import annotations

import contextlib
import enum
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from types import TracebackType
from typing import TYPE_CHECKING, ClassVar, Self

from bridge.model import InboxMessage, Reply

if TYPE_CHECKING:
    from bridge.dispatcher import Dispatcher


class AdapterState(enum.StrEnum):
    STOPPED = "stopped"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"  # lost the connection; reconnecting


class ChatAdapter(ABC):
    #: The platform name used in conversation keys, logs and metrics.
    platform: ClassVar[str]

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        self.state = AdapterState.STOPPED

    @abstractmethod
    async def start(self) -> None:
        """Connect; raise `AdapterError` with the platform's reason on failure."""

    @abstractmethod
    async def stop(self) -> None:
        """Disconnect; stop taking new events. Safe after a failed start."""

    @abstractmethod
    async def send_reply(self, message: InboxMessage, reply: Reply) -> None:
        """Post ``reply`` (Markdown) in answer to ``message``, where it was asked.

        Raise `AdapterError` if it could not be delivered after the platform's
        own retries; the dispatcher keeps the reply and tries again later.
        """

    @contextlib.asynccontextmanager
    async def working(self, message: InboxMessage) -> AsyncIterator[None]:
        """Shows the user that the agent works on ``message`` (typing action,
        a reaction...) for as long as the context is open. Default: nothing."""
        yield

    async def check(self) -> str:
        """Check the credentials live (e.g. ``auth.test``); return a one-line
        description of the identity, raise `AdapterError` with the reason."""
        return "no live check"

    @property
    def healthy(self) -> bool:
        return self.state is AdapterState.CONNECTED

    @property
    def problem(self) -> str | None:
        """What users would feel beyond the connection state (polling stuck, a
        conflicting poller...), in a few words for ``/healthz``; None when all is well."""
        return None

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
