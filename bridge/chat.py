"""`ChatAdapter`: the one base class every chat platform implements (a port of the
core: the dispatcher calls it; `adapters/` implements it).

An adapter owns its platform connection. It turns platform events into
`IncomingMessage`s and hands them to `Dispatcher.submit()` (which commits them
to the store before returning, so the adapter may then acknowledge the event
to the platform), and it posts the `Reply`s the dispatcher gives it.

Lifecycle, owned by one lifespan (``async with adapter:``): ``start()``
connects and raises `AdapterError` with the platform's reason when it cannot:
`CredentialsRejected` when the platform refused a token (no retry can help),
any other `AdapterError` when it may pass (network, 5xx: the daemon starts it
again later, on the same object); ``stop()`` disconnects and is safe to call
after a failed start. ``reload()`` takes a re-read config section while
connected (SIGHUP), for the keys named in ``reloadable``.

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
from collections.abc import AsyncGenerator, AsyncIterator
from types import TracebackType
from typing import TYPE_CHECKING, ClassVar, Self

from bridge.attachments import Attachment
from bridge.errors import AdapterError, AttachmentError
from bridge.model import InboxMessage, Reply

if TYPE_CHECKING:
    from bridge.dispatcher import Dispatcher
    from bridge.stream import LiveAnswer

#: The key of ``InboxMessage.meta`` where the dispatcher keeps the platform's id of
#: an answer shown live (`Dispatcher.note_live`): a delivery after a crash finds it.
LIVE_REF = "live_ref"


class AdapterState(enum.StrEnum):
    STOPPED = "stopped"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"  # lost the connection; reconnecting


class ChatAdapter(ABC):
    #: The platform name used in conversation keys, logs and metrics.
    platform: ClassVar[str]
    #: The keys of the adapter's config section that `reload()` applies while
    #: connected (the allowlists); a change to any other needs a restart.
    reloadable: ClassVar[frozenset[str]] = frozenset()

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

    def live(self, message: InboxMessage) -> LiveAnswer | None:
        """A view that shows the answer to ``message`` while a streaming agent writes
        it (`bridge.stream`), or None where the platform cannot show one there: the
        `working` indicator and the final reply are then all the user sees. The
        dispatcher still posts the final reply with `send_reply`, which may finish
        the live view in place rather than post anew. Default: None."""
        return None

    async def post_notice(self, chat: str, text: str) -> None:
        """Post ``text`` (Markdown) to ``chat``, a chat or channel id of the
        platform, outside any conversation (an admin alert, `bridge.alerts`).
        Raise `AdapterError` if it could not be posted. Default: it cannot."""
        raise AdapterError(self.platform, "cannot post a notice outside a conversation")

    async def describe_attachment(
        self, message: InboxMessage, attachment: Attachment
    ) -> Attachment:
        """``attachment`` with what only a platform call tells (a Slack Connect stub's
        name, type and size), asked in the message's turn before its limits apply.
        Raise `AttachmentError` when the platform refuses. Default: as it is."""
        return attachment

    def attachment_chunks(
        self, message: InboxMessage, attachment: Attachment
    ) -> AsyncGenerator[bytes, None]:
        """The bytes of one of ``message``'s attachments (`bridge.attachments`), as
        they come from the platform: the core writes them to a private temp file and
        stops reading at ``files.max_bytes`` (closing the iterator, which must then
        drop the download). Raise `AttachmentError` when the platform refuses it.
        Default: the platform has no files."""
        raise AttachmentError(
            "unavailable",
            f"{self.platform} cannot fetch attachments",
            user_message=f"Sorry, I could not download {attachment.name}.",
        )

    async def check(self) -> str:
        """Check the credentials live (e.g. ``auth.test``); return a one-line
        description of the identity, raise `AdapterError` with the reason."""
        return "no live check"

    def reload(self, config: object) -> None:
        """Take ``config``, the adapter's config section re-read on SIGHUP, without
        reconnecting. The daemon passes the running section with only the
        `reloadable` keys replaced; it is called only when one of them changed.
        Default: nothing (an adapter with no `reloadable` keys)."""
        return None

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
