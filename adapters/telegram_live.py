"""A streamed answer on Telegram: a message draft in a private chat.

``sendMessageDraft`` (Bot API 9.x, python-telegram-bot 22.6+, all bots since 22.7)
shows a partial message in a private chat while it is written. The draft is an
ephemeral preview (about 30 seconds, PTB's docstring) that Telegram replaces with the
next real message in that chat: the final reply, posted by `TelegramAdapter.send_reply`
with ``sendMessage`` as for any answer, takes its place, and nothing needs deleting.
A crash mid-draft therefore leaves nothing behind: the draft fades, and the answer
after the restart is an ordinary message.

Groups and topics get no draft (the method is for private chats only): the typing
action and the final message, as before. Every draft of one answer has the same
``draft_id`` (the inbox id: non-zero, stable), so Telegram animates the changes.
The draft shows the part being written (the last 4096-character piece, rendered as
the final reply will be, else plain text); a draft that fails only costs that draft.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from telegram import Bot, MessageEntity
from telegram.error import BadRequest

from adapters.telegram_render import render, render_plain
from bridge.model import InboxMessage
from bridge.stream import LiveAnswer

log = logging.getLogger("adapters.telegram")


def is_private(message: InboxMessage) -> bool:
    return message.meta.get("chat_type") == "private"


class TelegramDraft(LiveAnswer):
    """The answer to ``message`` as a draft in its private chat, through ``bot``.
    ``closed`` is called on `close`, so the adapter forgets the draft."""

    def __init__(
        self, bot: Bot, message: InboxMessage, *, closed: Callable[[TelegramDraft], None]
    ) -> None:
        self._bot = bot
        self.message = message
        self._chat_id = int(message.meta["chat_id"])
        self._thread = message.meta.get("thread_id")
        self._closed = closed
        #: True once a draft with text was shown: it replaces the typing action.
        self.shown = False

    async def show(self, text: str) -> None:
        chunk = render(text)[-1]
        try:
            try:
                await self._draft(chunk.text, chunk.entities or None)
            except BadRequest as exc:
                # Markdown cut mid-stream may make entities Telegram refuses: plain text.
                log.debug("a draft's formatting was refused (%s); plain text", exc.message)
                await self._draft(render_plain(text)[-1].text, None)
        except Exception as exc:  # only the draft is lost; the final message follows
            log.debug("draft for message %d failed: %s", self.message.id, type(exc).__name__)
            return
        self.shown = True

    async def close(self) -> None:
        # The final message (already sent, or sent by a later delivery) replaces the
        # draft; a draft left over fades by itself.
        self._closed(self)

    async def _draft(self, text: str, entities: Sequence[MessageEntity] | None) -> None:
        await self._bot.send_message_draft(
            chat_id=self._chat_id,
            draft_id=self.message.id,
            text=text,
            entities=entities,
            message_thread_id=self._thread,
        )
