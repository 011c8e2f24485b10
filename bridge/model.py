"""The normalized message model every adapter speaks.

An adapter turns a platform event into an `IncomingMessage`; the store keeps it
as an `InboxMessage` (with its row id and conversation); the dispatcher hands
the adapter a `Reply` for it. Platform details that are needed to answer
(a Telegram message id, a Slack thread ts) travel in ``reply_to`` and ``meta``,
which the store persists, so that a message resumed after a restart can still
be answered in the right place.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class ConversationKey:
    """Which chat thread a message belongs to; one agent session per key.

    ``scope`` separates installations: the Slack team id, the Telegram bot id,
    or ``"console"``. ``thread`` is the Slack thread root ts or the Telegram
    forum topic id, ``None`` for a chat without threads.
    """

    platform: str
    scope: str
    chat: str
    thread: str | None = None

    def __str__(self) -> str:
        base = f"{self.platform}:{self.scope}:{self.chat}"
        return f"{base}:{self.thread}" if self.thread is not None else base


def clean_text(text: str) -> str:
    """``text`` safe to store on every database: U+0000 (which PostgreSQL's text
    type refuses) and unpaired surrogates (which no UTF-8 encoder accepts)
    become U+FFFD. The dispatcher applies it to every message it accepts."""
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = "".join("\ufffd" if "\ud800" <= ch <= "\udfff" else ch for ch in text)
    return text


def agent_input(text: str, context: object = None) -> str:
    """The one text the agent receives for a message: the user's ``text``, after the
    earlier messages an adapter gave as ``meta["context"]`` (a Slack thread's history
    at the first mention, a Telegram message replied to), if any, in a delimited
    block so that the agent can tell them from the question::

        Earlier messages, for context:
        <<<
        U123: shall we ship on Friday?
        >>>

        what do you think?
    """
    if not isinstance(context, str) or not context.strip():
        return text
    return f"Earlier messages, for context:\n<<<\n{context.strip()}\n>>>\n\n{text}"


@dataclass(frozen=True, slots=True)
class IncomingMessage:
    """A user's message, normalized by an adapter.

    ``event_id`` is unique per platform for one user message, however often
    the platform delivers it: it is the dedupe key of the inbox.
    """

    key: ConversationKey
    event_id: str
    sender: str
    text: str
    agent: str
    reply_to: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)


class MessageStatus(enum.StrEnum):
    PENDING = "pending"  # accepted, committed, not started
    RUNNING = "running"  # the agent is working on it
    ANSWERED = "answered"  # the reply is stored, not yet delivered
    DONE = "done"  # the reply was delivered
    FAILED = "failed"  # the agent could not answer; the friendly text was delivered


class Finished(enum.Enum):
    """What the store's ``finish_and_release`` did with the conversation."""

    KEPT = "kept"  # more messages wait: the lease is still ours
    RELEASED = "released"
    RELEASED_WITH_WORK = "released, but a message arrived meanwhile: claim again"
    LOST = "lost"  # the lease was gone: nothing changed


@dataclass(frozen=True, slots=True)
class InboxMessage:
    """A message as the store holds it."""

    id: int
    conversation_id: int
    key: ConversationKey
    event_id: str
    sender: str
    text: str
    agent: str
    status: MessageStatus
    attempts: int = 0
    reply_to: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)
    #: The reply stored before delivery (status ANSWERED), so that a restart
    #: re-delivers it without a second agent call.
    reply_text: str | None = None
    error_kind: str | None = None
    created_at: datetime | None = None
    #: How many times posting the reply was begun. More than 0 means an earlier
    #: attempt (perhaps in a process that crashed) may have posted some or all
    #: of it: an adapter that can read its own posts back checks before posting.
    delivery_attempts: int = 0
    #: Pieces of a long reply (split to the platform's limit) already posted by
    #: an earlier attempt: a retry starts after them.
    delivered_pieces: int = 0


@dataclass(frozen=True, slots=True)
class Conversation:
    """A chat thread and the agent session that carries its memory."""

    id: int
    key: ConversationKey
    agent: str
    session_id: str | None
    #: Bumped by every reset; a turn that started before a reset does not
    #: write its (old) session id back.
    epoch: int
    turns: int
    input_tokens: int
    output_tokens: int
    created_at: datetime
    last_active_at: datetime


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0


@dataclass(frozen=True, slots=True)
class AgentReply:
    """What an agent backend returns for one turn."""

    text: str
    session_id: str | None
    usage: Usage = field(default_factory=Usage)


@dataclass(frozen=True, slots=True)
class Reply:
    """What the dispatcher asks an adapter to post. ``text`` is Markdown."""

    text: str
    #: Set when the text is a friendly error instead of the agent's answer.
    error_kind: str | None = None


@dataclass(frozen=True, slots=True)
class TurnContext:
    """Who asks, for backends that pass it on (``{user_id}`` and ``{user_name}`` of
    an http agent's body). The platform's ids, as the adapter gave them."""

    user_id: str = ""
    user_name: str = ""
