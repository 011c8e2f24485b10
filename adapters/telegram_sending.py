"""Sending to Telegram: replies (in pieces, each noted as posted), short answers and
notices, the typing action, drafts, file downloads; and the flood limiter's exception
for chat actions and drafts. `TelegramSending` is a base class of `TelegramAdapter`
(`adapters.telegram`), which owns the state below."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine
from typing import TYPE_CHECKING, Any

import httpx
from telegram import Message, ReplyParameters
from telegram.constants import ChatAction
from telegram.error import BadRequest, ChatMigrated, Forbidden, InvalidToken, TelegramError
from telegram.ext import AIORateLimiter, Application, ExtBot

from adapters.base import ChatAdapter
from adapters.telegram_files import download
from adapters.telegram_live import TelegramDraft, is_private
from adapters.telegram_render import Chunk, render
from bridge.attachments import Attachment
from bridge.errors import AdapterError, ReplyUndeliverable
from bridge.model import InboxMessage, Reply
from bridge.stream import LiveAnswer

if TYPE_CHECKING:
    from bridge.config import TelegramConfig

log = logging.getLogger("adapters.telegram")

PLATFORM = "telegram"
#: A typing action shows for at most 5 s; repeat it a bit sooner.
TYPING_INTERVAL = 4.0

_ENTITY_ERRORS = ("can't parse entities", "can't find end", "entity", "parse")
_GONE_ERRORS = ("chat not found", "message thread not found", "topic_closed", "topic_deleted")


class Limiter(AIORateLimiter):
    """`AIORateLimiter`, except that chat actions skip it: a typing action every 4 s
    would otherwise eat a group's budget of 20 messages a minute. Drafts skip it too:
    they come at most every ``LIVE_INTERVAL`` per answer (the dispatcher's pace), and
    one that would wait for a flood limit is better lost than late."""

    async def process_request(
        self,
        callback: Callable[..., Coroutine[Any, Any, Any]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: int | None,
    ) -> Any:
        if endpoint in ("sendChatAction", "sendMessageDraft"):
            return await callback(*args, **kwargs)
        return await super().process_request(
            callback, args, kwargs, endpoint, data, rate_limit_args
        )


class TelegramSending(ChatAdapter):
    """The sending half of `TelegramAdapter`."""

    config: TelegramConfig
    _token: str
    _app: Application[Any, Any, Any, Any, Any, Any] | None
    _files: httpx.AsyncClient | None
    _tasks: set[asyncio.Task[None]]
    _progress: dict[int, int]
    _drafts: dict[int, TelegramDraft]

    @property
    def _bot(self) -> ExtBot[Any]:
        if self._app is None:
            raise AdapterError(PLATFORM, "the adapter is not started")
        bot: ExtBot[Any] = self._app.bot
        return bot

    def _answer(self, message: Message, text: str) -> None:
        """Reply with a short fixed text, in the background (the poll loop goes on)."""
        thread = message.message_thread_id if message.is_topic_message else None

        async def send() -> None:
            try:
                await self._send_chunk(message.chat.id, thread, Chunk(text), message.message_id)
            except AdapterError as exc:
                log.warning("could not answer in chat %d: %s", message.chat.id, exc)

        self._spawn(send())

    def _tell(self, chat_id: int, text: str) -> None:
        """Post a short text to ``chat_id`` (not a reply), in the background."""

        async def send() -> None:
            try:
                await self._send_chunk(chat_id, None, Chunk(text), None)
            except AdapterError as exc:
                log.warning("could not tell chat %d: %s", chat_id, exc)

        self._spawn(send())

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def send_reply(self, message: InboxMessage, reply: Reply) -> None:
        chat_id = int(message.meta["chat_id"])
        thread = message.meta.get("thread_id")
        reply_to = int(message.reply_to) if message.reply_to else None
        chunks = render(reply.text)
        # Telegram cannot tell us whether a post went through before a crash:
        # the pieces posted are noted in the store as they go, so a retry (here
        # or after a restart) repeats at most the one piece in flight.
        done = max(self._progress.get(message.id, 0), message.delivered_pieces)
        for index in range(done, len(chunks)):
            await self._send_chunk(chat_id, thread, chunks[index], reply_to if index == 0 else None)
            self._progress[message.id] = index + 1
            if index + 1 < len(chunks):
                await self.dispatcher.note_pieces(message, index + 1)
        self._progress.pop(message.id, None)

    async def post_notice(self, chat: str, text: str) -> None:
        for chunk in render(text):
            await self._send_chunk(int(chat), None, chunk, None)

    async def _send_chunk(
        self, chat_id: int, thread: int | None, chunk: Chunk, reply_to: int | None
    ) -> None:
        try:
            await self._send_message(chat_id, thread, chunk, reply_to)
        except BadRequest as exc:
            if not any(hint in exc.message.lower() for hint in _ENTITY_ERRORS):
                raise self._send_error(exc) from None
            log.warning(
                "Telegram refused the reply's formatting (%s); sending plain text", exc.message
            )
            try:
                await self._send_message(chat_id, thread, Chunk(chunk.text), reply_to)
            except TelegramError as again:
                raise self._send_error(again) from None
        except TelegramError as exc:
            raise self._send_error(exc) from None

    async def _send_message(
        self, chat_id: int, thread: int | None, chunk: Chunk, reply_to: int | None
    ) -> None:
        kwargs: dict[str, Any] = {
            "chat_id": chat_id,
            "text": chunk.text,
            "entities": list(chunk.entities) or None,
            "message_thread_id": thread,
        }
        if reply_to is not None:
            # The user may have deleted their message meanwhile: answer anyway.
            kwargs["reply_parameters"] = ReplyParameters(reply_to, allow_sending_without_reply=True)
        try:
            await self._bot.send_message(**kwargs)
        except ChatMigrated as exc:  # the group became a supergroup
            kwargs["chat_id"] = exc.new_chat_id
            kwargs.pop("reply_parameters", None)
            await self._bot.send_message(**kwargs)

    def _send_error(self, exc: TelegramError) -> Exception:
        reason = self._reason(exc)
        if isinstance(exc, Forbidden) or (
            isinstance(exc, BadRequest) and any(h in exc.message.lower() for h in _GONE_ERRORS)
        ):
            return ReplyUndeliverable(PLATFORM, reason)
        return AdapterError(PLATFORM, f"sendMessage failed: {reason}")

    async def attachment_chunks(
        self, message: InboxMessage, attachment: Attachment
    ) -> AsyncGenerator[bytes, None]:
        """``getFile`` and the download from the configured Bot API (`download`)."""
        if self._files is None:
            raise AdapterError(PLATFORM, "the adapter is not started")
        async with contextlib.aclosing(download(self._bot, self._files, attachment)) as chunks:
            async for chunk in chunks:
                yield chunk

    def live(self, message: InboxMessage) -> LiveAnswer | None:
        """A draft in a private chat (`adapters.telegram_live`); groups: None."""
        if not is_private(message) or self._app is None:
            return None
        draft = TelegramDraft(self._bot, message, closed=self._forget_draft)
        self._drafts[message.id] = draft
        return draft

    def _forget_draft(self, draft: TelegramDraft) -> None:
        if self._drafts.get(draft.message.id) is draft:
            del self._drafts[draft.message.id]

    @contextlib.asynccontextmanager
    async def working(self, message: InboxMessage) -> AsyncIterator[None]:
        chat_id = int(message.meta["chat_id"])
        thread = message.meta.get("thread_id")
        draft = self._drafts.get(message.id)
        task = asyncio.create_task(self._typing(chat_id, thread, draft), name="telegram-typing")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _typing(self, chat_id: int, thread: int | None, draft: TelegramDraft | None) -> None:
        while draft is None or not draft.shown:  # a draft with text replaces the typing
            try:
                await self._bot.send_chat_action(
                    chat_id=chat_id, action=ChatAction.TYPING, message_thread_id=thread
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # cosmetic: never let it disturb the answer
                log.debug("typing action in chat %d failed: %s", chat_id, self._redact(str(exc)))
            await asyncio.sleep(TYPING_INTERVAL)

    # --- helpers -------------------------------------------------------------------------

    def _reason(self, exc: Exception) -> str:
        """What Telegram said, without the token (PTB quotes it in InvalidToken)."""
        if isinstance(exc, InvalidToken):
            return "Unauthorized: check telegram.bot_token"
        if isinstance(exc, TelegramError):
            return self._redact(exc.message)
        return self._redact(f"{type(exc).__name__}: {exc}")

    def _redact(self, text: str) -> str:
        return text.replace(self._token, "<bot token>") if self._token else text
