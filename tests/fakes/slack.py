"""`FakeSlack`: the Slack Web API and a Socket Mode WebSocket server on 127.0.0.1.

It listens on a random free port and speaks Slack's real wire format, so tests drive
the real slack_sdk and slack-bolt stack through ``api_url``. Nothing is mocked above
the socket.

Usage::

    async with FakeSlack() as slack:
        config = SlackConfig(bot_token=slack.bot_token, app_token=slack.app_token,
                             api_url=slack.api_url)
        ...                                            # start the adapter
        await slack.wait_connected()
        envelope = await slack.send_event(slack.mention("hello"))
        await slack.wait_ack(envelope)
        post = await slack.wait_call("chat.postMessage")
        post.args["markdown_text"]

Web API (``POST {api_url}<method>``): arguments are read from the query string, a form
body or a JSON body, as Slack does. The token comes from ``Authorization: Bearer`` (or a
``token`` argument). Methods answer like Slack: ``auth.test``, ``chat.postMessage``,
``chat.update`` (which rewrites a message the fake holds), ``chat.startStream`` /
``appendStream`` / ``stopStream`` (a streamed message is built in the thread as the
calls append to it, with Slack's argument rules), ``chat.postEphemeral``,
``reactions.add``/``reactions.remove``,
``conversations.replies``, ``conversations.history`` (GET, as slack_sdk sends them),
``assistant.threads.setStatus`` / ``setSuggestedPrompts`` / ``setTitle`` (the AI-app
view: argument checks as Slack's, and the last status / prompts / title of each thread
kept in ``statuses``, ``prompts`` and ``titles``, keyed ``(channel, thread_ts)``),
``apps.connections.open`` (needs the app-level token;
the others need the bot token: a wrong token gets ``invalid_auth``, the other kind of
token ``not_allowed_token_type``). Unknown methods get ``unknown_method``.

Blocks: ``markdown_text`` beside ``blocks`` or ``text`` is ``markdown_text_conflict``
in chat.postMessage / chat.update, as Slack answers; chat.stopStream takes ``blocks``
beside ``markdown_text``. The blocks the bridge sends (``markdown``, ``context_actions``
with ``feedback_buttons``) are checked (``invalid_blocks``) and kept on the message.
`ApiCall.markdown` is a post's Markdown whichever way it was sent.

Messages: the fake keeps each channel's messages, as Slack would return them: the user
messages delivered with ``send_event`` (or added with ``add_message``) and the bot's
``chat.postMessage`` posts, with their ``metadata`` (given as an object or a JSON
string). ``conversations.replies`` returns a thread (root first, then replies in ts
order) and ``conversations.history`` a channel's top-level messages (newest first),
both filtered by ``oldest``/``latest`` (exclusive unless ``inclusive``), paginated by
``limit`` and an opaque ``cursor`` (``has_more``, ``response_metadata.next_cursor``,
at most ``page_size`` messages a page), and with ``metadata`` only when
``include_all_metadata`` is set, as Slack does.

Files: ``slack.add_file(content, name, mimetype)`` stores a file and returns its file
object (``url_private_download`` on this server) for a message's ``files[]``;
``slack.file_stub(file)`` is the Slack Connect stub (``file_access: check_file_info``).
``files.info`` answers the file object. The download route wants ``Authorization: Bearer``
with the bot token (or ``download_token``); without it Slack's answer: a 302 to a sign-in
page served with 200 as HTML (``signin_inline``: that page at once). ``slack.downloads``
records (path, token) of each request.

Scripting: ``slack.fail("chat.postMessage", error="ratelimited", status=429,
headers={"Retry-After": "1"})`` makes the next call of that method fail that way (FIFO,
one script entry per call). ``slack.lose_response(method)`` lets the next call of
``method`` take effect and then drops the connection before the answer, as a timeout or
a network cut does after Slack acted. ``slack.calls`` records every Web API call as `ApiCall`;
``await slack.wait_call(method, n)`` waits until ``n`` calls of ``method`` arrived.

Socket Mode: ``apps.connections.open`` returns ``ws://127.0.0.1:PORT/socket``. On
connect the server sends ``hello``. ``send_event(event)`` wraps an Events API event in
an ``event_callback`` payload and an ``events_api`` envelope; ``send_command(...)``
sends a ``slash_commands`` envelope; ``send_action(value, user=...)`` an ``interactive``
envelope with a ``block_actions`` payload (a click on a feedback button). The app's
acks (``{"envelope_id": ...}``) are recorded: ``await slack.wait_ack(envelope_id)``
returns the ack, ``slack.acked(id)`` tells whether one arrived. ``send_disconnect()``
asks the app to reconnect, ``drop_connections()`` closes the sockets,
``refuse_connections`` makes new WebSocket connections fail (to observe a lost
connection).

AI-app view: ``assistant_thread_started(user=..., channel=...)`` builds the event Slack
sends when a user opens a new assistant thread (and puts the thread's root, which Slack
posts as the app, in the channel's history); ``assistant_message(text, thread)`` a
user's message in it (a DM ``message`` with ``thread_ts`` and ``parent_user_id``).

HTTP mode helper: `signed_headers` signs an Events API request body like Slack does.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import itertools
import json as jsonlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any, Self

from aiohttp import WSMsgType, web

from tests.fakes.loopback import serve_loopback

BOT_TOKEN = "xoxb-fake-bot-token-0123456789"
APP_TOKEN = "xapp-1-fake-app-token-0123456789"
TEAM_ID = "T0FAKE"
TEAM_NAME = "Fake Team"
BOT_USER_ID = "UBOT"
BOT_ID = "BBOT"
APP_ID = "AFAKE"

#: Slack's limit for ``markdown_text`` in chat.postMessage / chat.update.
MARKDOWN_TEXT_LIMIT = 12_000


@dataclass(frozen=True)
class ApiCall:
    """One Web API call as the fake received it."""

    method: str
    args: dict[str, Any]
    token: str | None
    #: time.monotonic() when the call arrived.
    at: float = field(default_factory=time.monotonic)

    @property
    def markdown(self) -> str | None:
        """The Markdown a post carries: its ``markdown_text``, or the text of its
        ``markdown`` blocks (a post with feedback buttons)."""
        if self.args.get("markdown_text") is not None:
            return str(self.args["markdown_text"])
        blocks = _blocks(self.args.get("blocks"))
        texts = [b["text"] for b in blocks or [] if b.get("type") == "markdown"]
        return "".join(texts) if texts else None

    @property
    def feedback_values(self) -> list[str]:
        """The values of the feedback buttons in the post's blocks, positive first."""
        values = []
        for block in _blocks(self.args.get("blocks")) or []:
            for element in block.get("elements") or []:
                if block.get("type") == "context_actions" and isinstance(element, dict):
                    for button in ("positive_button", "negative_button"):
                        values.append(element[button]["value"])
        return values


