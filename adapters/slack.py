"""`SlackAdapter`: channel threads and DMs through slack-bolt, in Socket Mode or over HTTP.

A slack-bolt `AsyncApp` runs inside the bridge's event loop. Events arrive over a
Socket Mode WebSocket (``AsyncSocketModeHandler.connect_async()``, never
``start_async()``, which would take over the process) or as Events API HTTP requests
served by our own aiohttp server, verified with the signing secret.

Acknowledgement: the app runs with ``process_before_response=True``, so bolt sends the
ack (the Socket Mode ``{"envelope_id": ...}`` frame, or the HTTP 200) only when the
listener returns. The listener awaits `Dispatcher.submit()`, which commits the message
to the store and merely schedules the agent call, then acks: a crash after the ack
cannot lose the message, and the agent is never awaited before the ack. If the store
fails, the listener raises, bolt answers 500 / sends no ack, and Slack delivers the
event again.

Conversations: ``ConversationKey("slack", team_id, channel_id, thread)``, where
``thread`` is the thread root ts in channels (a top-level mention starts a thread under
itself) and in DM threads, and ``None`` for top-level DM messages (one conversation per
DM, answered top-level).

Exactly one answer per user message: the inbox event id is ``team:channel:ts``, so the
same message delivered as ``app_mention`` and as ``message``, or redelivered minutes
later, is accepted once by the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import re
from collections import OrderedDict
from collections.abc import AsyncIterator, Coroutine, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from adapters.base import AdapterState, ChatAdapter
from adapters.text import split_markdown
from bridge.config import SlackConfig
from bridge.errors import AdapterError, StorageError
from bridge.model import ConversationKey, InboxMessage, IncomingMessage, Reply
from bridge.web import ListenError, serve

if TYPE_CHECKING:
    from bridge.dispatcher import Dispatcher

log = logging.getLogger("adapters.slack")

PLATFORM = "slack"
#: ``markdown_text`` of chat.postMessage takes standard Markdown, up to 12,000 characters.
MARKDOWN_LIMIT = 12_000
#: The reaction shown on the user's message while the agent works on it.
WORKING_REACTION = "hourglass_flowing_sand"
#: Message subtypes that a person wrote; every other subtype (edits, deletions, joins,
#: bot posts...) is not answered.
USER_SUBTYPES = frozenset({None, "file_share", "thread_broadcast"})
#: Slack errors that mean "this token is wrong", for a useful start-up error.
TOKEN_ERRORS = frozenset(
    {"invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired"}
)
RESET_WORDS = frozenset({"reset", "/reset", "!reset"})

TEXT_REFUSED = "Sorry, you are not allowed to use me here. An administrator can give you access."
TEXT_FILES = "I can't read files yet. Please write your question as text."
TEXT_EMPTY = "Hi! Ask me something after the mention, e.g. <@{bot}> what can you do?"
TEXT_RESET = "OK, I started a new conversation: the agent won't remember what was said before."
TEXT_STORAGE = "Sorry, something went wrong on my side. Please try again in a minute."
TEXT_HELP = (
    "*How to talk to me*\n"
    "• In a channel: mention <@{bot}> with your question; I answer in a thread. "
    "{followups}\n"
    "• In a DM: just write; every message is answered.\n"
    "• `@{name} reset` in a thread (or `reset` in a DM) starts the conversation over.\n"
    "*Commands*: `/agent status`, `/agent reset` (in a DM), `/agent help`."
)
TEXT_FOLLOWUPS = "Later messages in that thread are answered without a new mention."


@dataclass(frozen=True, slots=True)
class SlackIdentity:
    """Who the bot is, from ``auth.test``."""

    team_id: str
    team: str
    bot_user_id: str
    bot_id: str | None
    user: str


class _Recent:
    """A bounded set of recently seen keys (Slack event ids, message ids): a fast first
    filter for redeliveries. The store's inbox is the real dedupe."""

    def __init__(self, size: int = 10_000) -> None:
        self._size = size
        self._items: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def add(self, key: str) -> bool:
        """Remember ``key``; False if it was already there."""
        if key in self._items:
            self._items.move_to_end(key)
            return False
        self._items[key] = None
        if len(self._items) > self._size:
            self._items.popitem(last=False)
        return True


