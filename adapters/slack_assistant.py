"""Slack's AI-app view (assistant threads) and the indicator shown while the agent works.

With ``features.assistant_view`` in the manifest, Slack gives the app its own split-view
tab. Each conversation there is an *assistant thread*: a DM thread whose root Slack
posts itself, so a user's message in it is a DM ``message`` event with a
``thread_ts``. `adapters.slack_events` already makes every DM thread its own
conversation (``ConversationKey(slack, team, D..., thread_ts)``) answered in that
thread: nothing more is needed for routing. This module adds what the view offers:

- ``assistant_thread_started``: the configured ``slack.suggested_prompts``
  (``assistant.threads.setSuggestedPrompts``), for a user who may use the bot.
- ``assistant_thread_context_changed`` (the user looks at another channel): logged at
  DEBUG and acknowledged. bolt's default context store would read and rewrite the
  thread on every change; the bridge has no use for the channel the user looks at.
- The first question of a thread names it (``assistant.threads.setTitle``).
- While the agent works: ``assistant.threads.setStatus`` (``slack.status_text`` and the
  ``slack.loading_messages`` Slack rotates), set again every `STATUS_REFRESH` seconds
  since Slack drops a status after two minutes without a post, and cleared when the
  agent is done unless a post already cleared it (Slack clears it when the app posts in
  the thread). Where Slack refuses the status (an ordinary DM thread, a missing scope)
  and everywhere else (channels, top-level DMs), the hourglass reaction on the user's
  message is the indicator, as before.

The Web API methods are called directly rather than through bolt's `AsyncAssistant`
middleware: that middleware takes every DM thread message away from the adapter's one
``message`` listener (and its dedupe and ack rules), and its default thread context
store calls ``conversations.replies`` and ``chat.update`` on every context change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack_events import SlackIdentity, _Recent, refusal
from bridge.config import SlackConfig
from bridge.model import InboxMessage

log = logging.getLogger("adapters.slack")

#: The reaction shown on the user's message while the agent works on it, where no
#: assistant status can be shown.
WORKING_REACTION = "hourglass_flowing_sand"
#: Seconds between two setStatus calls for one answer: Slack removes a status after
#: two minutes if no message was posted.
STATUS_REFRESH = 90.0
#: A thread's title: the first question, cut to about this many characters.
TITLE_CHARS = 60
#: setStatus errors that no thread will get past: the reaction from then on.
_STATUS_NEVER = frozenset({"missing_scope", "not_allowed_token_type", "no_permission"})


def thread_title(text: str, limit: int = TITLE_CHARS) -> str:
    """An assistant thread's title from its first question: one line, cut at a word
    boundary to ``limit`` characters (with an ellipsis)."""
    line = " ".join(text.split())
    if len(line) <= limit:
        return line
    cut = line[: limit - 1]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,.;:-") + "…"


def in_dm_thread(message: InboxMessage) -> bool:
    """A message in a DM thread: in the AI-app view, an assistant thread."""
    return bool(message.meta.get("dm")) and message.key.thread is not None


class AssistantThreads:
    """The AI-app view and the working indicator for `SlackAdapter`, on its ``client``
    (the one with slack_sdk's default retries). ``config`` is replaced on reload."""

    def __init__(
        self, client: AsyncWebClient, identity: SlackIdentity, config: SlackConfig
    ) -> None:
        self.config = config
        self._client = client
        self._identity = identity
        #: Threads where setStatus failed: the reaction at once next time.
        self._no_status = _Recent(1000)
        #: True once setStatus failed for a reason no thread gets past.
        self._status_refused = False
        #: message id -> the indicator shown for it, while the agent works.
        self._working: dict[int, _Shown] = {}

    # --- events ----------------------------------------------------------------------

    async def thread_started(self, event: Mapping[str, Any], team: str) -> None:
        """``assistant_thread_started``: offer the configured prompts."""
        thread = event.get("assistant_thread")
        thread = thread if isinstance(thread, Mapping) else {}
        channel, ts, user = (thread.get(k) for k in ("channel_id", "thread_ts", "user_id"))
        if not (isinstance(channel, str) and isinstance(ts, str) and isinstance(user, str)):
            log.debug("assistant_thread_started without channel, thread or user: skipped")
            return
        prompts = [{"title": p.title, "message": p.message} for p in self.config.suggested_prompts]
        if not prompts:
            return
        why = refusal(
            self.config, self._identity, team=team, channel=channel, user=user, is_dm=True
        )
        if why is not None:
            log.debug("no prompts for %s in %s: %s", user, channel, why)
            return
        await self._quietly(
            "assistant.threads.setSuggestedPrompts",
            self._client.assistant_threads_setSuggestedPrompts(
                channel_id=channel, thread_ts=ts, prompts=prompts
            ),
        )

    def context_changed(self, event: Mapping[str, Any]) -> None:
        """``assistant_thread_context_changed``: nothing to keep."""
        thread = event.get("assistant_thread")
        context = thread.get("context") if isinstance(thread, Mapping) else None
        log.debug("Slack assistant thread context changed: %r", context)

    async def name_thread(self, channel: str, thread_ts: str, question: str) -> None:
        """Title the assistant thread after ``question``, its first one."""
        await self._quietly(
            "assistant.threads.setTitle",
            self._client.assistant_threads_setTitle(
                channel_id=channel, thread_ts=thread_ts, title=thread_title(question)
            ),
        )

    async def _quietly(self, method: str, call: Any) -> bool:
        """An AI-app call whose failure costs only that feature: logged, not raised."""
        try:
            await call
        except SlackApiError as exc:
            log.info("Slack %s failed: %s", method, exc.response.get("error"))
            return False
        except Exception as exc:
            log.info("Slack %s failed: %s", method, type(exc).__name__)
            return False
        return True

    # --- the working indicator -------------------------------------------------------

    @contextlib.asynccontextmanager
    async def working(self, message: InboxMessage) -> AsyncIterator[None]:
        """While the agent works on ``message``: the assistant status in an assistant
        thread, else the reaction. Shown in the background: a slow Web API call must
        not delay the agent's answer."""
        shown = _Shown()
        self._working[message.id] = shown
        showing = asyncio.create_task(self._show(message, shown))
        try:
            yield
        finally:
            self._working.pop(message.id, None)
            showing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await showing
            if shown.what == "status" and not shown.posted:
                await self._set_status(message, "")
            elif shown.what == "reaction":
                await self._react(self._client.reactions_remove, message)

    def posted(self, message: InboxMessage) -> None:
        """The bridge posted in ``message``'s thread while the agent worked on it (a
        streamed answer): Slack has cleared the status, no need to clear it again."""
        shown = self._working.get(message.id)
        if shown is not None:
            shown.posted = True

    async def _show(self, message: InboxMessage, shown: _Shown) -> None:
        thread = f"{message.key.chat}:{message.key.thread}"
        if in_dm_thread(message) and not self._status_refused and thread not in self._no_status:
            status = self.config.status_text
            if await self._set_status(message, status):
                shown.what = "status"
                while not shown.posted:
                    await asyncio.sleep(STATUS_REFRESH)
                    if not shown.posted:
                        await self._set_status(message, status)
                return
            self._no_status.add(thread)
        if message.reply_to is not None and await self._react(self._client.reactions_add, message):
            shown.what = "reaction"

    async def _set_status(self, message: InboxMessage, status: str) -> bool:
        """Set (or with ``""`` clear) the thread's status; False if Slack refused it."""
        assert message.key.thread is not None
        try:
            await self._client.assistant_threads_setStatus(
                channel_id=message.key.chat,
                thread_ts=message.key.thread,
                status=status,
                loading_messages=(self.config.loading_messages or None) if status else None,
            )
        except SlackApiError as exc:
            error = exc.response.get("error")
            if error in _STATUS_NEVER and not self._status_refused:
                self._status_refused = True
                log.warning(
                    "Slack refused assistant.threads.setStatus (%s); showing the reaction "
                    "instead. Reinstall the app from slack-app-manifest.yaml to get the "
                    "AI-app view's status",
                    error,
                )
            else:
                log.debug("Slack setStatus failed in %s: %s", message.key, error)
            return False
        except Exception as exc:  # only the indicator is lost; never the reply
            log.debug("Slack setStatus failed: %s", type(exc).__name__)
            return False
        return True

    async def _react(self, method: Any, message: InboxMessage) -> bool:
        """The working reaction; failures only cost the indicator."""
        try:
            await method(
                name=WORKING_REACTION, channel=message.key.chat, timestamp=message.reply_to
            )
        except SlackApiError as exc:
            error = exc.response.get("error")
            if error in ("already_reacted", "no_reaction"):
                return True
            log.debug("Slack reaction failed: %s", error)
            return False
        except Exception as exc:  # only the indicator is lost; never the reply
            log.debug("Slack reaction failed: %s", type(exc).__name__)
            return False
        return True


@dataclass(slots=True)
class _Shown:
    """The indicator `AssistantThreads.working` shows for one message."""

    what: Literal["status", "reaction"] | None = None
    #: A post in the thread (which clears the status) came while the agent worked.
    posted: bool = False