@dataclass(frozen=True)
class Failure:
    """A scripted failure for the next call of a method."""

    error: str
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    #: Calls of the method to let through before this failure applies.
    after: int = 0


def signed_headers(
    body: str | bytes, signing_secret: str, *, timestamp: int | None = None
) -> dict[str, str]:
    """The headers Slack sends with an HTTP request: timestamp and v0 signature."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    raw = body.encode() if isinstance(body, str) else body
    base = b"v0:" + ts.encode() + b":" + raw
    digest = hmac.new(signing_secret.encode(), base, hashlib.sha256).hexdigest()
    return {
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": f"v0={digest}",
        "Content-Type": "application/json",
    }


class FakeSlack:
    def __init__(
        self,
        *,
        bot_token: str = BOT_TOKEN,
        app_token: str = APP_TOKEN,
        team_id: str = TEAM_ID,
        bot_user_id: str = BOT_USER_ID,
        bot_id: str = BOT_ID,
    ) -> None:
        self.bot_token = bot_token
        self.app_token = app_token
        self.team_id = team_id
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.calls: list[ApiCall] = []
        self.acks: dict[str, dict[str, Any]] = {}
        #: When set, new Socket Mode connections are refused (503).
        self.refuse_connections = False
        self.connection_count = 0
        #: channel -> its messages, in the order they were posted or delivered.
        self.messages: dict[str, list[dict[str, Any]]] = {}
        #: The most messages one conversations.replies/history page holds (Slack may
        #: return fewer than ``limit``).
        self.page_size = 1000
        #: (channel, thread_ts) -> the AI-app view state Slack shows for the thread.
        self.statuses: dict[tuple[str, str], str] = {}
        self.prompts: dict[tuple[str, str], list[dict[str, str]]] = {}
        self.titles: dict[tuple[str, str], str] = {}
        #: (channel, ts) of the messages still streaming (chat.startStream, not stopped).
        self.streaming: set[tuple[str, str]] = set()
        self._failures: dict[str, list[Failure]] = {}
        self._lost: dict[str, int] = {}
        self._sockets: list[web.WebSocketResponse] = []
        self._changed = asyncio.Condition()
        self._ts = itertools.count(1)
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._port = 0
        #: file id -> (the file object files.info answers, its content)
        self.files: dict[str, tuple[dict[str, Any], bytes]] = {}
        #: Every request on the download route: (path, the bearer token or None).
        self.downloads: list[tuple[str, str | None]] = []
        #: The token downloads want (default: the bot token); another one makes the
        #: bot's token fail there as an app without files:read would.
        self.download_token: str | None = None
        #: A refused download answers the sign-in page at once (200, HTML) instead of
        #: the 302 to it, as some of Slack's file URLs do.
        self.signin_inline = False

    # --- lifecycle -------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_post("/api/{method}", self._api)
        app.router.add_get("/api/{method}", self._api)
        app.router.add_get("/socket", self._socket)
        app.router.add_get("/files-pri/{team_file}/download/{name}", self._download)
        app.router.add_get("/signin", self._signin)
        self._runner, self._port = await serve_loopback(app)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.drop_connections()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    @property
    def api_url(self) -> str:
        """The ``api_url`` to configure: the Web API base URL, with its trailing slash."""
        return f"{self.url}/api/"

    # --- Web API ---------------------------------------------------------------------

    def fail(
        self,
        method: str,
        *,
        error: str = "internal_error",
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        times: int = 1,
        after: int = 0,
    ) -> None:
        """Make ``times`` calls of ``method`` fail with ``error``, once ``after`` more
        calls have gone through."""
        queue = self._failures.setdefault(method, [])
        first = Failure(error, status, dict(headers or {}), after)
        queue.extend([first] + [Failure(error, status, dict(headers or {}))] * (times - 1))

    def ratelimit(self, method: str, *, retry_after: int = 1) -> None:
        """The next call of ``method`` gets a 429 with ``Retry-After``, as Slack sends."""
        self.fail(
            method, error="ratelimited", status=429, headers={"Retry-After": str(retry_after)}
        )

    def lose_response(self, method: str, *, times: int = 1) -> None:
        """The next ``times`` calls of ``method`` take effect, but their answer is lost:
        the connection closes before it is written."""
        self._lost[method] = self._lost.get(method, 0) + times

    def calls_to(self, method: str) -> list[ApiCall]:
        return [c for c in self.calls if c.method == method]

    async def wait_call(self, method: str, count: int = 1, *, within: float = 5.0) -> ApiCall:
        """Wait until ``count`` calls of ``method`` have arrived; return the ``count``-th."""

        def ready() -> bool:
            return len(self.calls_to(method)) >= count

        await self._wait(ready, within, f"{count} call(s) to {method}")
        return self.calls_to(method)[count - 1]

    async def _api(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        args: dict[str, Any] = dict(request.query)
        if request.can_read_body:
            if request.content_type == "application/json":
                body = await request.json()
                if isinstance(body, dict):
                    args.update(body)
            else:
                args.update(await request.post())
        token = args.pop("token", None)
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            token = auth.removeprefix("Bearer ")
        async with self._changed:
            self.calls.append(ApiCall(method, args, token))
            self._changed.notify_all()

        queue = self._failures.get(method)
        if queue and queue[0].after > 0:
            queue[0] = replace(queue[0], after=queue[0].after - 1)
        elif queue:
            failure = queue.pop(0)
            return web.json_response(
                {"ok": False, "error": failure.error},
                status=failure.status,
                headers=failure.headers,
            )
        handler = _METHODS.get(method)
        if handler is None:
            return _error("unknown_method")
        wanted = self.app_token if method == "apps.connections.open" else self.bot_token
        if token is None:
            return _error("not_authed")
        if token != wanted:
            if token in (self.app_token, self.bot_token):
                return _error("not_allowed_token_type")
            return _error("invalid_auth")
        result = handler(self, args)
        if self._lost.get(method):
            self._lost[method] -= 1
            assert request.transport is not None
            request.transport.close()
        return web.json_response(result)

    # --- files -----------------------------------------------------------------------

    def add_file(
        self, content: bytes, name: str, mimetype: str, *, filetype: str = ""
    ) -> dict[str, Any]:
        """Store a file; returns its file object as a ``message``'s ``files[]`` carries
        it (``url_private_download`` on this server, which wants the bot token)."""
        file_id = f"F{next(self._ids):08d}"
        url = f"{self.url}/files-pri/{self.team_id}-{file_id}/download/{name}"
        info = {
            "id": file_id,
            "name": name,
            "title": name,
            "mimetype": mimetype,
            "filetype": filetype or name.rsplit(".", 1)[-1],
            "size": len(content),
            "mode": "hosted",
            "url_private": url.replace("/download/", "/"),
            "url_private_download": url,
        }
        self.files[file_id] = (info, content)
        return dict(info)

    @staticmethod
    def file_stub(file: dict[str, Any]) -> dict[str, Any]:
        """The stub a Slack Connect event may carry instead: ``files.info`` needed."""
        return {"id": file["id"], "mode": "file_access", "file_access": "check_file_info"}

    def _files_info(self, args: dict[str, Any]) -> dict[str, Any]:
        found = self.files.get(str(args.get("file")))
        if found is None:
            return {"ok": False, "error": "file_not_found"}
        return {"ok": True, "file": dict(found[0])}

    async def _download(self, request: web.Request) -> web.StreamResponse:
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None
        async with self._changed:
            self.downloads.append((request.path, token))
            self._changed.notify_all()
        file_id = request.match_info["team_file"].rsplit("-", 1)[-1]
        found = self.files.get(file_id)
        if token != (self.download_token or self.bot_token) or found is None:
            # What Slack does without a valid token: off to the sign-in page.
            if self.signin_inline:
                return await self._signin(request)
            raise web.HTTPFound(f"{self.url}/signin?redir={request.path}")
        info, content = found
        return web.Response(body=content, content_type=str(info["mimetype"]))

    async def _signin(self, request: web.Request) -> web.Response:
        page = "<!DOCTYPE html><html>Sign in to Slack</html>"
        return web.Response(text=page, content_type="text/html")

    def _auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "url": "https://fake.slack.com/",
            "team": TEAM_NAME,
            "user": "agent-bridge",
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    def _next_ts(self) -> str:
        return f"1800000000.{next(self._ts):06d}"

    def _post_message(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = args.get("channel")
        if not channel:
            return {"ok": False, "error": "channel_not_found"}
        markdown = args.get("markdown_text")
        if markdown is not None and (args.get("text") or args.get("blocks")):
            return {"ok": False, "error": "markdown_text_conflict"}
        if markdown is not None and len(markdown) > MARKDOWN_TEXT_LIMIT:
            return {"ok": False, "error": "markdown_text_too_long"}
        if not (markdown or args.get("text") or args.get("blocks")):
            return {"ok": False, "error": "no_text"}
        blocks = _blocks(args.get("blocks"))
        if args.get("blocks") is not None and (blocks is None or _invalid_blocks(blocks)):
            return {"ok": False, "error": "invalid_blocks"}
        metadata = args.get("metadata")
        if isinstance(metadata, str):
            try:
                metadata = jsonlib.loads(metadata)
            except ValueError:
                return {"ok": False, "error": "invalid_metadata_format"}
        if metadata is not None and not (
            isinstance(metadata, dict)
            and isinstance(metadata.get("event_type"), str)
            and isinstance(metadata.get("event_payload"), dict)
        ):
            return {"ok": False, "error": "invalid_metadata_format"}
        ts = self._next_ts()
        message: dict[str, Any] = {
            "type": "message",
            "user": self.bot_user_id,
            "bot_id": self.bot_id,
            "ts": ts,
        }
        if args.get("thread_ts"):
            message["thread_ts"] = args["thread_ts"]
            # Slack clears an assistant thread's status when the app posts in it.
            if (channel, args["thread_ts"]) in self.statuses:
                self.statuses[(channel, args["thread_ts"])] = ""
        message["text"] = markdown or args.get("text") or ""
        if blocks is not None:
            message["blocks"] = blocks
        if metadata is not None:
            message["metadata"] = metadata
        self.messages.setdefault(channel, []).append(message)
        return {"ok": True, "channel": channel, "ts": ts, "message": message}

    def add_message(self, channel: str, message: dict[str, Any]) -> None:
        """Put a message in ``channel``'s history (e.g. another app's post)."""
        self.messages.setdefault(channel, []).append(dict(message))

    def _replies(self, args: dict[str, Any]) -> dict[str, Any]:
        channel, root = args.get("channel"), args.get("ts")
        if not channel or not root:
            return {"ok": False, "error": "invalid_arguments"}
        stored = self.messages.get(channel, [])
        parent = [m for m in stored if m["ts"] == root]
        replies = [m for m in stored if m.get("thread_ts") == root and m["ts"] != root]
        if not parent and not replies:
            return {"ok": False, "error": "thread_not_found"}
        # The parent comes first on every page's start, as Slack returns it.
        return self._page(args, parent + _window(sorted(replies, key=_ts_key), args))

    def _history(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = args.get("channel")
        if not channel:
            return {"ok": False, "error": "channel_not_found"}
        top = [
            m
            for m in self.messages.get(channel, [])
            if m.get("thread_ts") in (None, m["ts"]) or m.get("subtype") == "thread_broadcast"
        ]
        return self._page(args, _window(sorted(top, key=_ts_key, reverse=True), args))

    def _page(self, args: dict[str, Any], found: list[dict[str, Any]]) -> dict[str, Any]:
        cursor = str(args.get("cursor") or "")
        if cursor and not cursor.startswith("page:"):
            return {"ok": False, "error": "invalid_cursor"}
        start = int(cursor.removeprefix("page:")) if cursor else 0
        limit = min(int(args.get("limit") or 100), self.page_size)
        page = found[start : start + limit]
        with_metadata = _flag(args.get("include_all_metadata"))
        messages = [{k: v for k, v in m.items() if with_metadata or k != "metadata"} for m in page]
        more = start + limit < len(found)
        return {
            "ok": True,
            "messages": messages,
            "has_more": more,
            "response_metadata": {"next_cursor": f"page:{start + limit}" if more else ""},
        }

    def _post_ephemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        if not args.get("channel") or not args.get("user"):
            return {"ok": False, "error": "invalid_arguments"}
        return {"ok": True, "message_ts": self._next_ts()}

    def _update(self, args: dict[str, Any]) -> dict[str, Any]:
        if not args.get("channel") or not args.get("ts"):
            return {"ok": False, "error": "message_not_found"}
        stored = self._find(args["channel"], args["ts"])
        if stored is not None:  # a message the fake knows: Slack shows the new text
            markdown = args.get("markdown_text")
            if markdown is not None and (args.get("text") or args.get("blocks")):
                return {"ok": False, "error": "markdown_text_conflict"}
            if markdown is not None and len(markdown) > MARKDOWN_TEXT_LIMIT:
                return {"ok": False, "error": "markdown_text_too_long"}
            blocks = _blocks(args.get("blocks"))
            if args.get("blocks") is not None and (blocks is None or _invalid_blocks(blocks)):
                return {"ok": False, "error": "invalid_blocks"}
            if blocks is not None:
                stored["blocks"] = blocks
            stored["text"] = markdown or args.get("text") or stored["text"]
            metadata = _metadata(args.get("metadata"))
            if metadata is not None:
                stored["metadata"] = metadata
            stored["edited"] = {"user": self.bot_user_id, "ts": self._next_ts()}
        return {"ok": True, "channel": args["channel"], "ts": args["ts"]}

    def _find(self, channel: str, ts: str) -> dict[str, Any] | None:
        return next((m for m in self.messages.get(channel, []) if m["ts"] == ts), None)

    # chat.startStream / appendStream / stopStream (docs.slack.dev/reference/methods):
    # a streamed message is a thread reply; in a channel Slack wants the recipient
    # (recipient_team_id and recipient_user_id); every call carries the token (the
    # fake's auth check); appendStream and stopStream take the stream's ts and append
    # their markdown_text; after stopStream the message is no longer streaming.

    def _start_stream(self, args: dict[str, Any]) -> dict[str, Any]:
        channel, thread = args.get("channel"), args.get("thread_ts")
        if not channel:
            return {"ok": False, "error": "channel_not_found"}
        if not thread:
            return {"ok": False, "error": "invalid_arguments"}
        if channel[0] in "CG":
            if not args.get("recipient_team_id"):
                return {"ok": False, "error": "missing_recipient_team_id"}
            if not args.get("recipient_user_id"):
                return {"ok": False, "error": "missing_recipient_user_id"}
        markdown = args.get("markdown_text") or ""
        if len(markdown) > MARKDOWN_TEXT_LIMIT:
            return {"ok": False, "error": "markdown_text_too_long"}
        ts = self._next_ts()
        message = {
            "type": "message",
            "user": self.bot_user_id,
            "bot_id": self.bot_id,
            "ts": ts,
            "thread_ts": thread,
            "text": markdown,
        }
        if (channel, thread) in self.statuses:
            self.statuses[(channel, thread)] = ""
        self.messages.setdefault(channel, []).append(message)
        self.streaming.add((channel, ts))
        return {"ok": True, "channel": channel, "ts": ts}

    def _streamed(self, args: dict[str, Any]) -> dict[str, Any] | str:
        """The streaming message ``args`` name, or the error."""
        channel, ts = args.get("channel"), args.get("ts")
        if not channel or not ts:
            return "invalid_arguments"
        stored = self._find(channel, ts)
        if stored is None:
            return "message_not_found"
        if (channel, ts) not in self.streaming:
            return "message_not_in_streaming_state"
        markdown = args.get("markdown_text") or ""
        if len(markdown) > MARKDOWN_TEXT_LIMIT:
            return "markdown_text_too_long"
        if len(stored["text"]) + len(markdown) > MARKDOWN_TEXT_LIMIT:
            return "msg_too_long"
        return stored

    def _append_stream(self, args: dict[str, Any]) -> dict[str, Any]:
        stored = self._streamed(args)
        if isinstance(stored, str):
            return {"ok": False, "error": stored}
        if not args.get("markdown_text"):
            return {"ok": False, "error": "no_text"}
        stored["text"] += args["markdown_text"]
        return {"ok": True, "channel": args["channel"], "ts": args["ts"]}

    def _stop_stream(self, args: dict[str, Any]) -> dict[str, Any]:
        stored = self._streamed(args)
        if isinstance(stored, str):
            return {"ok": False, "error": stored}
        metadata = _metadata(args.get("metadata"))
        if args.get("metadata") is not None and metadata is None:
            return {"ok": False, "error": "invalid_metadata_format"}
        # Unlike chat.postMessage, stopStream takes blocks beside markdown_text: they
        # are shown under the streamed text (e.g. feedback buttons).
        blocks = _blocks(args.get("blocks"))
        if args.get("blocks") is not None and (blocks is None or _invalid_blocks(blocks)):
            return {"ok": False, "error": "invalid_blocks"}
        stored["text"] += args.get("markdown_text") or ""
        if blocks is not None:
            stored["blocks"] = blocks
        if metadata is not None:
            stored["metadata"] = metadata
        self.streaming.discard((args["channel"], args["ts"]))
        return {"ok": True, "channel": args["channel"], "ts": args["ts"], "message": stored}

    def _reaction(self, args: dict[str, Any]) -> dict[str, Any]:
        if not (args.get("channel") and args.get("timestamp") and args.get("name")):
            return {"ok": False, "error": "invalid_arguments"}
        return {"ok": True}

    def _assistant_thread(self, args: dict[str, Any]) -> tuple[str, str] | None:
        channel, thread = args.get("channel_id"), args.get("thread_ts")
        if not isinstance(channel, str) or not isinstance(thread, str) or not channel:
            return None
        return channel, thread

    def _set_status(self, args: dict[str, Any]) -> dict[str, Any]:
        thread = self._assistant_thread(args)
        status = args.get("status")
        if thread is None or not isinstance(status, str):
            return {"ok": False, "error": "invalid_arguments"}
        loading = args.get("loading_messages")
        if loading is not None and not (
            isinstance(loading, list)
            and len(loading) <= 10
            and all(isinstance(m, str) for m in loading)
        ):
            return {"ok": False, "error": "invalid_arguments"}
        self.statuses[thread] = status
        return {"ok": True}

    def _set_suggested_prompts(self, args: dict[str, Any]) -> dict[str, Any]:
        thread = self._assistant_thread(args)
        prompts = args.get("prompts")
        if thread is None or not isinstance(prompts, list) or not 1 <= len(prompts) <= 4:
            return {"ok": False, "error": "invalid_arguments"}
        for prompt in prompts:
            if not (
                isinstance(prompt, dict)
                and isinstance(prompt.get("title"), str)
                and isinstance(prompt.get("message"), str)
            ):
                return {"ok": False, "error": "invalid_arguments"}
        self.prompts[thread] = prompts
        return {"ok": True}

    def _set_title(self, args: dict[str, Any]) -> dict[str, Any]:
        thread = self._assistant_thread(args)
        title = args.get("title")
        if thread is None or not isinstance(title, str) or not title:
            return {"ok": False, "error": "invalid_arguments"}
        self.titles[thread] = title
        return {"ok": True}

    def _connections_open(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "url": f"ws://127.0.0.1:{self._port}/socket"}

    # --- Socket Mode -----------------------------------------------------------------

    @property
    def connected(self) -> int:
        """How many Socket Mode connections are open."""
        return sum(1 for ws in self._sockets if not ws.closed)

    async def wait_connected(self, count: int = 1, *, within: float = 5.0) -> None:
        """Wait until ``count`` connections have been made since the start (hello sent)."""
        await self._wait(lambda: self.connection_count >= count, within, f"{count} connection(s)")

    async def _socket(self, request: web.Request) -> web.StreamResponse:
        if self.refuse_connections:
            return web.Response(status=503, text="no socket for you")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._sockets.append(ws)
        await ws.send_json(
            {
                "type": "hello",
                "num_connections": self.connected,
                "debug_info": {"host": "fake-slack", "approximate_connection_time": 18060},
                "connection_info": {"app_id": APP_ID},
            }
        )
        async with self._changed:
            self.connection_count += 1
            self._changed.notify_all()
        try:
            async for frame in ws:
                if frame.type is not WSMsgType.TEXT:
                    continue
                data = jsonlib.loads(frame.data)
                envelope_id = data.get("envelope_id")
                if envelope_id:
                    async with self._changed:
                        self.acks[envelope_id] = data
                        self._changed.notify_all()
        finally:
            with contextlib.suppress(ValueError):
                self._sockets.remove(ws)
            async with self._changed:
                self._changed.notify_all()
        return ws

    async def send_envelope(
        self,
        kind: str,
        payload: dict[str, Any],
        *,
        retry_attempt: int | None = None,
        retry_reason: str | None = None,
        accepts_response_payload: bool = False,
        envelope_id: str | None = None,
    ) -> str:
        """Send an envelope on the newest open connection; return its envelope id."""
        envelope_id = envelope_id or f"env-{next(self._ids)}"
        envelope: dict[str, Any] = {
            "envelope_id": envelope_id,
            "payload": payload,
            "type": kind,
            "accepts_response_payload": accepts_response_payload,
        }
        if kind == "events_api":
            envelope["retry_attempt"] = retry_attempt or 0
            envelope["retry_reason"] = retry_reason or ""
        ws = self._open_socket()
        await ws.send_json(envelope)
        return envelope_id

    def _open_socket(self) -> web.WebSocketResponse:
        for ws in reversed(self._sockets):
            if not ws.closed:
                return ws
        raise AssertionError("no Socket Mode connection is open")

    def event_payload(
        self, event: dict[str, Any], *, event_id: str | None = None
    ) -> dict[str, Any]:
        """An Events API ``event_callback`` body around ``event``."""
        return {
            "token": "verification-token",
            "team_id": self.team_id,
            "api_app_id": APP_ID,
            "event": event,
            "type": "event_callback",
            "event_id": event_id or f"Ev{next(self._ids):08d}",
            "event_time": int(time.time()),
            "authorizations": [
                {
                    "enterprise_id": None,
                    "team_id": self.team_id,
                    "user_id": self.bot_user_id,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
            "is_ext_shared_channel": False,
            "event_context": "4-fake",
        }

    async def send_event(
        self,
        event: dict[str, Any],
        *,
        event_id: str | None = None,
        retry_attempt: int | None = None,
        retry_reason: str | None = None,
    ) -> str:
        """Deliver an Events API event over Socket Mode; return the envelope id. A
        message it carries joins its channel's history."""
        self._remember(event)
        return await self.send_envelope(
            "events_api",
            self.event_payload(event, event_id=event_id),
            retry_attempt=retry_attempt,
            retry_reason=retry_reason,
        )

    def command_payload(
        self,
        text: str,
        *,
        user: str = "U1",
        channel: str = "D1",
        command: str = "/agent",
        team_id: str | None = None,
    ) -> dict[str, Any]:
        return {
            "token": "verification-token",
            "team_id": team_id or self.team_id,
            "team_domain": "fake",
            "channel_id": channel,
            "channel_name": "directmessage" if channel.startswith("D") else "general",
            "user_id": user,
            "user_name": "someone",
            "command": command,
            "text": text,
            "api_app_id": APP_ID,
            "is_enterprise_install": "false",
            "response_url": f"{self.url}/commands/respond",
            "trigger_id": f"trig-{next(self._ids)}",
        }

    async def send_command(self, text: str, **kwargs: Any) -> str:
        """Deliver a slash command over Socket Mode; return the envelope id."""
        return await self.send_envelope(
            "slash_commands", self.command_payload(text, **kwargs), accepts_response_payload=True
        )

    def block_actions_payload(
        self,
        value: str,
        *,
        action_id: str = "agent_feedback",
        user: str = "U1",
        channel: str = "C1",
        message_ts: str | None = None,
        thread_ts: str | None = None,
    ) -> dict[str, Any]:
        """A ``block_actions`` interaction: ``user`` clicked the feedback button whose
        value is ``value`` on our message ``message_ts`` in ``channel``."""
        ts = message_ts or self._next_ts()
        message: dict[str, Any] = {"type": "message", "user": self.bot_user_id, "ts": ts}
        if thread_ts:
            message["thread_ts"] = thread_ts
        return {
            "type": "block_actions",
            "user": {"id": user, "username": "someone", "name": "someone", "team_id": self.team_id},
            "api_app_id": APP_ID,
            "token": "verification-token",
            "container": {
                "type": "message",
                "message_ts": ts,
                "channel_id": channel,
                "is_ephemeral": False,
                **({"thread_ts": thread_ts} if thread_ts else {}),
            },
            "trigger_id": f"trig-{next(self._ids)}",
            "team": {"id": self.team_id, "domain": "fake"},
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": channel, "name": "general"},
            "message": message,
            "state": {"values": {}},
            "response_url": f"{self.url}/actions/respond",
            "actions": [
                {
                    "type": "feedback_buttons",
                    "action_id": action_id,
                    "block_id": "fb",
                    "value": value,
                    "action_ts": f"{time.time():.6f}",
                }
            ],
        }

    async def send_action(self, value: str, **kwargs: Any) -> str:
        """Deliver a ``block_actions`` interaction over Socket Mode (an ``interactive``
        envelope); return the envelope id."""
        return await self.send_envelope(
            "interactive",
            self.block_actions_payload(value, **kwargs),
            accepts_response_payload=False,
        )

    async def send_disconnect(self, reason: str = "refresh_requested") -> None:
        """Ask the app to reconnect, as Slack does before it recycles a connection."""
        await self._open_socket().send_json(
            {"type": "disconnect", "reason": reason, "debug_info": {"host": "fake-slack"}}
        )

    async def drop_connections(self) -> None:
        """Close every Socket Mode connection from the server side."""
        for ws in list(self._sockets):
            await ws.close()

    def acked(self, envelope_id: str) -> bool:
        return envelope_id in self.acks

    async def wait_ack(self, envelope_id: str, *, within: float = 5.0) -> dict[str, Any]:
        """Wait for the app's ack of ``envelope_id``; return it (it may carry a payload)."""
        await self._wait(lambda: envelope_id in self.acks, within, f"the ack of {envelope_id}")
        return self.acks[envelope_id]

    # --- event builders --------------------------------------------------------------

    def next_user_ts(self) -> str:
        return f"1700000000.{next(self._ts):06d}"

    def message(
        self,
        text: str,
        *,
        channel: str = "C1",
        user: str = "U1",
        ts: str | None = None,
        thread_ts: str | None = None,
        channel_type: str = "channel",
        **extra: Any,
    ) -> dict[str, Any]:
        """A ``message`` event (``channel_type`` "im" for a DM)."""
        event: dict[str, Any] = {
            "type": "message",
            "channel": channel,
            "user": user,
            "text": text,
            "ts": ts or self.next_user_ts(),
            "team": self.team_id,
            "channel_type": channel_type,
            "event_ts": "",
        }
        if thread_ts is not None:
            event["thread_ts"] = thread_ts
        event.update(extra)
        event["event_ts"] = event["ts"]
        return event

    def mention(
        self,
        text: str,
        *,
        channel: str = "C1",
        user: str = "U1",
        ts: str | None = None,
        thread_ts: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """An ``app_mention`` event whose text starts with the bot's mention."""
        event: dict[str, Any] = {
            "type": "app_mention",
            "channel": channel,
            "user": user,
            "text": f"<@{self.bot_user_id}> {text}",
            "ts": ts or self.next_user_ts(),
            "team": self.team_id,
            "event_ts": "",
        }
        if thread_ts is not None:
            event["thread_ts"] = thread_ts
        event.update(extra)
        event["event_ts"] = event["ts"]
        return event

    def assistant_thread_started(
        self, *, user: str = "U1", channel: str = "D1", context_channel: str | None = "C1"
    ) -> dict[str, Any]:
        """The ``assistant_thread_started`` event of a new assistant thread in the DM
        ``channel``; its root (Slack posts it as the app) joins the history."""
        ts = self._next_ts()
        self.messages.setdefault(channel, []).append(
            {
                "type": "message",
                "subtype": "assistant_app_thread",
                "user": self.bot_user_id,
                "bot_id": self.bot_id,
                "ts": ts,
                "thread_ts": ts,
                "text": "",
            }
        )
        context: dict[str, Any] = {}
        if context_channel is not None:
            context = {"channel_id": context_channel, "team_id": self.team_id}
        return {
            "type": "assistant_thread_started",
            "assistant_thread": {
                "user_id": user,
                "context": context,
                "channel_id": channel,
                "thread_ts": ts,
            },
            "event_ts": self.next_user_ts(),
        }

    def assistant_context_changed(
        self, thread: dict[str, Any], *, context_channel: str = "C2"
    ) -> dict[str, Any]:
        """``assistant_thread_context_changed`` for the thread of ``thread`` (an
        ``assistant_thread_started`` event): the user looks at another channel."""
        started = thread["assistant_thread"]
        return {
            "type": "assistant_thread_context_changed",
            "assistant_thread": {
                **started,
                "context": {"channel_id": context_channel, "team_id": self.team_id},
            },
            "event_ts": self.next_user_ts(),
        }

    def assistant_message(self, text: str, thread: dict[str, Any], **extra: Any) -> dict[str, Any]:
        """A user's message in the assistant thread of ``thread`` (an
        ``assistant_thread_started`` event)."""
        started = thread["assistant_thread"]
        return self.message(
            text,
            channel=started["channel_id"],
            user=started["user_id"],
            thread_ts=started["thread_ts"],
            channel_type="im",
            parent_user_id=self.bot_user_id,
            **extra,
        )

    def _remember(self, event: Any) -> None:
        if not isinstance(event, dict) or event.get("type") not in ("message", "app_mention"):
            return
        channel, ts = event.get("channel"), event.get("ts")
        if not isinstance(channel, str) or not isinstance(ts, str) or event.get("subtype"):
            return
        stored = self.messages.setdefault(channel, [])
        if all(m["ts"] != ts for m in stored):  # a mention arrives twice
            message = {k: v for k, v in event.items() if k not in ("channel", "event_ts")}
            stored.append({**message, "type": "message"})

    # --- helpers ---------------------------------------------------------------------

    async def _wait(self, predicate: Any, within: float, what: str) -> None:
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(predicate), within)
            except TimeoutError:
                raise AssertionError(f"fake Slack: timed out waiting for {what}") from None


