"""Streamed answers: what a streaming agent yields, and what a platform shows live.

The contract between the three parts of a streamed answer (issue 11):

- **An agent backend** (`AgentBackend.stream`) yields `TextDelta`s (the next
  piece of the answer's text) and `StatusLine`s (what the agent does meanwhile,
  e.g. "Using tool: search"), and ends with exactly one `AgentReply`: the whole
  final text (the deltas joined, or the API's own final text), the session and
  the usage. It raises `AgentError` like `chat()`, also after some deltas.
  A backend that does not stream yields one `TextDelta` with the whole text,
  then the reply.
- **The dispatcher** (``bridge/turns.py``) reads the events, keeps the text so
  far, and shows it through the adapter's `LiveAnswer` at most every
  ``LIVE_INTERVAL`` seconds (the platforms' limits are per chat, and a few
  updates a second read as live). When the stream ends it stores the final
  reply before posting it, exactly as for an answer that was not streamed, and
  posts it with `ChatAdapter.send_reply`; the live view is then closed.
- **An adapter** (`ChatAdapter.live`) returns a `LiveAnswer` where the platform
  can show an answer being written (Telegram: a draft in a private chat; Slack:
  a streamed message), or None where it cannot (the typing action or reaction
  then stays, and the final reply is all the user sees).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from bridge.model import AgentReply

#: Seconds, at least, between two updates of a live answer.
LIVE_INTERVAL = 0.5


@dataclass(frozen=True, slots=True)
class TextDelta:
    """The next piece of the answer's text."""

    text: str


@dataclass(frozen=True, slots=True)
class StatusLine:
    """What the agent is doing meanwhile (not part of the answer)."""

    text: str


#: What `AgentBackend.stream` yields; the last event is always an `AgentReply`.
AgentEvent = TextDelta | StatusLine | AgentReply


class LiveAnswer(ABC):
    """An answer shown while it is written, for one message. The dispatcher calls
    `show` with the whole text so far (never more often than ``LIVE_INTERVAL``),
    `status` with a status line, and `close` once, after the final reply was
    posted with `ChatAdapter.send_reply` or when the answer failed. Failures of
    `show` and `status` only cost the live view: they must not raise."""

    @abstractmethod
    async def show(self, text: str) -> None:
        """Show ``text``, the answer so far (Markdown, perhaps cut mid-sentence)."""

    async def status(self, text: str) -> None:  # noqa: B027 - optional, a no-op by default
        """Show what the agent is doing (e.g. "Using tool: search")."""

    @abstractmethod
    async def close(self) -> None:
        """The answer is complete (posted) or failed: end the live view."""
