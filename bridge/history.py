"""`ConversationHistory`: the turns of a thread, for agent APIs that remember nothing.

OpenAI's Chat Completions (and Ollama, vLLM, LiteLLM... behind it) is stateless:
the client resends the conversation every time. The bridge keeps those turns
itself, keyed by the session id the backend made for the thread (a fresh one
after ``/reset``, so a reset starts an empty history). This module is the port;
the store implements it (``storage/history.py``), and `MemoryHistory` is an
in-process one for one-off calls (a probe) and tests.

Example::

    turns = await history.load(session_id, max_chars=24_000)   # oldest first
    ...  # send them, then the new message
    await history.append(session_id, message, reply.text)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import defaultdict
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class HistoryTurn:
    """One earlier exchange: what the user wrote, what the agent answered."""

    user: str
    assistant: str

    @property
    def chars(self) -> int:
        return len(self.user) + len(self.assistant)


class ConversationHistory(ABC):
    """Where a stateless agent's threads keep their turns."""

    @abstractmethod
    async def load(self, session_id: str, *, max_chars: int) -> list[HistoryTurn]:
        """The newest turns of ``session_id`` whose texts add up to at most
        ``max_chars`` characters, oldest first. It stops at the first turn that
        does not fit: an older turn never comes without the ones after it."""

    @abstractmethod
    async def append(self, session_id: str, user_text: str, reply_text: str) -> None:
        """Record one answered turn."""


def newest_that_fit(newest_first: list[HistoryTurn], max_chars: int) -> list[HistoryTurn]:
    """The leading turns of ``newest_first`` that fit ``max_chars``, oldest first."""
    kept: list[HistoryTurn] = []
    used = 0
    for turn in newest_first:
        used += turn.chars
        if used > max_chars:
            break
        kept.append(turn)
    kept.reverse()
    return kept


class MemoryHistory(ConversationHistory):
    """A history in this process only, lost when it ends."""

    def __init__(self) -> None:
        self._turns: defaultdict[str, list[HistoryTurn]] = defaultdict(list)

    async def load(self, session_id: str, *, max_chars: int) -> list[HistoryTurn]:
        return newest_that_fit(list(reversed(self._turns.get(session_id, []))), max_chars)

    async def append(self, session_id: str, user_text: str, reply_text: str) -> None:
        self._turns[session_id].append(HistoryTurn(user_text, reply_text))
