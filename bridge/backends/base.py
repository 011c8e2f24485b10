"""`AgentBackend`: the one base class every agent API implements, and what the
backends share: the request a backend asks for, the shared HTTP client, the
helpers for reading replies and retry delays.

The HTTP call itself (timing, logging, retries, the error table, streaming)
is `bridge.backends.http.HttpAgentBackend`.
"""

from __future__ import annotations

import email.utils
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC
from typing import Any, ClassVar

import httpx

from bridge import __version__
from bridge.model import AgentReply, TurnContext, Usage
from bridge.stream import AgentEvent, StatusLine, TextDelta

log = logging.getLogger("bridge.backends")

Sleep = Callable[[float], Awaitable[None]]

#: Attempts of one call when the agent is unavailable (5xx, refused, DNS).
UNAVAILABLE_ATTEMPTS = 3
#: Attempts of one call when the agent keeps answering 429 (the wait budget
#: usually ends it first; this stops a loop on ``Retry-After: 0``).
RATE_LIMITED_ATTEMPTS = 6
#: Exponential backoff: BACKOFF_BASE * 2**(attempt-1), capped, with jitter.
BACKOFF_BASE = 1.0
BACKOFF_CAP = 30.0
#: Characters of an unreadable body quoted in the log.
EXCERPT_CHARS = 200
#: The connect timeout, when the agent's `timeout` is longer.
CONNECT_TIMEOUT = 10.0


def create_http_client(*, max_connections: int = 100) -> httpx.AsyncClient:
    """The one `httpx.AsyncClient` of the process, shared by every backend.

    Timeouts are set per request from each agent's ``timeout``; the client's
    own default only covers calls that forget to. Redirects are not followed:
    an agent API that redirects a POST is misconfigured, and following it
    would resend the key to another host.
    """
    return httpx.AsyncClient(
        timeout=httpx.Timeout(60.0, connect=CONNECT_TIMEOUT),
        limits=httpx.Limits(
            max_connections=max_connections,
            # Every connection may be kept: a pool refilled under load pays a TCP
            # (and TLS) handshake per call.
            max_keepalive_connections=max_connections,
            keepalive_expiry=30.0,
        ),
        headers={"User-Agent": f"agent-bridge/{__version__}"},
        follow_redirects=False,
    )


class AgentBackend(ABC):
    """One configured agent (``[agents.NAME]``).

    ``chat()`` sends one user message and returns the agent's reply, or raises
    an `AgentError` whose ``user_message`` is ready to show. ``session_id``
    is the agent session (thinnest) or thread (Peaka) that carries the
    conversation's memory; ``None`` starts a new one where the API allows it.

    Example::

        reply = await backend.chat("hello", session_id=backend.new_session_id())
        reply = await backend.chat("and then?", session_id=reply.session_id)
    """

    #: Whether the backend sends images to the agent (`bridge.files.Image`); the
    #: others get a photo's caption alone, and the user a note saying so.
    takes_images: ClassVar[bool] = False
    #: The config name, e.g. ``"default"``.
    name: str

    @abstractmethod
    async def chat(
        self, message: str, session_id: str | None, *, context: TurnContext | None = None
    ) -> AgentReply:
        """One turn; raises `AgentError` subclasses. ``context`` says who asks, for
        the backends that send it on."""

    @property
    def streams(self) -> bool:
        """True when `stream()` yields the answer as it is written (the agent's config
        says ``stream = true`` and its API can); the dispatcher calls `chat()` otherwise."""
        return False

    async def stream(
        self, message: str, session_id: str | None, *, context: TurnContext | None = None
    ) -> AsyncGenerator[AgentEvent, None]:
        """One turn as events (`bridge.stream`): `TextDelta`s and `StatusLine`s, then
        exactly one `AgentReply`; raises `AgentError` subclasses like `chat()`, also
        after some deltas. This default streams nothing: one delta with the whole text.

        Example::

            async for event in backend.stream("hello", session_id):
                if isinstance(event, TextDelta):
                    shown += event.text
                elif isinstance(event, AgentReply):
                    final = event
        """
        reply = await self.chat(message, session_id, context=context)
        yield TextDelta(reply.text)
        yield reply

    def new_session_id(self) -> str | None:
        """The session id to send for a new conversation; ``None`` lets the API make one."""
        return None

    @abstractmethod
    async def probe(self) -> str:
        """Check the agent is reachable and the key accepted, without spending a turn.

        Returns a short description; raises `AgentError` subclasses."""

    async def aclose(self) -> None:  # noqa: B027 - a no-op by default, on purpose
        """Release resources the backend owns (HTTP backends share the client: nothing)."""


@dataclass(frozen=True, slots=True)
class AgentRequest:
    """What a backend asks the base class to send."""

    url: str
    json: Mapping[str, Any] | None = None
    method: str = "POST"
    #: Headers beside the ones `auth_headers()` gives (they win over those).
    headers: Mapping[str, str] | None = None


class ReplyFormatError(ValueError):
    """Raised by `parse_reply()` when a 2xx body holds no usable reply."""


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """What `HttpAgentBackend.parse_event()` returns for the stream's final event
    (thinnest's ``done``, OpenAI's ``response.completed``...): the session and usage
    it names, and the final text when the API sends one (else the deltas, joined)."""

    session_id: str | None = None
    usage: Usage | None = None
    text: str | None = None


#: What `parse_event()` turns one server-sent event into.
StreamItem = TextDelta | StatusLine | StreamEnd


class StreamUnsupported(Exception):
    """The streaming endpoint is missing (404/405) or its answer is not an event
    stream: the backend falls back to `chat()`. Raised before any event was yielded."""

    def __init__(self, reason: str, *, ambiguous: bool = False) -> None:
        super().__init__(reason)
        #: A bare 404 on a turn that named a session: maybe the session, not the endpoint.
        self.ambiguous = ambiguous


def require_text(value: object, what: str = "reply text") -> str:
    """``value`` if it is a non-blank string, else `ReplyFormatError`."""
    if isinstance(value, str) and value.strip():
        return value
    raise ReplyFormatError(f"no {what} in the body")


def body_excerpt(response: httpx.Response) -> str:
    try:
        text = response.text
    except Exception:  # an undecodable body
        return "<undecodable body>"
    text = " ".join(text.split())
    if not text:
        return "<empty body>"
    return text if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS] + "..."


def retry_delay(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds the server asks us to wait, from ``Retry-After`` (seconds or an HTTP
    date) or ``X-RateLimit-Reset`` (Unix time; thinnest.ai sends this one). None
    when neither is there or readable."""
    now = time.time() if now is None else now
    retry_after = headers.get("Retry-After")
    if retry_after:
        value = retry_after.strip()
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            when = None
        if when is not None:
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            return max(0.0, when.timestamp() - now)
    reset = headers.get("X-RateLimit-Reset")
    if reset:
        try:
            value_f = float(reset.strip())
        except ValueError:
            return None
        # Documented as a Unix timestamp; some APIs send seconds-until-reset instead.
        # No Unix time of this century is below 10^9.
        if value_f < 1e9:
            return max(0.0, value_f)
        return max(0.0, value_f - now)
    return None