_LINK = re.compile(r"<([^<>|]+)(?:\|([^<>]*))?>")


def slack_to_text(text: str) -> str:
    """Slack's message markup -> plain text for the agent.

    ``<https://x|label>`` -> ``label (https://x)``, ``<#C1|general>`` -> ``#general``,
    ``<@U1>`` -> ``@U1``, ``<!here>`` -> ``@here``; then ``&amp;``/``&lt;``/``&gt;``
    are unescaped (Slack escapes exactly these three)."""

    def sub(match: re.Match[str]) -> str:
        target, label = match.group(1), match.group(2)
        if target.startswith(("@", "#")):
            return f"{target[0]}{label}" if label else target
        if target.startswith("!"):
            name = target[1:].split("^", 1)[0]
            return label or f"@{name}"
        if label and label != target:
            return f"{label} ({target})"
        return target

    return html.unescape(_LINK.sub(sub, text)) if "<" in text or "&" in text else text


def _retry_handlers() -> list[AsyncRetryHandler]:
    # slack_sdk installs only the connection-error handler by default; a 429 (with
    # Retry-After) or a 5xx would otherwise fail the call at once.
    return [
        AsyncConnectionErrorRetryHandler(max_retry_count=2),
        AsyncRateLimitErrorRetryHandler(max_retry_count=5),
        AsyncServerErrorRetryHandler(max_retry_count=2),
    ]