def _ts_key(message: dict[str, Any]) -> tuple[int, int]:
    seconds, _, micros = str(message["ts"]).partition(".")
    return int(seconds), int(micros or 0)


def _flag(value: Any) -> bool:
    return value in (True, 1, "1", "true")


def _window(messages: list[dict[str, Any]], args: dict[str, Any]) -> list[dict[str, Any]]:
    """The messages between ``oldest`` and ``latest`` (exclusive unless ``inclusive``)."""
    inclusive = _flag(args.get("inclusive"))
    oldest, latest = args.get("oldest"), args.get("latest")
    low = _ts_key({"ts": oldest}) if oldest else None
    high = _ts_key({"ts": latest}) if latest else None

    def inside(m: dict[str, Any]) -> bool:
        key = _ts_key(m)
        if low is not None and (key < low or (key == low and not inclusive)):
            return False
        return high is None or key < high or (key == high and inclusive)

    return [m for m in messages if inside(m)]


def _blocks(value: Any) -> list[dict[str, Any]] | None:
    """Blocks given as a list or a JSON string, if a list of objects."""
    if isinstance(value, str):
        try:
            value = jsonlib.loads(value)
        except ValueError:
            return None
    if isinstance(value, list) and all(isinstance(b, dict) for b in value):
        return value
    return None


