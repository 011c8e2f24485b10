"""`TelegramAdapter`: private chats, groups and forum topics through python-telegram-bot.

python-telegram-bot (v22) is driven inside the bridge's own event loop: an
`Application` gives us the configured `ExtBot` (base URL, `AIORateLimiter`,
HTTP pools) and is initialized, started, stopped and shut down by this adapter;
``run_polling()`` is never used, so Slack and Telegram share one process.

The adapter is the transport; two modules beside it hold the rest:
`adapters.telegram_polling` (long polling: raw batches, offsets, one poller per
token) and `adapters.telegram_events` (what an update means: the `Action` this
module carries out). Every update, polled or posted to the webhook, goes
through `handle_update()`: parsed on its own, so that one that PTB cannot parse
is logged, counted (``bad_updates``) and skipped instead of blocking the rest.
A message is acknowledged to Telegram only after `Dispatcher.submit()` has
committed it: the poller's offset stays, or the webhook answers 500, when the
store failed.

Replies never use ``parse_mode``: agent Markdown becomes plain text plus
entities (see `adapters.telegram_render`), with a plain-text fallback.

The bot token is part of every Bot API URL. It never goes to the log from here:
PTB's own error for a rejected token quotes it, so that error is replaced by
ours; httpx's INFO request log is turned down by `bridge.logs`. Message text
goes to the log at DEBUG only.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
from telegram import Bot, Update
from telegram.error import InvalidToken, TelegramError
from telegram.ext import Application, ApplicationBuilder
from telegram.request import HTTPXRequest

from adapters.base import AdapterState
from adapters.telegram_access import approve, resolve_stranger
from adapters.telegram_events import (
    COMMANDS,
    RESET_DONE,
    Action,
    Answer,
    Approve,
    Refuse,
    Reset,
    Status,
    Stranger,
    Submit,
    TelegramEvents,
    UsageQuery,
    status_text,
)
from adapters.telegram_live import TelegramDraft
from adapters.telegram_polling import (
    POLL_TIMEOUT,
    START_POLL_TIMEOUT,
    UPDATE_TYPES,
    Instance,
    Poller,
    PollRequest,
    update_id_of,
)
from adapters.telegram_sending import Limiter, TelegramSending
from bridge.config import TelegramConfig
from bridge.errors import AdapterError, CredentialsRejected, StorageError
from bridge.logs import ThrottledLog
from bridge.web import ListenError, serve

if TYPE_CHECKING:
    from aiohttp import web

    from bridge.dispatcher import Dispatcher

log = logging.getLogger("adapters.telegram")

PLATFORM = "telegram"
#: Flood waits (429 retry_after) the rate limiter sits out before giving up on
#: one request; the dispatcher then retries the whole reply later.
SEND_RETRIES = 5
#: HTTP connections for sending, at least (replies to many chats go out in
#: parallel); the pool grows to ``dispatcher.max_concurrency``.
CONNECTIONS = 8
#: Seconds a request waits for a free pooled connection (PTB's default, 1 s, would
#: fail replies in a burst instead of queueing them).
POOL_TIMEOUT = 30.0
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
#: Seconds a file download may pause between chunks.
FILE_TIMEOUT = 60.0


class TelegramAdapter(TelegramSending):
    """Telegram through the Bot API (long polling, or a webhook).

    Example::

        async with TelegramAdapter(dispatcher, config.telegram) as telegram:
            dispatcher.register(telegram)   # before start, in the daemon
            ...
    """

    platform = PLATFORM
    reloadable = frozenset({"allowed_users", "allowed_chats", "admins"})

    def __init__(self, dispatcher: Dispatcher, config: TelegramConfig) -> None:
        super().__init__(dispatcher)
        self.config = config
        self._token = config.bot_token.get_secret_value()
        self.events = TelegramEvents(config)
        self._app: Application[Any, Any, Any, Any, Any, Any] | None = None
        self.bot_id = 0
        self.username = ""
        self.poller: Poller | None = None
        self._web: web.AppRunner | None = None
        self._requests: tuple[HTTPXRequest, ...] = ()
        #: File downloads (`adapters.telegram_files`): streamed, which PTB's requests
        #: cannot do. Redirects are not followed: the URL holds the token.
        self._files: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._rejected = ThrottledLog(log, "Telegram webhook request refused")
        #: message id -> chunks already posted, so that a retried reply does not
        #: repeat the pieces that went out before a failure.
        self._progress: dict[int, int] = {}
        #: message id -> the draft showing its answer (private chats, streaming agents).
        self._drafts: dict[int, TelegramDraft] = {}
        #: Seconds a getUpdates call long-polls; tests may lower it.
        self.poll_timeout: float = POLL_TIMEOUT
        #: The first poll's, in start(): it must outlast a competing poller's retry.
        self.start_poll_timeout: float = START_POLL_TIMEOUT

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        self.state = AdapterState.CONNECTING
        self._app = self._build_application()
        if self._files is None:
            self._files = httpx.AsyncClient(
                timeout=httpx.Timeout(FILE_TIMEOUT, connect=10.0), follow_redirects=False
            )
        bot = self._app.bot
        try:
            await self._app.initialize()  # getMe: checks the token
        except Exception as exc:
            raise self._start_error(exc) from None
        self.bot_id = self.events.bot_id = bot.id
        self.username = self.events.username = bot.username
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
                raise self._start_error(exc) from None
            self.poller = Poller(
                bot,
                self._requests[1],
                self.handle_update,
                self._set_state,
                self._reason,
                instance=self._instance(),
                poll_timeout=self.poll_timeout,
                start_poll_timeout=self.start_poll_timeout,
            )
            await self.poller.start()
        self.state = AdapterState.CONNECTED

    def _start_error(self, exc: Exception) -> AdapterError:
        """A refused token (401/404 on the token's URL: PTB's InvalidToken) is for
        good; anything else at start (network, 5xx, 429, a conflicting poller) may pass."""
        if isinstance(exc, InvalidToken):
            return CredentialsRejected(PLATFORM, self._reason(exc))
        return AdapterError(PLATFORM, self._reason(exc))

    def reload(self, config: object) -> None:
        """New allowlists (SIGHUP), applied to the next update; the connection stays."""
        if not isinstance(config, TelegramConfig):
            raise TypeError(f"expected a TelegramConfig, not {type(config).__name__}")
        self.config = config
        self.events.reload(config)
        log.info(
            "Telegram access reloaded: %d allowed user entries, %d allowed chats",
            len(config.allowed_users),
            len(config.allowed_chats),
        )

    def _instance(self) -> Instance:
        """The core's instance (heartbeat and leases): it elects the poller."""
        return self.dispatcher.instance

    def _set_state(self, state: AdapterState) -> None:
        self.state = state

    @property
    def problem(self) -> str | None:
        return None if self.poller is None else self.poller.problem

    async def stop(self) -> None:
        if self.poller is not None:
            await self.poller.stop()
            self.poller = None
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
        if self._files is not None:
            await self._files.aclose()
            self._files = None
        self.state = AdapterState.STOPPED

    async def check(self) -> str:
        """getMe with the configured token, without starting the adapter."""
        requests = (HTTPXRequest(), HTTPXRequest())
        bot = Bot(
            self._token,
            base_url=self.config.api_url,
            base_file_url=self.config.effective_file_url,
            request=requests[0],
            get_updates_request=requests[1],
        )
        try:
            async with bot:
                return f"@{bot.username} (id {bot.id})"
        except Exception as exc:
            raise self._start_error(exc) from None
        finally:
            for request in requests:
                await request.shutdown()

    def _build_application(self) -> Application[Any, Any, Any, Any, Any, Any]:
        api_url = self.config.api_url
        self._requests = (
            HTTPXRequest(
                connection_pool_size=max(CONNECTIONS, self.dispatcher.max_concurrency),
                pool_timeout=POOL_TIMEOUT,
            ),
            PollRequest(connection_pool_size=1),
        )
        builder = (
            ApplicationBuilder()
            .token(self._token)
            .base_url(api_url)
            # PTB's default is Telegram's host whatever base_url says: never send the
            # token there when the Bot API is elsewhere.
            .base_file_url(self.config.effective_file_url)
            .request(self._requests[0])
            .get_updates_request(self._requests[1])
            .rate_limiter(
                Limiter(
                    # 0 switches the overall limit off (AIORateLimiter's own convention).
                    overall_max_rate=self.config.max_messages_per_second,
                    max_retries=SEND_RETRIES,
                )
            )
            .updater(None)
        )
        return builder.build()

    # --- receiving: webhook ----------------------------------------------------------

    async def _start_webhook(self) -> None:
        url = self.config.webhook_url or ""
        secret = self.config.webhook_secret
        path = urlsplit(url).path or "/"
        from aiohttp import web  # webhook mode only (`bridge.web`)

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
        except InvalidToken as exc:
            raise self._start_error(exc) from None
        except TelegramError as exc:
            raise AdapterError(PLATFORM, f"setWebhook failed: {self._reason(exc)}") from None
        log.info("Telegram webhook %s registered; listening on %s", url, self.config.listen)

    async def _on_webhook(self, request: web.Request) -> web.Response:
        from aiohttp import web

        secret = self.config.webhook_secret
        expected = secret.get_secret_value().encode() if secret else b""
        given = request.headers.get(SECRET_HEADER, "").encode("utf-8", "replace")
        if not hmac.compare_digest(given, expected):
            # A scanner or a misconfigured proxy must not flood the journal.
            reason = "wrong secret" if given else "no secret"
            self.dispatcher.metrics.rejected_requests.labels(
                endpoint=PLATFORM, reason=reason.replace(" ", "_")
            ).inc()
            self._rejected.note(reason, remote=request.remote)
            return web.Response(status=403)
        try:
            raw = await request.json()
        except Exception as exc:
            self._skipped(None, None, exc, "is not JSON")
            return web.Response(status=200)  # a retry would be just as unreadable
        try:
            await self.handle_update(raw)
        except StorageError as exc:
            log.error("could not store Telegram update %s: %s", update_id_of(raw), exc)
            return web.Response(status=500)  # Telegram delivers it again
        return web.Response(status=200)

    # --- handling one update -----------------------------------------------------------

    async def handle_update(self, raw: object) -> None:
        """Parse one update as Telegram sent it (decoded JSON), decide and act.

        An update that cannot be parsed or handled is logged (its id and the
        exception type; the content at DEBUG only), counted and skipped. Only
        `StorageError` propagates: the update must then come again.
        """
        update_id = update_id_of(raw)
        try:
            if not isinstance(raw, dict):
                raise TypeError(f"an update is a JSON object, not {type(raw).__name__}")
            update = Update.de_json(raw, self._bot)
        except Exception as exc:
            self._skipped(update_id, raw, exc, "could not be parsed")
            return
        try:
            await self._carry_out(self.events.route(update))
        except StorageError:
            raise
        except Exception as exc:
            self._skipped(update_id, raw, exc, "could not be handled")

    def _skipped(self, update_id: int | None, raw: object, exc: Exception, what: str) -> None:
        # The exception's text may quote the message: it goes to DEBUG with the content.
        self.dispatcher.metrics.bad_updates.labels(PLATFORM).inc()
        log.warning("Telegram update %s %s (%s); skipped", update_id, what, type(exc).__name__)
        log.debug("skipped Telegram update %s: %.2000r", update_id, raw, exc_info=exc)

    async def _carry_out(self, action: Action) -> None:
        match action:
            case Submit(incoming):
                await self.dispatcher.submit(incoming)
            case Answer(message, text):
                self._answer(message, text)
            case Refuse(message, text):
                self.dispatcher.note_refused(PLATFORM)
                if text is not None:
                    self._answer(message, text)
            case Reset(message, key, agent):
                await self.dispatcher.reset(key, agent)
                self._answer(message, RESET_DONE)
            case Status(message, key, agent):
                conversation = await self.dispatcher.conversation(key)
                self._answer(message, status_text(agent, conversation))
            case Stranger(message, private):
                access = self.dispatcher.access
                await self._carry_out(await resolve_stranger(self.events, access, message, private))
            case Approve(message, code):
                text, tell = await approve(self.dispatcher.access, message, code)
                self._answer(message, text)
                if tell is not None:
                    self._tell(*tell)
            case UsageQuery(message, user, chat, agent):
                self._answer(message, await self.dispatcher.usage_text(PLATFORM, user, chat, agent))
            case None:
                pass