class SlackAdapter(ChatAdapter):
    """Slack through slack-bolt. ``ping_interval`` (Socket Mode keep-alive and reconnect
    pace), ``watch_interval`` (how often the connection state is checked) and
    ``connect_timeout`` are tuning knobs for tests; the defaults suit production."""

    platform = PLATFORM

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
        self._api_url = config.api_url if config.api_url.endswith("/") else f"{config.api_url}/"
        self._ping_interval = ping_interval
        self._watch_interval = watch_interval
        self._connect_timeout = connect_timeout
        self._session: aiohttp.ClientSession | None = None
        self._client: AsyncWebClient | None = None
        self._app: AsyncApp | None = None
        self._socket: AsyncSocketModeHandler | None = None
        self._runner: web.AppRunner | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._seen_events = _Recent()
        self._seen_notes = _Recent()
        #: message id -> pieces of its reply already posted, so that a retried
        #: delivery does not post the first pieces twice.
        self._posted_pieces: dict[int, int] = {}
        self._mention: re.Pattern[str] | None = None

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        self.state = AdapterState.CONNECTING
        self._session = aiohttp.ClientSession()
        self._client = self._web_client(with_token=True)
        self.identity = await self._auth_test(self._client)
        ident = self.identity
        self._mention = re.compile(rf"<@{re.escape(ident.bot_user_id)}(?:\|[^>]*)?>")
        self._app = self._build_app()
        if self.config.mode == "socket":
            await self._connect_socket()
            self._watcher = asyncio.create_task(self._watch_socket(), name="slack-socket-watch")
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

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        if self._socket is not None:
            client = self._socket.client
            await self._socket.close_async()  # type: ignore[no-untyped-call]
            # close() cancels the client's tasks without waiting for them.
            pending = [
                t
                for t in (
                    client.message_processor,
                    client.current_session_monitor,
                    client.message_receiver,
                )
                if t is not None
            ]
            await asyncio.gather(*pending, return_exceptions=True)
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
        self._client = None
        self.state = AdapterState.STOPPED

    async def check(self) -> str:
        if self._client is not None:
            ident = await self._auth_test(self._client)
        else:
            async with aiohttp.ClientSession() as session:
                self._session = session
                try:
                    ident = await self._auth_test(self._web_client(with_token=True))
                finally:
                    self._session = None
        return f"bot @{ident.user} ({ident.bot_user_id}) in {ident.team} ({ident.team_id})"

    def _web_client(self, *, with_token: bool) -> AsyncWebClient:
        return AsyncWebClient(
            token=self.config.bot_token.get_secret_value() if with_token else None,
            base_url=self._api_url,
            session=self._session,
            retry_handlers=_retry_handlers(),
            logger=logging.getLogger("adapters.slack.sdk"),
        )

    async def _auth_test(self, client: AsyncWebClient) -> SlackIdentity:
        try:
            resp = await client.auth_test()
        except SlackApiError as exc:
            error = str(exc.response.get("error", "unknown_error"))
            if error in TOKEN_ERRORS or error == "not_allowed_token_type":
                raise AdapterError(PLATFORM, f"{error}: check slack.bot_token") from None
            raise AdapterError(PLATFORM, f"auth.test failed: {error}") from None
        except (aiohttp.ClientError, TimeoutError, SlackClientError) as exc:
            raise AdapterError(
                PLATFORM, f"cannot reach Slack at {self._api_url}: {type(exc).__name__}"
            ) from exc
        return SlackIdentity(
            team_id=str(resp.get("team_id", "")),
            team=str(resp.get("team", "")),
            bot_user_id=str(resp.get("user_id", "")),
            bot_id=resp.get("bot_id"),
            user=str(resp.get("user", "")),
        )

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
            client=self._web_client(with_token=False),
            authorize=authorize,
            signing_secret=secret.get_secret_value() if secret is not None else "",
            process_before_response=True,
        )
        app.event("app_mention")(self._on_event)
        app.event("message")(self._on_event)
        app.command("/agent")(self._on_command)
        # Everything else (an event the manifest did not ask for) is acked and dropped,
        # so that Slack does not redeliver it.
        app.event(re.compile(".*"))(self._on_other_event)
        app.error(self._on_error)
        return app

    async def _connect_socket(self) -> None:
        assert self._client is not None and self._app is not None
        if self.config.app_token is None:
            raise AdapterError(PLATFORM, "slack.app_token is required in Socket Mode")
        app_token = self.config.app_token.get_secret_value()
        # Open the first connection URL ourselves: the Socket Mode client retries a
        # failing apps.connections.open forever, which hides a wrong app token.
        try:
            resp = await self._client.apps_connections_open(app_token=app_token)
        except SlackApiError as exc:
            error = str(exc.response.get("error", "unknown_error"))
            if error in TOKEN_ERRORS:
                raise AdapterError(PLATFORM, f"{error}: check slack.app_token") from None
            if error == "not_allowed_token_type":
                raise AdapterError(
                    PLATFORM,
                    f"{error}: slack.app_token must be an app-level token (xapp-...) "
                    "with the connections:write scope",
                ) from None
            raise AdapterError(PLATFORM, f"apps.connections.open failed: {error}") from None
        except (aiohttp.ClientError, TimeoutError, SlackClientError) as exc:
            raise AdapterError(
                PLATFORM, f"cannot reach Slack at {self._api_url}: {type(exc).__name__}"
            ) from exc
        self._socket = AsyncSocketModeHandler(
            self._app,
            app_token=app_token,
            logger=logging.getLogger("adapters.slack.socket"),
            web_client=self._client,
            ping_interval=self._ping_interval,
        )
        self._socket.client.wss_uri = str(resp["url"])
        try:
            await asyncio.wait_for(
                self._socket.connect_async(),  # type: ignore[no-untyped-call]
                self._connect_timeout,
            )
        except TimeoutError:
            raise AdapterError(
                PLATFORM,
                f"could not open the Socket Mode connection within {self._connect_timeout:g} s",
            ) from None

    async def _watch_socket(self) -> None:
        """Keep ``state`` in step with the Socket Mode connection, which slack_sdk
        re-establishes on its own after a drop or a ``disconnect`` request."""
        assert self._socket is not None
        client = self._socket.client
        while True:
            await asyncio.sleep(self._watch_interval)
            try:
                connected = await client.is_connected()
            except Exception:  # a broken session object: count it as disconnected
                connected = False
            new = AdapterState.CONNECTED if connected else AdapterState.DISCONNECTED
            if new is not self.state:
                if connected:
                    log.info("Slack Socket Mode connection restored")
                else:
                    log.warning("Slack Socket Mode connection lost; reconnecting")
                self.state = new

    async def _serve_http(self) -> None:
        webapp = web.Application()
        webapp.router.add_post(self.config.path, self._on_http)
        try:
            self._runner = await serve(webapp, self.config.listen)
        except ListenError as exc:
            raise AdapterError(PLATFORM, str(exc)) from None

    async def _on_http(self, request: web.Request) -> web.Response:
        assert self._app is not None
        retry = request.headers.get("X-Slack-Retry-Num")
        if retry is not None:
            # A redelivery: the store dedupes it; worth a line when diagnosing slowness.
            log.info(
                "Slack redelivers an event (attempt %s, reason %s)",
                retry,
                request.headers.get("X-Slack-Retry-Reason", "?"),
            )
        bolt_request = await to_bolt_request(request)
        bolt_response = await self._app.async_dispatch(bolt_request)
        return await to_aiohttp_response(bolt_response)

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
        team = str(body.get("team_id") or self.identity.team_id)
        # May raise StorageError: bolt then answers 500 / sends no ack, and Slack retries.
        await self._handle_message(team, event)
        if isinstance(event_id, str):
            self._seen_events.add(event_id)
        await ack()

    async def _on_other_event(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        log.debug("ignoring Slack event %s", body.get("event", {}).get("type"))
        await ack()

    async def _on_error(self, error: Exception, body: dict[str, Any]) -> None:
        event = body.get("event") or {}
        if isinstance(error, StorageError):
            log.error(
                "could not store Slack event %s (%s); not acknowledging it, Slack will "
                "deliver it again",
                body.get("event_id"),
                error,
            )
        else:
            log.error(
                "Slack listener failed on %s in %s: %s",
                event.get("type") or body.get("command") or body.get("type"),
                event.get("channel") or body.get("channel_id"),
                error,
                exc_info=error,
            )

    async def _handle_message(self, team: str, event: Mapping[str, Any]) -> None:
        ident = self.identity
        assert ident is not None and self._mention is not None
        kind = event.get("type")
        subtype = event.get("subtype")
        channel, ts, user = event.get("channel"), event.get("ts"), event.get("user")
        if not isinstance(channel, str) or not isinstance(ts, str):
            return
        if subtype not in USER_SUBTYPES:
            log.debug("ignoring Slack message subtype %s in %s", subtype, channel)
            return
        if event.get("bot_id") or not isinstance(user, str) or user == ident.bot_user_id:
            return  # a bot's post (ours included): never answered, or bots loop
        is_dm = event.get("channel_type") == "im" or channel.startswith("D")
        thread_ts = event.get("thread_ts")
        thread_ts = thread_ts if isinstance(thread_ts, str) and thread_ts else None
        raw = str(event.get("text") or "")
        mentioned = self._mention.search(raw) is not None

        if is_dm:
            key = ConversationKey(PLATFORM, team, channel, thread_ts)
        elif kind == "app_mention":
            key = ConversationKey(PLATFORM, team, channel, thread_ts or ts)
        else:
            # A channel message. Slack delivers a mention twice (as app_mention and as
            # message): the app_mention answers it.
            if mentioned or thread_ts is None or not self.config.thread_followups:
                return
            key = ConversationKey(PLATFORM, team, channel, thread_ts)
            if await self.dispatcher.conversation(key) is None:
                return  # a thread the bot is not part of
        message_id = f"{team}:{channel}:{ts}"

        refusal = self._refusal(
            team=str(event.get("user_team") or event.get("source_team") or team),
            channel=channel,
            user=user,
            is_dm=is_dm,
        )
        if refusal is not None:
            if self._seen_notes.add(message_id):
                log.info(
                    "refused Slack message: %s (user=%s channel=%s team=%s)",
                    refusal,
                    user,
                    channel,
                    event.get("user_team") or team,
                )
                self.dispatcher.note_refused(PLATFORM)
                self._spawn(self._post_ephemeral(channel, user, TEXT_REFUSED, key.thread))
            return

        text = slack_to_text(self._mention.sub("", raw)).strip()
        agent = self.config.channel_agents.get(channel, self.config.agent)
        if text.lower() in RESET_WORDS:
            if message_id not in self._seen_notes:
                await self.dispatcher.reset(key, agent)  # StorageError: no ack, Slack retries
                self._seen_notes.add(message_id)
                log.info("Slack conversation %s reset by %s", key, user)
                self._spawn(self._post_note(key, TEXT_RESET))
            return
        if not text:
            if self._seen_notes.add(message_id):
                has_files = subtype == "file_share" or bool(event.get("files"))
                note = TEXT_FILES if has_files else TEXT_EMPTY.format(bot=ident.bot_user_id)
                self._spawn(self._post_note(key, note))
            return

        message = IncomingMessage(
            key=key,
            event_id=message_id,
            sender=user,
            text=text,
            agent=agent,
            reply_to=ts,
            meta={"channel": channel, "ts": ts, "thread_ts": thread_ts, "dm": is_dm},
        )
        accepted = await self.dispatcher.submit(message)
        if not accepted:
            log.debug("Slack message %s was already accepted", message_id)

    def _refusal(self, *, team: str, channel: str, user: str, is_dm: bool) -> str | None:
        """Why this user may not talk to the agent here, or None if they may."""
        ident = self.identity
        assert ident is not None
        cfg = self.config
        if team != ident.team_id and "*" not in cfg.allowed_teams and team not in cfg.allowed_teams:
            return "user from another team (Slack Connect) not in slack.allowed_teams"
        channels = cfg.allowed_channels
        if not ("*" in channels or channel in channels or (is_dm and "im" in channels)):
            return "channel not in slack.allowed_channels"
        if "*" not in cfg.allowed_users and user not in cfg.allowed_users:
            return "user not in slack.allowed_users"
        return None

    # --- slash command ---------------------------------------------------------------

    async def _on_command(self, ack: AsyncAck, command: dict[str, Any]) -> None:
        ident = self.identity
        assert ident is not None
        user = str(command.get("user_id", ""))
        channel = str(command.get("channel_id", ""))
        team = str(command.get("team_id") or ident.team_id)
        words = str(command.get("text") or "").split()
        sub = words[0].lower() if words else "help"
        is_dm = channel.startswith("D")
        refusal = self._refusal(team=team, channel=channel, user=user, is_dm=is_dm)
        if refusal is not None:
            log.info(
                "refused Slack command: %s (user=%s channel=%s team=%s)",
                refusal,
                user,
                channel,
                team,
            )
            self.dispatcher.note_refused(PLATFORM)
            await ack(text=TEXT_REFUSED)
            return
        agent = self.config.channel_agents.get(channel, self.config.agent)
        # Slash commands carry no thread: in a DM they act on its top-level conversation.
        key = ConversationKey(PLATFORM, team, channel, None)
        try:
            if sub == "reset":
                if is_dm:
                    await self.dispatcher.reset(key, agent)
                    log.info("Slack conversation %s reset by %s (/agent reset)", key, user)
                    await ack(text=TEXT_RESET)
                else:
                    await ack(
                        text=f"To start a thread over, write `<@{ident.bot_user_id}> reset` "
                        "in that thread."
                    )
            elif sub == "status":
                await ack(text=await self._status_text(key, agent, is_dm))
            else:
                await ack(text=self._help_text())
        except StorageError as exc:
            log.error("Slack /agent %s failed: %s", sub, exc)
            await ack(text=TEXT_STORAGE)

    async def _status_text(self, key: ConversationKey, agent: str, is_dm: bool) -> str:
        if not is_dm:
            return (
                f"In this channel I answer with the agent `{agent}`. Mention me to start a "
                "thread; `/agent status` in a DM shows that conversation."
            )
        conv = await self.dispatcher.conversation(key)
        if conv is None:
            return f"No conversation yet. Your messages go to the agent `{agent}`."
        session = "active" if conv.session_id else "not started"
        return (
            f"Agent `{conv.agent}` · {conv.turns} turn(s) · tokens {conv.input_tokens} in / "
            f"{conv.output_tokens} out · session {session} · last active "
            f"{conv.last_active_at:%Y-%m-%d %H:%M} UTC"
        )

    def _help_text(self) -> str:
        ident = self.identity
        assert ident is not None
        followups = TEXT_FOLLOWUPS if self.config.thread_followups else ""
        return TEXT_HELP.format(bot=ident.bot_user_id, name=ident.user, followups=followups)

    # --- outgoing --------------------------------------------------------------------

    async def send_reply(self, message: InboxMessage, reply: Reply) -> None:
        client = self._require_client()
        pieces = split_markdown(reply.text, MARKDOWN_LIMIT) or ["…"]
        done = self._posted_pieces.get(message.id, 0)
        for index in range(done, len(pieces)):
            await self._call(
                "chat.postMessage",
                client.chat_postMessage(
                    channel=message.key.chat,
                    thread_ts=message.key.thread,
                    markdown_text=pieces[index],
                ),
            )
            self._posted_pieces[message.id] = index + 1
        self._posted_pieces.pop(message.id, None)

    @contextlib.asynccontextmanager
    async def working(self, message: InboxMessage) -> AsyncIterator[None]:
        client = self._client
        if client is None or message.reply_to is None:
            yield
            return
        target = {"channel": message.key.chat, "timestamp": message.reply_to}
        # Added in the background: a slow reactions.add must not delay the agent call.
        adding = asyncio.create_task(self._react(client.reactions_add, target))
        try:
            yield
        finally:
            if not adding.done():
                adding.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await adding
            elif adding.result():
                await self._react(client.reactions_remove, target)

    async def _react(self, method: Any, target: Mapping[str, str]) -> bool:
        """A working-indicator reaction; failures only cost the indicator."""
        try:
            await method(name=WORKING_REACTION, **target)
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

    async def _post_note(self, key: ConversationKey, text: str) -> None:
        client = self._require_client()
        try:
            await self._call(
                "chat.postMessage",
                client.chat_postMessage(channel=key.chat, thread_ts=key.thread, markdown_text=text),
            )
        except AdapterError as exc:
            log.warning("could not post a note in %s: %s", key, exc.reason)

    async def _post_ephemeral(
        self, channel: str, user: str, text: str, thread_ts: str | None
    ) -> None:
        client = self._require_client()
        try:
            await self._call(
                "chat.postEphemeral",
                client.chat_postEphemeral(
                    channel=channel, user=user, text=text, thread_ts=thread_ts
                ),
            )
        except AdapterError as exc:
            log.warning("could not post an ephemeral note in %s: %s", channel, exc.reason)

    async def _call(self, method: str, call: Coroutine[Any, Any, Any]) -> Any:
        """Await a Web API call; translate its failure (after slack_sdk's retries)."""
        try:
            return await call
        except SlackApiError as exc:
            error = exc.response.get("error", "unknown_error")
            raise AdapterError(PLATFORM, f"{method} failed: {error}") from None
        except (aiohttp.ClientError, TimeoutError, SlackClientError) as exc:
            raise AdapterError(PLATFORM, f"{method} failed: {type(exc).__name__}") from exc

    def _require_client(self) -> AsyncWebClient:
        if self._client is None:
            raise AdapterError(PLATFORM, "not started")
        return self._client

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a side post (a note, a refusal) after the ack, keeping a reference."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
