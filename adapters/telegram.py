"""`TelegramAdapter`: private chats, groups and forum topics through python-telegram-bot.

python-telegram-bot (v22) is driven inside the bridge's own event loop: an
`Application` gives us the configured `ExtBot` (base URL, `AIORateLimiter`,
HTTP pools) and is initialized, started, stopped and shut down by this adapter;
``run_polling()`` is never used, so Slack and Telegram share one process.

Nothing accepted is lost. PTB's `Updater` confirms an update to Telegram (the
next getUpdates offset) whether or not its handler has finished, so this
adapter polls with `Bot.get_updates` itself: it fetches a batch, hands each
message to `Dispatcher.submit()` (which commits it to the store and returns;
the agent call happens later), and only then asks for the next batch with an
offset past it, which is what confirms the batch to Telegram. A crash before
that point means Telegram delivers the update again and the store's dedupe
(``event_id``) drops the second copy. If the store fails, the offset does not
move. In webhook mode the same rule holds: 200 only after the commit, 500
(Telegram retries) when the store failed.

Replies never use ``parse_mode``: agent Markdown becomes plain text plus
entities (see `adapters.telegram_render`), with a plain-text fallback.

The bot token is part of every Bot API URL. It never goes to the log from here:
PTB's own error for a rejected token quotes it, so that error is replaced by
ours; httpx's INFO request log is turned down by `bridge.logs`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aiohttp import web
from telegram import (
    Bot,
    BotCommand,
    Message,
    MessageEntity,
    ReplyParameters,
    Update,
)
from telegram.constants import ChatAction, ChatType, MessageEntityType
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Conflict,
    Forbidden,
    InvalidToken,
    RetryAfter,
    TelegramError,
)
from telegram.ext import AIORateLimiter, Application, ApplicationBuilder, ExtBot
from telegram.request import HTTPXRequest

from adapters.base import AdapterState, ChatAdapter
from adapters.telegram_render import Chunk, render
from bridge.config import TelegramConfig
from bridge.errors import AdapterError, StorageError
from bridge.model import ConversationKey, InboxMessage, IncomingMessage, Reply
from bridge.web import ListenError, serve

if TYPE_CHECKING:
    from bridge.dispatcher import Dispatcher

log = logging.getLogger("adapters.telegram")

PLATFORM = "telegram"
#: Seconds one getUpdates call waits on Telegram's side for an update.
POLL_TIMEOUT = 30
#: Seconds between retries of a failing getUpdates, growing with each failure.
POLL_BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
#: A typing action shows for at most 5 s; repeat it a bit sooner.
TYPING_INTERVAL = 4.0
#: Flood waits (429 retry_after) the rate limiter sits out before giving up on
#: one request; the dispatcher then retries the whole reply later.
SEND_RETRIES = 5
#: HTTP connections for sending (replies to many chats go out in parallel).
CONNECTIONS = 64
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
UPDATE_TYPES = [
    "message",
    "edited_message",
    "channel_post",
    "edited_channel_post",
    "my_chat_member",
]

COMMANDS = (
    BotCommand("start", "What this bot does"),
    BotCommand("help", "How to talk to the agent"),
    BotCommand("new", "Start a new conversation"),
    BotCommand("reset", "Start a new conversation"),
    BotCommand("status", "Agent, turns and tokens of this conversation"),
    BotCommand("ask", "Ask the agent (in groups): /ask your question"),
)
_OURS = frozenset(c.command for c in COMMANDS)

HELLO_PRIVATE = (
    "Hi! I pass your messages to an AI agent and bring back its answers. Just write to me.\n\n"
    "/new (or /reset) starts a new conversation, /status shows what this one has used, "
    "/help shows this text."
)
HELLO_GROUP = (
    "Hi! In this group, mention me (@{username}), reply to one of my messages, or write "
    "/ask followed by your question, and the AI agent answers. Each chat (and each forum "
    "topic) is its own conversation.\n\n"
    "/new (or /reset) starts a new conversation, /status shows what this one has used."
)
TEXT_ONLY = (
    "Sorry, I can only read text. Please write your question (a photo or file with a caption "
    "works too: I read the caption)."
)
REFUSED = (
    "Sorry, this bot is private. If you should be able to use it, ask its administrator to "
    "add your Telegram user id ({user_id}) to the bridge's allowed users."
)
RESET_DONE = "Started a new conversation: the agent won't remember what was said before."
ASK_USAGE = "Write your question after the command, e.g. /ask What can you do?"
EMPTY_MENTION = "Yes? Write your question along with the mention."
STATUS = "Agent: {agent}\nTurns: {turns}\nTokens: {input_tokens} in, {output_tokens} out"
STATUS_EMPTY = "Agent: {agent}\nNo messages in this conversation yet."

_ENTITY_ERRORS = ("can't parse entities", "can't find end", "entity", "parse")
_GONE_ERRORS = ("chat not found", "message thread not found", "topic_closed", "topic_deleted")


class _Limiter(AIORateLimiter):
    """`AIORateLimiter`, except that chat actions skip it: a typing action every 4 s
    would otherwise eat a group's budget of 20 messages a minute."""

    async def process_request(
        self,
        callback: Callable[..., Coroutine[Any, Any, Any]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: int | None,
    ) -> Any:
        if endpoint == "sendChatAction":
            return await callback(*args, **kwargs)
        return await super().process_request(
            callback, args, kwargs, endpoint, data, rate_limit_args
        )


class _Undeliverable(Exception):
    """The reply can never be posted (bot blocked, chat or topic gone)."""


class TelegramAdapter(ChatAdapter):
    """Telegram through the Bot API (long polling, or a webhook).

    Example::

        async with TelegramAdapter(dispatcher, config.telegram) as telegram:
            dispatcher.register(telegram)   # before start, in the daemon
            ...
    """

    platform = PLATFORM

    def __init__(self, dispatcher: Dispatcher, config: TelegramConfig) -> None:
        super().__init__(dispatcher)
        self.config = config
        self._token = config.bot_token.get_secret_value()
        users = config.allowed_users
        self._allow_anyone = "*" in users
        self._allowed_ids = {u for u in users if isinstance(u, int)}
        self._allowed_names = {
            u[1:].lower() for u in users if isinstance(u, str) and u.startswith("@")
        }
        self._allowed_chats = set(config.allowed_chats)
        self._app: Application[Any, Any, Any, Any, Any, Any] | None = None
        self.bot_id = 0
        self.username = ""
        self._poller: asyncio.Task[None] | None = None
        self._offset: int | None = None
        self._confirmed: int | None = None
        self._web: web.AppRunner | None = None
        self._requests: tuple[HTTPXRequest, ...] = ()
        self._tasks: set[asyncio.Task[None]] = set()
        self._refused_users: set[int] = set()
        #: message id -> chunks already posted, so that a retried reply does not
        #: repeat the pieces that went out before a failure.
        self._progress: dict[int, int] = {}
        #: Seconds a getUpdates call long-polls; tests may lower it.
        self.poll_timeout = POLL_TIMEOUT

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        self.state = AdapterState.CONNECTING
        self._app = self._build_application()
        bot = self._app.bot
        try:
            await self._app.initialize()  # getMe: checks the token
        except Exception as exc:
            raise AdapterError(PLATFORM, self._reason(exc)) from None
        self.bot_id = bot.id
        self.username = bot.username
        log.info("Telegram bot @%s (id %d) connected", self.username, self.bot_id)
        try:
            await bot.set_my_commands(COMMANDS)
        except TelegramError as exc:
            log.warning("could not register the bot's commands: %s", self._reason(exc))
        await self._app.start()
        if self.config.mode == "webhook":
            await self._start_webhook()
        else:
            try:
                # A webhook left from an earlier setup would make getUpdates fail (409).
                await bot.delete_webhook(drop_pending_updates=False)
            except TelegramError as exc:
                raise AdapterError(PLATFORM, self._reason(exc)) from None
            self._poller = asyncio.create_task(self._poll(), name="telegram-poll")
        self.state = AdapterState.CONNECTED

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None
            await self._confirm_offset()
        if self._web is not None:
            await self._web.cleanup()
            self._web = None
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._app is not None:
            app, self._app = self._app, None
            with contextlib.suppress(RuntimeError):  # not running / not initialized
                if app.running:
                    await app.stop()
            try:
                await app.shutdown()
            except Exception as exc:
                log.debug("Telegram client shutdown: %s", self._redact(str(exc)))
        # PTB leaves its HTTP clients open when initialize() failed: we own them.
        for request in self._requests:
            await request.shutdown()
        self._requests = ()
        self.state = AdapterState.STOPPED

    async def check(self) -> str:
        """getMe with the configured token, without starting the adapter."""
        requests = (HTTPXRequest(), HTTPXRequest())
        bot = Bot(
            self._token,
            base_url=self.config.api_url,
            request=requests[0],
            get_updates_request=requests[1],
        )
        try:
            async with bot:
                return f"@{bot.username} (id {bot.id})"
        except Exception as exc:
            raise AdapterError(PLATFORM, self._reason(exc)) from None
        finally:
            for request in requests:
                await request.shutdown()

    def _build_application(self) -> Application[Any, Any, Any, Any, Any, Any]:
        api_url = self.config.api_url
        self._requests = (
            HTTPXRequest(connection_pool_size=CONNECTIONS),
            HTTPXRequest(connection_pool_size=1),
        )
        builder = (
            ApplicationBuilder()
            .token(self._token)
            .base_url(api_url)
            .request(self._requests[0])
            .get_updates_request(self._requests[1])
            .rate_limiter(_Limiter(max_retries=SEND_RETRIES))
            .updater(None)
        )
        if api_url.endswith("/bot"):
            builder = builder.base_file_url(api_url[: -len("bot")] + "file/bot")
        return builder.build()

    @property
    def _bot(self) -> ExtBot[Any]:
        if self._app is None:
            raise AdapterError(PLATFORM, "the adapter is not started")
        bot: ExtBot[Any] = self._app.bot
        return bot

    # --- receiving: long polling -----------------------------------------------------

    async def _poll(self) -> None:
        failures = 0
        while True:
            try:
                updates = await self._bot.get_updates(
                    offset=self._offset,
                    timeout=self.poll_timeout,
                    allowed_updates=UPDATE_TYPES,
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                delay = POLL_BACKOFF[min(failures, len(POLL_BACKOFF)) - 1]
                if isinstance(exc, RetryAfter):
                    delay = max(
                        delay,
                        exc.retry_after
                        if isinstance(exc.retry_after, int)
                        else exc.retry_after.total_seconds(),
                    )
                self._poll_failed(exc, failures, delay)
                await asyncio.sleep(delay)
                continue
            self._confirmed = self._offset
            if failures or self.state is not AdapterState.CONNECTED:
                if failures:
                    log.info("Telegram reachable again after %d failed attempt(s)", failures)
                self.state = AdapterState.CONNECTED
                failures = 0
            stored_ok = True
            for update in updates:
                try:
                    await self._process(update)
                except StorageError as exc:
                    # Leave the offset here: Telegram delivers this update again.
                    log.error("could not store Telegram update %d: %s", update.update_id, exc)
                    stored_ok = False
                    break
                except Exception:
                    log.exception(
                        "Telegram update %d could not be handled; skipped", update.update_id
                    )
                self._offset = update.update_id + 1
            if not stored_ok:
                await asyncio.sleep(POLL_BACKOFF[1])

    def _poll_failed(self, exc: Exception, failures: int, delay: float) -> None:
        reason = self._reason(exc)
        if isinstance(exc, Conflict):
            reason += " (another process is polling with this bot token, or a webhook is set)"
        was_connected = self.state is AdapterState.CONNECTED
        self.state = AdapterState.DISCONNECTED
        if was_connected or failures in (1, 5) or failures % 30 == 0:
            log.warning(
                "Telegram getUpdates failed (%d in a row): %s; retrying in %.0fs",
                failures,
                reason,
                delay,
            )
        else:
            log.debug("Telegram getUpdates failed again: %s", reason)

    async def _confirm_offset(self) -> None:
        """Tell Telegram which updates are done, so a restart does not fetch them again
        (harmless if it did: the store drops duplicates)."""
        if self._app is None or self._offset is None or self._offset == self._confirmed:
            return
        try:
            async with asyncio.timeout(3):
                await self._bot.get_updates(offset=self._offset, timeout=0, limit=1)
            self._confirmed = self._offset
        except Exception as exc:
            log.debug("could not confirm the last updates: %s", self._redact(str(exc)))

    # --- receiving: webhook ----------------------------------------------------------

    async def _start_webhook(self) -> None:
        url = self.config.webhook_url or ""
        secret = self.config.webhook_secret
        path = urlsplit(url).path or "/"
        app = web.Application()
        app.router.add_post(path, self._on_webhook)
        try:
            self._web = await serve(app, self.config.listen)
        except ListenError as exc:
            raise AdapterError(PLATFORM, str(exc)) from None
        try:
            await self._bot.set_webhook(
                url=url,
                secret_token=secret.get_secret_value() if secret else None,
                allowed_updates=UPDATE_TYPES,
            )
        except TelegramError as exc:
            raise AdapterError(PLATFORM, f"setWebhook failed: {self._reason(exc)}") from None
        log.info("Telegram webhook %s registered; listening on %s", url, self.config.listen)

    async def _on_webhook(self, request: web.Request) -> web.Response:
        secret = self.config.webhook_secret
        expected = secret.get_secret_value().encode() if secret else b""
        given = request.headers.get(SECRET_HEADER, "").encode("utf-8", "replace")
        if not hmac.compare_digest(given, expected):
            log.warning(
                "Telegram webhook: request from %s without the right secret; refused",
                request.remote,
            )
            return web.Response(status=403)
        try:
            update = Update.de_json(await request.json(), self._bot)
        except Exception:
            log.warning("Telegram webhook: unreadable update ignored")
            return web.Response(status=200)  # a retry would be just as unreadable
        try:
            await self._process(update)
        except StorageError as exc:
            log.error("could not store Telegram update %d: %s", update.update_id, exc)
            return web.Response(status=500)  # Telegram delivers it again
        except Exception:
            log.exception("Telegram update %d could not be handled; skipped", update.update_id)
        return web.Response(status=200)

    # --- handling one update -----------------------------------------------------------

    async def _process(self, update: Update) -> None:
        """Route one update. Raises StorageError when a message could not be committed."""
        if update.my_chat_member is not None:
            member = update.my_chat_member
            chat = member.chat
            log.info(
                "bot status in %s chat %d (%s) changed from %s to %s by user %d (@%s)",
                chat.type,
                chat.id,
                chat.title or chat.username or "",
                member.old_chat_member.status,
                member.new_chat_member.status,
                member.from_user.id,
                member.from_user.username or "",
            )
            return
        if update.edited_message is not None or update.edited_channel_post is not None:
            log.debug("edited message in update %d ignored", update.update_id)
            return
        message = update.message
        if message is None:
            log.debug("update %d ignored (no message)", update.update_id)
            return
        await self._on_message(message)

    async def _on_message(self, message: Message) -> None:
        chat = message.chat
        user = message.from_user
        if chat.type == ChatType.CHANNEL or user is None or user.is_bot:
            return
        if message.is_automatic_forward:  # a channel post mirrored into its discussion group
            return
        private = chat.type == ChatType.PRIVATE
        found, args = self._command(message)
        if found is False:
            return  # /cmd@another_bot
        # an unknown /word is plain text
        command = found if isinstance(found, str) and found in _OURS else None
        text = message.text if message.text is not None else message.caption
        mentioned = self._mentions_bot(message)
        triggered = (
            private
            or command is not None
            or mentioned
            or self._replies_to_bot(message)
            or self.config.group_trigger == "all"
        )
        if not triggered:
            return
        if not self._allowed(message):
            self._refuse(message, private)
            return
        key = self._key(message)
        agent = self.config.chat_agents.get(str(chat.id), self.config.agent)
        if command == "ask":
            text = args
        elif command in ("start", "help"):
            hello = HELLO_PRIVATE if private else HELLO_GROUP.format(username=self.username)
            self._answer(message, hello)
            return
        elif command in ("reset", "new"):
            await self.dispatcher.reset(key, agent)
            self._answer(message, RESET_DONE)
            return
        elif command == "status":
            conversation = await self.dispatcher.conversation(key)
            if conversation is None:
                self._answer(message, STATUS_EMPTY.format(agent=agent))
            else:
                self._answer(
                    message,
                    STATUS.format(
                        agent=conversation.agent,
                        turns=conversation.turns,
                        input_tokens=conversation.input_tokens,
                        output_tokens=conversation.output_tokens,
                    ),
                )
            return
        if text is None:
            if message.effective_attachment is not None:
                self.dispatcher.note_refused(PLATFORM)
                self._answer(message, TEXT_ONLY)
            # else: a service message (someone joined, a pinned message...): nothing to do
            return
        if mentioned and command is None:
            text = self._strip_mentions(message)
        text = text.strip()
        if not text:
            self._answer(message, ASK_USAGE if command == "ask" else EMPTY_MENTION)
            return
        thread = message.message_thread_id if message.is_topic_message else None
        await self.dispatcher.submit(
            IncomingMessage(
                key=key,
                event_id=f"{self.bot_id}:{chat.id}:{message.message_id}",
                sender=str(user.id),
                text=text,
                agent=agent,
                reply_to=str(message.message_id),
                meta={
                    "chat_id": chat.id,
                    "thread_id": thread,
                    "chat_type": str(chat.type),
                    "user_id": user.id,
                    "username": user.username,
                },
            )
        )

    def _key(self, message: Message) -> ConversationKey:
        # message_thread_id also appears on replies in non-forum groups: only a
        # topic message belongs to a forum topic (the General topic has none).
        thread = str(message.message_thread_id) if message.is_topic_message else None
        return ConversationKey(PLATFORM, str(self.bot_id), str(message.chat.id), thread)

    def _command(self, message: Message) -> tuple[str | bool | None, str]:
        """(command, arguments) for ``/cmd[@bot] args``; command False when the command
        names another bot; (None, "") when there is no command."""
        text = message.text
        if not text or not message.entities:
            return None, ""
        first = message.entities[0]
        if first.type != MessageEntityType.BOT_COMMAND or first.offset != 0:
            return None, ""
        word = message.parse_entity(first)[1:]
        name, _, target = word.partition("@")
        if target and target.lower() != self.username.lower():
            return False, ""
        rest = _utf16_slice(text, first.length, None)
        return name.lower(), rest.strip()

    def _mention_entities(self, message: Message) -> Iterable[MessageEntity]:
        entities = message.entities if message.text is not None else message.caption_entities
        source = message.text if message.text is not None else message.caption
        if not source:
            return
        for entity in entities:
            if entity.type == MessageEntityType.MENTION:
                mention = _utf16_slice(source, entity.offset, entity.offset + entity.length)
                if mention[1:].lower() == self.username.lower():
                    yield entity
            elif (
                entity.type == MessageEntityType.TEXT_MENTION
                and entity.user is not None
                and entity.user.id == self.bot_id
            ):
                yield entity

    def _mentions_bot(self, message: Message) -> bool:
        return any(True for _ in self._mention_entities(message))

    def _strip_mentions(self, message: Message) -> str:
        source = (message.text if message.text is not None else message.caption) or ""
        data = source.encode("utf-16-le", "surrogatepass")
        for entity in sorted(self._mention_entities(message), key=lambda e: -e.offset):
            if entity.type == MessageEntityType.TEXT_MENTION:
                continue  # a name, part of the sentence
            data = data[: entity.offset * 2] + data[(entity.offset + entity.length) * 2 :]
        text = data.decode("utf-16-le", "surrogatepass")
        return " ".join(part for part in text.split(" ") if part) if "\n" not in text else text

    def _replies_to_bot(self, message: Message) -> bool:
        original = message.reply_to_message
        if original is None or original.from_user is None or original.from_user.id != self.bot_id:
            return False
        # In a forum topic every message "replies" to the topic's creation message,
        # which is the bot's when the bot created the topic: that is not a reply.
        if original.forum_topic_created is not None:
            return False
        return not (message.is_topic_message and original.message_id == message.message_thread_id)

    def _allowed(self, message: Message) -> bool:
        user = message.from_user
        assert user is not None
        if message.chat.type != ChatType.PRIVATE and message.chat.id in self._allowed_chats:
            return True
        if self._allow_anyone or user.id in self._allowed_ids:
            return True
        return user.username is not None and user.username.lower() in self._allowed_names

    def _refuse(self, message: Message, private: bool) -> None:
        user = message.from_user
        assert user is not None
        self.dispatcher.note_refused(PLATFORM)
        log.info(
            "refused Telegram user %d (@%s) in %s chat %d: not in telegram.allowed_users%s",
            user.id,
            user.username or "-",
            message.chat.type,
            message.chat.id,
            "" if private else " and the chat is not in telegram.allowed_chats",
        )
        if private and user.id not in self._refused_users:
            self._refused_users.add(user.id)
            self._answer(message, REFUSED.format(user_id=user.id))

    # --- sending -----------------------------------------------------------------------

    def _answer(self, message: Message, text: str) -> None:
        """Reply with a short fixed text, in the background (the poll loop goes on)."""
        thread = message.message_thread_id if message.is_topic_message else None

        async def send() -> None:
            try:
                await self._send_chunk(message.chat.id, thread, Chunk(text), message.message_id)
            except (AdapterError, _Undeliverable) as exc:
                log.warning("could not answer in chat %d: %s", message.chat.id, exc)

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
        done = self._progress.get(message.id, 0)
        try:
            for index in range(done, len(chunks)):
                await self._send_chunk(
                    chat_id, thread, chunks[index], reply_to if index == 0 else None
                )
                self._progress[message.id] = index + 1
        except _Undeliverable as exc:
            log.warning("message %d: the reply cannot be posted, dropped: %s", message.id, exc)
        self._progress.pop(message.id, None)

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
            return _Undeliverable(reason)
        return AdapterError(PLATFORM, f"sendMessage failed: {reason}")

    @contextlib.asynccontextmanager
    async def working(self, message: InboxMessage) -> AsyncIterator[None]:
        chat_id = int(message.meta["chat_id"])
        thread = message.meta.get("thread_id")
        task = asyncio.create_task(self._typing(chat_id, thread), name="telegram-typing")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _typing(self, chat_id: int, thread: int | None) -> None:
        while True:
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


def _utf16_slice(text: str, start: int, end: int | None) -> str:
    """``text[start:end]`` in UTF-16 code units, as Telegram's entity offsets count."""
    data = text.encode("utf-16-le", "surrogatepass")
    return data[start * 2 : None if end is None else end * 2].decode("utf-16-le", "surrogatepass")