def _invalid_blocks(blocks: list[dict[str, Any]]) -> bool:
    """Slack's checks of the blocks the bridge sends (markdown, context_actions with
    feedback_buttons): an unknown type or a malformed field is ``invalid_blocks``."""
    markdown = 0
    for block in blocks:
        kind = block.get("type")
        if kind == "markdown":
            if not isinstance(block.get("text"), str) or not block["text"]:
                return True
            markdown += len(block["text"])
        elif kind == "context_actions":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 1 <= len(elements) <= 5:
                return True
            for element in elements:
                if not isinstance(element, dict) or element.get("type") != "feedback_buttons":
                    return True
                if not isinstance(element.get("action_id"), str):
                    return True
                for name in ("positive_button", "negative_button"):
                    button = element.get(name)
                    if not isinstance(button, dict) or not isinstance(button.get("value"), str):
                        return True
                    text = button.get("text")
                    if not (
                        isinstance(text, dict)
                        and text.get("type") == "plain_text"
                        and 0 < len(str(text.get("text") or "")) <= 75
                    ):
                        return True
        else:
            return True
    # The markdown blocks of one message share markdown_text's limit.
    return markdown > MARKDOWN_TEXT_LIMIT


def _metadata(value: Any) -> dict[str, Any] | None:
    """Message metadata given as an object or a JSON string, if well-formed."""
    if isinstance(value, str):
        try:
            value = jsonlib.loads(value)
        except ValueError:
            return None
    if (
        isinstance(value, dict)
        and isinstance(value.get("event_type"), str)
        and isinstance(value.get("event_payload"), dict)
    ):
        return value
    return None


def _error(error: str) -> web.Response:
    return web.json_response({"ok": False, "error": error})


_METHODS = {
    "auth.test": FakeSlack._auth_test,
    "chat.postMessage": FakeSlack._post_message,
    "chat.postEphemeral": FakeSlack._post_ephemeral,
    "chat.update": FakeSlack._update,
    "chat.startStream": FakeSlack._start_stream,
    "chat.appendStream": FakeSlack._append_stream,
    "chat.stopStream": FakeSlack._stop_stream,
    "reactions.add": FakeSlack._reaction,
    "reactions.remove": FakeSlack._reaction,
    "conversations.replies": FakeSlack._replies,
    "conversations.history": FakeSlack._history,
    "assistant.threads.setStatus": FakeSlack._set_status,
    "assistant.threads.setSuggestedPrompts": FakeSlack._set_suggested_prompts,
    "assistant.threads.setTitle": FakeSlack._set_title,
    "apps.connections.open": FakeSlack._connections_open,
    "files.info": FakeSlack._files_info,
}
