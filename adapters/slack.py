"""`SlackAdapter`: channel threads and DMs through slack-bolt, in Socket Mode or over HTTP.

A slack-bolt `AsyncApp` runs inside the bridge's event loop. Events arrive over a
Socket Mode WebSocket (`adapters.slack_socket`) or as Events API HTTP requests served by
our own aiohttp server, whose endpoint (`adapters.slack_http`) verifies the signature
before anything is parsed. What an event means (answer, refuse, skip) is
decided by the pure functions of `adapters.slack_events`; this module is the transport.

Acknowledgement: the app runs with ``process_before_response=True``, so bolt sends the
ack (the Socket Mode ``{"envelope_id": ...}`` frame, or the HTTP 200) only when the
listener returns. The listener awaits `Dispatcher.submit()`, which commits the message
to the store and merely schedules the agent call, then acks: a crash after the ack
cannot lose the message, and the agent is never awaited before the ack. If the store
fails (`StorageError`), bolt answers 500 / sends no ack, and Slack delivers the event
again. Any other failure is a bug or junk in the event: it is logged and the event is
acknowledged (skipped), since a redelivery would fail the same way.

Exactly once on the way out: `send_reply` tags every piece of a reply, and skips the
pieces an earlier attempt already posted (`adapters.slack_replies`).

The AI-app view (assistant threads: prompts, titles, the status while the agent works)
is `adapters.slack_assistant`; a thread's earlier messages, read at the bot's first
mention in it, `adapters.slack_context`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import traceback
from collections.abc import AsyncGenerator, AsyncIterator, Coroutine, Mapping
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web
from slack_bolt.async_app import AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.web.async_client import AsyncWebClient

from adapters.base import AdapterState, ChatAdapter
from adapters.slack_access import refusal_text
from adapters.slack_assistant import AssistantThreads
from adapters.slack_commands import answer_command
from adapters.slack_context import thread_context
from adapters.slack_events import (
    PLATFORM,
    TEXT_FILES,
    TEXT_REFUSED,
    TEXT_RESET,
    TEXT_STORAGE,
    USER_NOT_ALLOWED,
    Accept,
    Note,
    Refuse,
    Reset,
    Skip,
    SlackIdentity,
    _Recent,
    event_team,
    read_event,
    slack_to_text,
)
from adapters.slack_feedback import FEEDBACK_ACTION, feedback_listener
from adapters.slack_files import describe, download, file_info, is_stub
from adapters.slack_http import SlackHttpEndpoint
from adapters.slack_live import SlackStream
from adapters.slack_replies import MARKDOWN_LIMIT, SlackPoster
from adapters.slack_socket import SlackSocket
from adapters.slack_web import auth_test, posting_client, read_back_client, web_client
from bridge.attachments import Attachment
from bridge.chat import LIVE_REF
from bridge.config import SlackConfig
from bridge.errors import AdapterError, StorageError
from bridge.model import ConversationKey, InboxMessage, Reply
from bridge.stream import LiveAnswer
from bridge.web import ListenError, serve

if TYPE_CHECKING:
    from bridge.dispatcher import Dispatcher

# Re-exported: the names the adapter's users (and tests) know it by.
__all__ = [
    "MARKDOWN_LIMIT",
    "TEXT_FILES",
    "TEXT_REFUSED",
    "TEXT_RESET",
    "SlackAdapter",
    "SlackIdentity",
    "slack_to_text",
]

log = logging.getLogger("adapters.slack")


class SlackAdapter(ChatAdapter):
    """Slack through slack-bolt. ``ping_interval`` (Socket Mode keep-alive and reconnect
    pace), ``watch_interval`` (how often the connection state is checked) and
    ``connect_timeout`` are tuning knobs for tests; the defaults suit production."""

    platform = PLATFORM
    reloadable = frozenset({"allowed_channels", "allowed_users", "allowed_teams", "admins"})

    def __init__(
        self,
        dispatcher: Dispatcher,
        config: SlackConfig,
        *,
        ping_interval: float = 10.0,
        watch_interval: float = 1.0,
        connect_timeout: float = 30.0,
    ) -> None:
        super().__init__(dispatcher)
        self.config = config
        self.identity: SlackIdentity | None = None
        self._ping_interval = ping_interval
        self._watch_interval = watch_interval
        self._connect_timeout = connect_timeout
        self._session: aiohttp.ClientSession | None = None
        self._client: AsyncWebClient | None = None
        #: For reading our own posts back: no rate-limit retries (a ratelimited
        #: read-back is skipped, not waited for) and a short timeout.
        self._reader: AsyncWebClient | None = None
        #: For reply pieces: only 429s are retried in place (Slack posted nothing).
        self._poster: AsyncWebClient | None = None
        self._posts: SlackPoster | None = None
        #: message id -> its answer being streamed (`live`), until closed.
        self._streams: dict[int, SlackStream] = {}
        self._assistant: AssistantThreads | None = None
        self._app: AsyncApp | None = None
        self._socket: SlackSocket | None = None
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._seen_events = _Recent()
        self._seen_notes = _Recent()

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        self.state = AdapterState.CONNECTING
        # Sized like the agent pool: one connection per reply in flight.
        connector = aiohttp.TCPConnector(limit=max(8, self.dispatcher.max_concurrency))
        self._session = aiohttp.ClientSession(connector=connector)
        self._client = web_client(self.config, self._session)
        self._reader = read_back_client(self.config, self._session)
        self._poster = posting_client(self.config, self._session)
        self.identity = await auth_test(self._client)
        ident = self.identity
        self._posts = SlackPoster(
            ident,
            client=self._client,
            poster=self._poster,
            reader=self._reader,
            rate=self.config.channel_messages_per_second,
            feedback=self.config.feedback,
        )
        self._assistant = AssistantThreads(self._client, ident, self.config)
        self._app = self._build_app()
        if self.config.mode == "socket":
            if self.config.app_token is None:
                raise AdapterError(PLATFORM, "slack.app_token is required in Socket Mode")
            self._socket = SlackSocket(
                self._app,
                self._client,
                self.config.app_token.get_secret_value(),
                on_change=self._on_socket_change,
                ping_interval=self._ping_interval,
                watch_interval=self._watch_interval,
                connect_timeout=self._connect_timeout,
            )
            await self._socket.open()
        else:
            await self._serve_http()
        self.state = AdapterState.CONNECTED
        log.info(
            "Slack connected as @%s (%s) in %s (%s), %s mode",
            ident.user,
            ident.bot_user_id,
            ident.team,
            ident.team_id,
            self.config.mode,
        )

    def reload(self, config: object) -> None:
        """New allowlists (SIGHUP), applied to the next event; the connection stays."""
        if not isinstance(config, SlackConfig):
            raise TypeError(f"expected a SlackConfig, not {type(config).__name__}")
        self.config = config
        if self._assistant is not None:
            self._assistant.config = config
        log.info(
            "Slack access reloaded: channels %s, users %s, teams %s",
            _count(config.allowed_channels),
            _count(config.allowed_users),
            _count(config.allowed_teams),
        )

    async def stop(self) -> None:
        if self._socket is not None:
            await self._socket.close()
            self._socket = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None
        self._client = self._reader = self._poster = None
        self._posts = self._assistant = None
        self.state = AdapterState.STOPPED

    async def check(self) -> str:
        if self._client is not None:
            ident = await auth_test(self._client)
        else:
            async with aiohttp.ClientSession() as session:
                ident = await auth_test(web_client(self.config, session))
        return f"bot @{ident.user} ({ident.bot_user_id}) in {ident.team} ({ident.team_id})"

    def _build_app(self) -> AsyncApp:
        ident = self.identity
        assert ident is not None and self.config is not None
        token = self.config.bot_token.get_secret_value()

        # Authorization from our own auth.test: bolt would otherwise call auth.test at
        # the first event and, if that call failed, ack the event without running it.
        async def authorize() -> AuthorizeResult:
            return AuthorizeResult(
                enterprise_id=None,
                team_id=ident.team_id,
                team=ident.team,
                bot_user_id=ident.bot_user_id,
                bot_id=ident.bot_id,
                bot_token=token,
            )

        secret = self.config.signing_secret
        app = AsyncApp(
            name="agent-bridge",
            logger=logging.getLogger("adapters.slack.bolt"),
            # Explicit values everywhere: bolt falls back to SLACK_* environment variables.
            client=web_client(self.config, self._session, with_token=False),
            authorize=authorize,
            signing_secret=secret.get_secret_value() if secret is not None else "",
            # SlackHttpEndpoint verifies every HTTP request before bolt sees it (and
            # bolt's check would log a refused body at INFO); Socket Mode needs none.
            request_verification_enabled=False,
            process_before_response=True,
        )
        app.event("app_mention")(self._on_event)
        app.event("message")(self._on_event)
        app.event("assistant_thread_started")(self._on_thread_started)
        app.event("assistant_thread_context_changed")(self._on_context_changed)
        app.command("/agent")(self._on_command)
        app.action(FEEDBACK_ACTION)(feedback_listener(self.dispatcher))
        # Everything else (an event the manifest did not ask for) is acked and dropped,
        # so that Slack does not redeliver it.
        app.event(re.compile(".*"))(self._on_other_event)
        app.error(self._on_error)
        return app

    def _on_socket_change(self, connected: bool) -> None:
        if connected:
            log.info("Slack Socket Mode connection restored")
            self.state = AdapterState.CONNECTED
        else:
            log.warning("Slack Socket Mode connection lost; reconnecting")
            self.state = AdapterState.DISCONNECTED

    async def _serve_http(self) -> None:
        assert self._app is not None
        secret = self.config.signing_secret
        if secret is None:  # the config refuses mode = "http" without one
            raise AdapterError(PLATFORM, "slack.signing_secret is required in HTTP mode")
        endpoint = SlackHttpEndpoint(self._app, secret.get_secret_value(), self.dispatcher.metrics)
        webapp = web.Application()
        webapp.router.add_post(self.config.path, endpoint.handle)
        try:
            self._runner = await serve(webapp, self.config.listen)
        except ListenError as exc:
            raise AdapterError(PLATFORM, str(exc)) from None

    # --- incoming events -------------------------------------------------------------

    async def _on_event(
        self,
        body: dict[str, Any],
        event: dict[str, Any],
        ack: AsyncAck,
        request: AsyncBoltRequest,
    ) -> None:
        event_id = body.get("event_id")
        if isinstance(event_id, str) and event_id in self._seen_events:
            log.debug("Slack event %s already handled; acking the redelivery", event_id)
            await ack()
            return
        retry = request.headers.get("x-slack-retry-num")
        if retry:
            log.debug("Slack event %s, delivery attempt %s", event_id, retry[0])
        assert self.identity is not None
        # May raise StorageError: bolt then answers 500 / sends no ack, and Slack retries.
        # Any other exception: _on_error acks (skips) the event.
        await self._handle_message(event_team(body, self.identity.team_id), event)
        if isinstance(event_id, str):
            self._seen_events.add(event_id)
        await ack()

    async def _on_other_event(self, ack: AsyncAck) -> None:
        await ack()

    async def _on_thread_started(
        self, body: dict[str, Any], event: dict[str, Any], ack: AsyncAck
    ) -> None:
        # The prompts are set after the ack: a slow Web API call must not delay it.
        assert self._assistant is not None and self.identity is not None
        self._spawn(self._assistant.thread_started(event, event_team(body, self.identity.team_id)))
        await ack()

    async def _on_context_changed(self, event: dict[str, Any], ack: AsyncAck) -> None:
        assert self._assistant is not None
        self._assistant.context_changed(event)
        await ack()

    async def _on_error(self, error: Exception, request: AsyncBoltRequest) -> BoltResponse | None:
        """bolt's error handler, for listeners and middleware alike. A StorageError
        leaves the event unacknowledged (Slack delivers it again); anything else is a
        bug or junk that a redelivery would hit again, so the event is acknowledged."""
        body = request.body if isinstance(request.body, dict) else {}
        event = body.get("event")
        event = event if isinstance(event, dict) else {}
        what = _label(event.get("type") or body.get("command") or body.get("type"))
        where = _label(event.get("channel") or body.get("channel_id"))
        event_id = _label(body.get("event_id"))
        if isinstance(error, StorageError):
            log.error(
                "could not store Slack event %s (%s); not acknowledging it, Slack will "
                "deliver it again",
                event_id,
                error,
            )
            return None
        self.dispatcher.metrics.bad_updates.labels(PLATFORM).inc()
        # The exception's own text may quote the message: only its type and the
        # frames at ERROR, the whole of it at DEBUG.
        log.error(
            "Slack %s %s in %s failed (%s); skipped and acknowledged\n%s",
            what,
            event_id,
            where,
            type(error).__name__,
            "".join(traceback.format_tb(error.__traceback__)).rstrip(),
        )
        log.debug("Slack %s %s failed: %r", what, event_id, error)
        if body.get("command"):
            return BoltResponse(status=200, body={"text": TEXT_STORAGE})
        return BoltResponse(status=200, body="")

    async def _handle_message(self, team: str, event: Mapping[str, Any]) -> None:
        ident = self.identity
        assert ident is not None
        decision = read_event(event, team=team, identity=ident, config=self.config)
        if isinstance(decision, Skip):
            log.debug("Slack event skipped: %s", decision.why)
            return
        if decision.followup and await self.dispatcher.conversation(decision.key) is None:
            return  # a thread the bot is not part of
        message_id = decision.message_id
        # Asked only now that the config refuses: the store's allowlist (no cache).
        if (
            isinstance(decision, Refuse)
            and decision.why == USER_NOT_ALLOWED
            and await self.dispatcher.access.approved(PLATFORM, decision.user)
        ):
            decision = read_event(
                event, team=team, identity=ident, config=self.config, approved=True
            )
        if isinstance(decision, Refuse):
            # The code first: on a StorageError Slack retries, and the note is still due.
            text = None
            if message_id not in self._seen_notes:
                access = self.dispatcher.access
                text = await refusal_text(access, decision.why, decision.user, decision.channel)
            # add(): a copy of the event may have come in during the await.
            if text is not None and self._seen_notes.add(message_id):
                log.info(
                    "refused Slack message: %s (user=%s channel=%s team=%s)",
                    decision.why,
                    decision.user,
                    decision.channel,
                    decision.team,
                )
                self.dispatcher.note_refused(PLATFORM)
                self._spawn(
                    self._require_posts().ephemeral(
                        decision.channel, decision.user, text, decision.key.thread
                    )
                )
        elif isinstance(decision, Reset):
            if message_id not in self._seen_notes:
                # StorageError: no ack, Slack retries.
                await self.dispatcher.reset(decision.key, decision.agent)
                self._seen_notes.add(message_id)
                log.info("Slack conversation %s reset by %s", decision.key, decision.user)
                self._spawn(self._require_posts().note(decision.key, TEXT_RESET))
        elif isinstance(decision, Note):
            if self._seen_notes.add(message_id):
                self._spawn(self._require_posts().note(decision.key, decision.text))
        elif isinstance(decision, Accept):
            await self._accept(decision)

    async def _accept(self, decision: Accept) -> None:
        """Submit the message. The first one of a thread the bridge does not know yet
        gets the thread's earlier messages (a mention in a thread people started) or
        names its assistant thread (a DM thread)."""
        message, meta, key = decision.message, decision.message.meta, decision.key
        in_thread = meta.get("thread_ts") not in (None, meta.get("ts"))
        # A follow-up without a mention is in a thread the bridge knows already.
        earlier = in_thread and not (meta.get("dm") or decision.followup)
        earlier = earlier and self.config.context_chars > 0
        first = (earlier or (meta.get("dm") and in_thread)) and (
            await self.dispatcher.conversation(key) is None
        )
        if first and earlier:
            assert self._reader is not None and self.identity is not None
            context = await thread_context(
                self._reader,
                self.identity,
                channel=str(meta["channel"]),
                thread_ts=str(meta["thread_ts"]),
                before=str(meta["ts"]),
                limit=self.config.context_chars,
            )
            if context is not None:
                message = dataclasses.replace(message, meta={**meta, "context": context})
        if not await self.dispatcher.submit(message):
            log.debug("Slack message %s was already accepted", decision.message_id)
        elif first and meta.get("dm"):
            assert self._assistant is not None
            self._spawn(self._assistant.name_thread(key.chat, str(key.thread), message.text))

    # --- slash command ---------------------------------------------------------------

    async def _on_command(self, ack: AsyncAck, command: dict[str, Any]) -> None:
        assert self.identity is not None
        text = await answer_command(
            command,
            dispatcher=self.dispatcher,
            config=self.config,
            identity=self.identity,
            tell=self._tell,
        )
        await ack(text=text)

    # --- outgoing --------------------------------------------------------------------

    def _tell(self, channel: str, text: str) -> None:
        """Post a short text in ``channel`` (an approved user's DM), in the background."""
        assert self.identity is not None
        key = ConversationKey(PLATFORM, self.identity.team_id, channel, None)
        self._spawn(self._require_posts().note(key, text))

    def live(self, message: InboxMessage) -> LiveAnswer | None:
        """A streamed message in the thread (`adapters.slack_live`); None for a
        top-level DM reply (a stream is always a thread reply), and for a message
        whose earlier attempt streamed already: its reply replaces that message."""
        if self._poster is None or message.key.thread is None or LIVE_REF in message.meta:
            return None
        assistant = self._assistant
        stream = SlackStream(
            self._poster,
            message,
            started=self.dispatcher.note_live,
            posted=assistant.posted if assistant else None,
            closed=self._forget_stream,
        )
        self._streams[message.id] = stream
        return stream

    def _forget_stream(self, stream: SlackStream) -> None:
        if self._streams.get(stream.message.id) is stream:
            del self._streams[stream.message.id]

    async def send_reply(self, message: InboxMessage, reply: Reply) -> None:
        posts = self._require_posts()
        assistant = self._assistant
        await posts.reply(
            message,
            reply,
            posted=assistant.posted if assistant else None,
            stream=self._streams.get(message.id),
        )

    async def post_notice(self, chat: str, text: str) -> None:
        await self._require_posts().notice(chat, text)

    @contextlib.asynccontextmanager
    async def working(self, message: InboxMessage) -> AsyncIterator[None]:
        if self._assistant is None:
            yield
            return
        async with self._assistant.working(message):
            yield

    # --- files (`adapters.slack_files`) -----------------------------------------------

    async def describe_attachment(
        self, message: InboxMessage, attachment: Attachment
    ) -> Attachment:
        """A Slack Connect stub described by ``files.info``; any other file as it is."""
        if not is_stub(attachment) or self._client is None:
            return attachment
        return describe(await file_info(self._client, attachment)) or attachment

    async def attachment_chunks(
        self, message: InboxMessage, attachment: Attachment
    ) -> AsyncGenerator[bytes, None]:
        if self._client is None or self._session is None:
            raise AdapterError(PLATFORM, "the adapter is not started")
        chunks = download(
            self._client,
            self._session,
            token=self.config.bot_token.get_secret_value(),
            api_url=self.config.api_url,
            attachment=attachment,
        )
        async with contextlib.aclosing(chunks):
            async for chunk in chunks:
                yield chunk

    def _require_posts(self) -> SlackPoster:
        if self._posts is None:
            raise AdapterError(PLATFORM, "not started")
        return self._posts

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a side post (a note, a refusal) after the ack, keeping a reference."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _label(value: object) -> str:
    """An id from a request body, fit for a log line (junk becomes ``?``)."""
    return value if isinstance(value, str) and 0 < len(value) <= 64 else "?"


def _count(allowed: list[str]) -> str:
    return "any" if "*" in allowed else str(len(allowed))
