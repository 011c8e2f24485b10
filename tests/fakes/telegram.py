"""`FakeTelegram`: a Telegram Bot API server on 127.0.0.1, speaking the real wire format.

Tests point the real python-telegram-bot stack at it through ``telegram.api_url``
(``FakeTelegram.api_url``), so nothing is mocked below the socket.

Wire format, as the Bot API has it:

- ``POST /bot<token>/<method>``; the body is form-encoded (python-telegram-bot sends every
  non-string value JSON-encoded: ``chat_id=42&entities=[{...}]``), JSON, or multipart.
- Answers are ``{"ok": true, "result": ...}`` or ``{"ok": false, "error_code": N,
  "description": "...", "parameters": {"retry_after": N}}``.
- A wrong token gets 401 ``Unauthorized``; an unknown method 404 ``Not Found``.

Usage::

    async with FakeTelegram() as tg:
        config = TelegramConfig(bot_token=tg.token, api_url=tg.api_url, ...)
        tg.push(private_text(ALICE, "hello"))               # queued for getUpdates
        [call] = await tg.wait_sent(chat_id=ALICE.id)        # the bot's sendMessage
        call.params["text"]

Long polling is real: ``getUpdates`` returns as soon as an update is queued (or after its
``timeout``); an ``offset`` confirms (drops) every update below it, as Telegram does.
``tg.confirmed`` is the highest offset the bot has confirmed. As on Telegram, one consumer
per token: a newer getUpdates terminates a pending older one with 409 (`CONFLICT`).
``tg.push_raw(value)`` queues any JSON value as one element of the getUpdates result (or
``tg.deliver_raw(value)`` posts it to the webhook), for updates Telegram would never send.

Scripting: ``tg.fail_next("sendMessage", FakeError(429, "Too Many Requests: retry after 1",
retry_after=1))`` makes the next call(s) of a method fail (first in, first out); a
`FakeError` may carry a ``when`` predicate on the call's params so that only matching
calls consume it. ``tg.fail_always(...)`` installs an error until `clear_failures()`.

Webhook mode: ``setWebhook`` is recorded (``tg.webhook``); while a webhook is set,
``getUpdates`` answers 409 as Telegram does. ``await tg.deliver(update)`` POSTs an update
to the registered webhook with its secret header, as Telegram would, and returns the HTTP
status the bot answered.

Files: ``tg.add_file(content, path="documents/a.pdf")`` stores a file and returns its
``file_id``; ``getFile`` answers its ``file_path`` (400 "file is too big" above 20 MB, as
the Bot API does), and ``GET /file/bot<token>/<file_path>`` serves it in chunks, 404 for a
wrong token or path. Every download is recorded in ``tg.downloads`` (token, path, bytes
sent, whether it was sent whole).

Update builders (module functions) make the JSON Telegram sends: `private_text`,
`group_text`, `group_mention`, `reply_to_bot`, `topic_message`, `edited_text`,
`photo_with_caption`, `sticker`, `voice`, `channel_post`, `my_chat_member`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import aiohttp
from aiohttp import web

from tests.fakes.loopback import serve_loopback

FAKE_TOKEN = "123456789:AAfakeTelegramTokenForTests_x1y2z3"
#: What Telegram answers a pending getUpdates when a newer one arrives.
CONFLICT = (
    "Conflict: terminated by other getUpdates request; make sure that only one bot instance "
    "is running"
)
BOT_ID = 123456789
BOT_USERNAME = "bridge_test_bot"

#: Parameters that are strings on the wire, never JSON: "123" stays "123".
_STRING_PARAMS = frozenset(
    {
        "text",
        "caption",
        "url",
        "secret_token",
        "action",
        "parse_mode",
        "language_code",
        "ip_address",
        "description",
        "short_description",
        "name",
    }
)


@dataclass(frozen=True)
class User:
    id: int
    username: str | None = None
    first_name: str = "Test"
    is_bot: bool = False

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "is_bot": self.is_bot, "first_name": self.first_name}
        if self.username:
            out["username"] = self.username
        return out


BOT = User(BOT_ID, BOT_USERNAME, "Bridge", is_bot=True)
ALICE = User(1001, "alice", "Alice")
BOB = User(1002, "bob", "Bob")
MALLORY = User(6666, "mallory", "Mallory")
GROUP_ID = -1001234567890
FORUM_ID = -1009876543210
CHANNEL_ID = -1005555555555


@dataclass
class ApiCall:
    """One request the bot made, and whether it succeeded."""

    method: str
    params: dict[str, Any]
    token: str
    at: float = field(default_factory=time.monotonic)
    ok: bool = False


@dataclass
class Download:
    """One request on the file route."""

    token: str
    path: str
    sent: int = 0
    whole: bool = False


@dataclass
class FakeError:
    """A scripted error answer."""

    error_code: int
    description: str
    retry_after: int | None = None
    #: Only calls whose params match consume this error (None: every call).
    when: Callable[[dict[str, Any]], bool] | None = None

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ok": False,
            "error_code": self.error_code,
            "description": self.description,
        }
        if self.retry_after is not None:
            out["parameters"] = {"retry_after": self.retry_after}
        return out


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


class FakeTelegram:
    def __init__(
        self,
        *,
        token: str = FAKE_TOKEN,
        bot: User = BOT,
        strict_entities: bool = True,
    ) -> None:
        self.token = token
        self.bot = bot
        #: Reject sendMessage whose entities fall outside the text, or whose
        #: MarkdownV2/HTML does not parse, with "can't parse entities" as Telegram does.
        self.strict_entities = strict_entities
        self.calls: list[ApiCall] = []
        #: Queued updates: (update_id, the JSON value getUpdates returns for it).
        self._queue: list[tuple[int, Any]] = []
        #: Bumped by every getUpdates; a pending one that sees it change was terminated.
        self._poll_generation = 0
        self.confirmed = 0
        self.webhook: dict[str, Any] | None = None
        #: Every update the bot answered on its webhook: (update_id, HTTP status).
        self.webhook_results: list[tuple[int, int]] = []
        #: (chat_id, draft_id) -> the draft text shown, until a message in the chat.
        self.drafts: dict[tuple[int, int], str] = {}
        self.url = ""
        self._update_ids = itertools.count(1)
        self._message_ids = itertools.count(1)
        self._errors: dict[str, list[FakeError]] = {}
        self._sticky: dict[str, FakeError] = {}
        self._changed = asyncio.Condition()
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._client: aiohttp.ClientSession | None = None
        #: file_id -> (file_path, content, the size getFile reports)
        self.files: dict[str, tuple[str, bytes, int]] = {}
        self.downloads: list[Download] = []
        #: Set: downloads flow; cleared by `hold_downloads`, they stop after a first chunk.
        self._downloads_flow = asyncio.Event()
        self._downloads_flow.set()
        self._file_ids = itertools.count(1)

    # --- lifecycle ------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/bot{token}/{method}", self._handle)
        app.router.add_get("/bot{token}/{method}", self._handle)
        app.router.add_get("/file/bot{token}/{path:.+}", self._download)
        self._runner, port = await serve_loopback(app)
        self.url = f"http://127.0.0.1:{port}"

    async def close(self) -> None:
        self._closing.set()
        async with self._changed:
            self._changed.notify_all()
        if self._client is not None:
            await self._client.close()
            self._client = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def api_url(self) -> str:
        """The value for ``telegram.api_url``."""
        return f"{self.url}/bot"

    # --- control --------------------------------------------------------------------

    @property
    def updates(self) -> list[Any]:
        """The updates queued and not yet confirmed, as getUpdates returns them."""
        return [value for _, value in self._queue]

    def push(self, update: Mapping[str, Any]) -> dict[str, Any]:
        """Queue an update for getUpdates; returns it with its ``update_id``."""
        full = {"update_id": next(self._update_ids), **update}
        self._queue.append((full["update_id"], full))
        self._notify()
        return full

    def push_raw(self, value: Any, *, set_id: bool = False) -> int:
        """Queue ``value`` verbatim as one element of the getUpdates result (junk no
        real Telegram sends). It gets an update id for confirmation all the same,
        written into ``value["update_id"]`` when ``set_id`` and ``value`` is a dict.
        Returns that id."""
        update_id = next(self._update_ids)
        if set_id and isinstance(value, dict):
            value = {**value, "update_id": update_id}
        self._queue.append((update_id, value))
        self._notify()
        return update_id

    def add_file(
        self, content: bytes, *, path: str = "documents/file.bin", size: int | None = None
    ) -> str:
        """Store a file for getFile and the download route; returns its file_id.
        ``size`` is what getFile reports (default: the content's length)."""
        file_id = f"BQACAgfile{next(self._file_ids)}"
        self.files[file_id] = (path, content, len(content) if size is None else size)
        return file_id

    def hold_downloads(self) -> None:
        """Downloads send their first chunk, then wait for `release_downloads`."""
        self._downloads_flow.clear()

    def release_downloads(self) -> None:
        self._downloads_flow.set()

    async def _download(self, request: web.Request) -> web.StreamResponse:
        token = request.match_info["token"]
        path = request.match_info["path"]
        record = Download(token, path)
        self.downloads.append(record)
        found = next((f for f in self.files.values() if f[0] == path), None)
        if token != self.token or found is None:
            return _error(404, "Not Found")
        content = found[1]
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.content_length = len(content)
        await response.prepare(request)
        try:
            for start in range(0, len(content), 65536):
                await response.write(content[start : start + 65536])
                record.sent = min(start + 65536, len(content))
                self._notify()
                await self._downloads_flow.wait()
            await response.write_eof()
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):
            return response  # the bot stopped reading: not sent whole
        record.whole = True
        return response

    def fail_next(self, method: str, *errors: FakeError) -> None:
        """The next calls of ``method`` fail with these errors, in order."""
        self._errors.setdefault(method, []).extend(errors)

    def fail_always(self, method: str, error: FakeError) -> None:
        self._sticky[method] = error

    def clear_failures(self) -> None:
        self._errors.clear()
        self._sticky.clear()

    def calls_of(self, method: str) -> list[ApiCall]:
        return [c for c in self.calls if c.method == method]

    def sent(self, chat_id: int | None = None) -> list[ApiCall]:
        """Every sendMessage that succeeded (optionally to one chat), in order."""
        return [
            c
            for c in self.calls_of("sendMessage")
            if c.ok and (chat_id is None or c.params.get("chat_id") == chat_id)
        ]

    async def wait_for(
        self,
        predicate: Callable[[], bool],
        *,
        within: float = 5.0,
    ) -> None:
        """Wait until ``predicate()`` holds (checked after every request), at most
        ``within`` seconds (then `TimeoutError`)."""
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(predicate)

    async def wait_sent(
        self, chat_id: int | None = None, *, count: int = 1, within: float = 5.0
    ) -> list[ApiCall]:
        """Wait until ``count`` messages were sent (to ``chat_id``); return them all."""
        await self.wait_for(lambda: len(self.sent(chat_id)) >= count, within=within)
        return self.sent(chat_id)

    async def wait_calls(
        self, method: str, *, count: int = 1, within: float = 5.0
    ) -> list[ApiCall]:
        await self.wait_for(lambda: len(self.calls_of(method)) >= count, within=within)
        return self.calls_of(method)

    async def wait_confirmed(self, update_id: int, *, within: float = 5.0) -> None:
        """Wait until the bot confirmed ``update_id`` (asked for an offset above it)."""
        await self.wait_for(lambda: self.confirmed > update_id, within=within)

    async def deliver(self, update: Mapping[str, Any], *, secret: str | None = None) -> int:
        """POST an update to the registered webhook as Telegram does; return the status.

        ``secret`` overrides the header value (``""`` sends no header)."""
        full = {"update_id": next(self._update_ids), **update}
        return await self._post_webhook(full["update_id"], json.dumps(full).encode(), secret)

    async def deliver_raw(self, body: Any, *, secret: str | None = None) -> int:
        """POST any JSON value (or, given ``bytes``, any body) to the webhook."""
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return await self._post_webhook(next(self._update_ids), data, secret)

    async def _post_webhook(self, update_id: int, data: bytes, secret: str | None) -> int:
        assert self.webhook is not None, "no webhook set"
        headers = {"Content-Type": "application/json"}
        token = self.webhook.get("secret_token") if secret is None else secret
        if token:
            headers["X-Telegram-Bot-Api-Secret-Token"] = token
        if self._client is None:
            self._client = aiohttp.ClientSession()
        async with self._client.post(self.webhook["url"], data=data, headers=headers) as resp:
            await resp.read()
            self.webhook_results.append((update_id, resp.status))
            return resp.status

    def _notify(self) -> None:
        async def notify() -> None:
            async with self._changed:
                self._changed.notify_all()

        task = asyncio.get_running_loop().create_task(notify())
        _background.add(task)
        task.add_done_callback(_background.discard)

    # --- the API --------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        method = request.match_info["method"]
        params = await _read_params(request)
        call = ApiCall(method, params, token)
        self.calls.append(call)
        async with self._changed:  # a long poll would otherwise be seen only when it ends
            self._changed.notify_all()
        try:
            if token != self.token:
                return _error(401, "Unauthorized")
            scripted = self._scripted_error(method, params)
            if scripted is not None:
                return web.json_response(scripted.body(), status=scripted.error_code)
            handler = getattr(self, f"_api_{method.lower()}", None)
            if handler is None:
                return _error(404, "Not Found")
            result: Any = await handler(params)
            if isinstance(result, web.Response):
                return result
            call.ok = True
            return web.json_response({"ok": True, "result": result})
        finally:
            async with self._changed:
                self._changed.notify_all()

    def _scripted_error(self, method: str, params: dict[str, Any]) -> FakeError | None:
        queue = self._errors.get(method, [])
        for i, err in enumerate(queue):
            if err.when is None or err.when(params):
                return queue.pop(i)
        sticky = self._sticky.get(method)
        if sticky is not None and (sticky.when is None or sticky.when(params)):
            return sticky
        return None

    async def _api_getfile(self, params: dict[str, Any]) -> Any:
        found = self.files.get(str(params.get("file_id")))
        if found is None:
            return _error(400, "Bad Request: invalid file_id")
        path, _, size = found
        if size > 20 * 1024 * 1024:
            return _error(400, "Bad Request: file is too big")
        return {
            "file_id": params["file_id"],
            "file_unique_id": f"u-{params['file_id']}",
            "file_size": size,
            "file_path": path,
        }

    async def _api_getme(self, params: dict[str, Any]) -> Any:
        return {
            **self.bot.to_dict(),
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }

    async def _api_getupdates(self, params: dict[str, Any]) -> Any:
        if self.webhook is not None:
            return _error(
                409,
                "Conflict: can't use getUpdates method while webhook is active; "
                "use deleteWebhook to delete the webhook first",
            )
        # One consumer per token: this request terminates a pending older one.
        self._poll_generation += 1
        mine = self._poll_generation
        async with self._changed:
            self._changed.notify_all()
        offset = int(params.get("offset") or 0)
        if offset:
            self.confirmed = max(self.confirmed, offset)
            self._queue = [(i, u) for i, u in self._queue if i >= offset]
        limit = int(params.get("limit") or 100)
        timeout = float(params.get("timeout") or 0)

        def superseded() -> bool:
            return self._poll_generation != mine

        def ready() -> bool:
            return bool(self._queue) or self._closing.is_set() or superseded()

        if not ready() and timeout > 0:
            async with self._changed:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self._changed.wait_for(ready)
        if superseded():
            return _error(409, CONFLICT)
        return self.updates[:limit]

    async def _api_deletewebhook(self, params: dict[str, Any]) -> Any:
        self.webhook = None
        if params.get("drop_pending_updates"):
            self._queue.clear()
        return True

    async def _api_setwebhook(self, params: dict[str, Any]) -> Any:
        url = params.get("url")
        if not url:
            self.webhook = None
            return True
        self.webhook = {"url": url, "secret_token": params.get("secret_token")}
        return True

    async def _api_getwebhookinfo(self, params: dict[str, Any]) -> Any:
        return {
            "url": (self.webhook or {}).get("url", ""),
            "has_custom_certificate": False,
            "pending_update_count": len(self.updates),
        }

    async def _api_setmycommands(self, params: dict[str, Any]) -> Any:
        return True

    async def _api_deletemycommands(self, params: dict[str, Any]) -> Any:
        return True

    async def _api_sendchataction(self, params: dict[str, Any]) -> Any:
        return True

    async def _api_sendmessagedraft(self, params: dict[str, Any]) -> Any:
        """A draft: private chats only, a non-zero ``draft_id``, the text's limits as
        sendMessage (an empty text shows Telegram's placeholder). The draft shown per
        (chat, draft_id) is kept in ``drafts``; the next message in the chat replaces
        every draft there (``sendMessage`` clears them), as Telegram does."""
        chat_id, draft_id = params.get("chat_id"), params.get("draft_id")
        if not isinstance(chat_id, int):
            return _error(400, "Bad Request: chat not found")
        if chat_id < 0:
            return _error(400, "Bad Request: drafts can be sent to private chats only")
        if isinstance(draft_id, bool) or not isinstance(draft_id, int) or draft_id == 0:
            return _error(400, "Bad Request: invalid draft_id specified")
        text = params.get("text") or ""
        if not isinstance(text, str) or utf16_len(text) > 4096:
            return _error(400, "Bad Request: text is too long")
        problem = _entity_problem(text, params) if text and self.strict_entities else None
        if problem is not None:
            return _error(400, f"Bad Request: can't parse entities: {problem}")
        self.drafts[(chat_id, draft_id)] = text
        return True

    async def _api_sendmessage(self, params: dict[str, Any]) -> Any:
        text = params.get("text")
        if not isinstance(text, str) or not text.strip():
            return _error(400, "Bad Request: message text is empty")
        if utf16_len(text) > 4096:
            return _error(400, "Bad Request: message is too long")
        problem = _entity_problem(text, params) if self.strict_entities else None
        if problem is not None:
            return _error(400, f"Bad Request: can't parse entities: {problem}")
        chat_id = params.get("chat_id")
        if not isinstance(chat_id, int):
            return _error(400, "Bad Request: chat not found")
        for draft in [d for d in self.drafts if d[0] == chat_id]:
            del self.drafts[draft]  # a real message replaces the chat's draft
        message: dict[str, Any] = {
            "message_id": next(self._message_ids) + 100000,
            "date": int(time.time()),
            "chat": {"id": chat_id, "type": "private" if chat_id > 0 else "supergroup"},
            "from": self.bot.to_dict(),
            "text": text,
        }
        if params.get("entities"):
            message["entities"] = params["entities"]
        if params.get("message_thread_id"):
            message["message_thread_id"] = params["message_thread_id"]
            message["is_topic_message"] = True
        return message


_background: set[asyncio.Task[None]] = set()


def _error(code: int, description: str) -> web.Response:
    return web.json_response(
        {"ok": False, "error_code": code, "description": description}, status=code
    )


async def _read_params(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        raw: Mapping[str, Any] = request.query
    elif request.content_type == "application/json":
        return dict(await request.json())
    else:
        # form-encoded or multipart; python-telegram-bot JSON-encodes non-string values
        raw = await request.post()
    params: dict[str, Any] = {}
    for key, value in raw.items():
        if not isinstance(value, str):
            params[key] = value  # an uploaded file
        elif key in _STRING_PARAMS:
            params[key] = value
        else:
            try:
                params[key] = json.loads(value)
            except ValueError:
                params[key] = value
    return params


_MDV2_RESERVED = set("_*[]()~`>#+-=|{}.!")


def _entity_problem(text: str, params: Mapping[str, Any]) -> str | None:
    """Why Telegram would refuse the formatting, or None. Strict where the real API is."""
    mode = params.get("parse_mode")
    if mode == "MarkdownV2":
        escaped = False
        for i, ch in enumerate(text):
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch in _MDV2_RESERVED and ch not in "*_`[]()~|":
                return (
                    f"Character '{ch}' is reserved and must be escaped with the preceding "
                    f"'\\' (byte offset {i})"
                )
    entities = params.get("entities") or []
    if not isinstance(entities, list):
        return "entities must be a list"
    length = utf16_len(text)
    for entity in entities:
        offset, size = entity.get("offset"), entity.get("length")
        if not isinstance(offset, int) or not isinstance(size, int) or size <= 0 or offset < 0:
            return f"bad entity {entity!r}"
        if offset + size > length:
            return f"entity {entity.get('type')} ends after the text ({offset}+{size} > {length})"
    return None


# --- update builders ----------------------------------------------------------------

_msg_ids = itertools.count(1)


def _message(
    chat: Mapping[str, Any],
    sender: User | None,
    *,
    text: str | None = None,
    entities: list[dict[str, Any]] | None = None,
    message_id: int | None = None,
    **extra: Any,
) -> dict[str, Any]:
    msg: dict[str, Any] = {
        "message_id": message_id if message_id is not None else next(_msg_ids),
        "date": int(time.time()),
        "chat": dict(chat),
    }
    if sender is not None:
        msg["from"] = sender.to_dict()
    if text is not None:
        msg["text"] = text
        if entities is None:
            entities = _auto_entities(text)
        if entities:
            msg["entities"] = entities
    msg.update(extra)
    return msg


def _auto_entities(text: str) -> list[dict[str, Any]]:
    """Telegram marks a leading /command and @mentions; do the same."""
    out: list[dict[str, Any]] = []
    pos = 0
    for word in text.split(" "):
        offset = utf16_len(text[:pos])
        if word.startswith("/") and pos == 0 and len(word) > 1:
            out.append({"type": "bot_command", "offset": 0, "length": utf16_len(word)})
        elif word.startswith("@") and len(word) > 1:
            clean = word.rstrip(",.:;!?")
            out.append({"type": "mention", "offset": offset, "length": utf16_len(clean)})
        pos += len(word) + 1
    return out


def private_chat(user: User) -> dict[str, Any]:
    return {"id": user.id, "type": "private", "first_name": user.first_name}


def group_chat(chat_id: int = GROUP_ID, *, forum: bool = False) -> dict[str, Any]:
    chat: dict[str, Any] = {"id": chat_id, "type": "supergroup", "title": "Test group"}
    if forum:
        chat["is_forum"] = True
    return chat


def private_text(user: User, text: str, **extra: Any) -> dict[str, Any]:
    return {"message": _message(private_chat(user), user, text=text, **extra)}


def group_text(user: User, text: str, *, chat_id: int = GROUP_ID, **extra: Any) -> dict[str, Any]:
    return {"message": _message(group_chat(chat_id), user, text=text, **extra)}


def group_mention(
    user: User, text: str, *, chat_id: int = GROUP_ID, bot: User = BOT
) -> dict[str, Any]:
    """``@bot <text>`` in a group."""
    return group_text(user, f"@{bot.username} {text}", chat_id=chat_id)


def reply_to_bot(
    user: User, text: str, *, chat_id: int = GROUP_ID, bot: User = BOT
) -> dict[str, Any]:
    original = _message(group_chat(chat_id), bot, text="an earlier answer")
    return group_text(user, text, chat_id=chat_id, reply_to_message=original)


def topic_message(
    user: User,
    text: str,
    *,
    thread_id: int,
    chat_id: int = FORUM_ID,
    topic_creator: User | None = None,
) -> dict[str, Any]:
    """A message in a forum topic. As Telegram does, it carries the topic's creation
    message as ``reply_to_message`` (created by ``topic_creator``, the user by default)."""
    chat = group_chat(chat_id, forum=True)
    creation = _message(
        chat,
        topic_creator or user,
        message_id=thread_id,
        message_thread_id=thread_id,
        is_topic_message=True,
        forum_topic_created={"name": "Topic", "icon_color": 7322096},
    )
    return {
        "message": _message(
            chat,
            user,
            text=text,
            message_thread_id=thread_id,
            is_topic_message=True,
            reply_to_message=creation,
        )
    }


def edited_text(user: User, text: str) -> dict[str, Any]:
    msg = _message(private_chat(user), user, text=text, edit_date=int(time.time()))
    return {"edited_message": msg}


def photo_with_caption(user: User, caption: str | None) -> dict[str, Any]:
    photo = [{"file_id": "AgAD-photo", "file_unique_id": "u1", "width": 90, "height": 90}]
    extra: dict[str, Any] = {"photo": photo}
    if caption is not None:
        extra["caption"] = caption
    return {"message": _message(private_chat(user), user, **extra)}


def sticker(user: User) -> dict[str, Any]:
    st = {
        "file_id": "CAAD-sticker",
        "file_unique_id": "u2",
        "type": "regular",
        "width": 512,
        "height": 512,
        "is_animated": False,
        "is_video": False,
    }
    return {"message": _message(private_chat(user), user, sticker=st)}


def voice(user: User) -> dict[str, Any]:
    v = {"file_id": "AwAD-voice", "file_unique_id": "u3", "duration": 3}
    return {"message": _message(private_chat(user), user, voice=v)}


def document(
    user: User,
    file_id: str,
    name: str,
    *,
    mime_type: str | None = None,
    size: int | None = None,
    caption: str | None = None,
) -> dict[str, Any]:
    """A file sent as a document, as Telegram describes it (file_size as declared)."""
    doc: dict[str, Any] = {"file_id": file_id, "file_unique_id": f"u-{file_id}", "file_name": name}
    if mime_type is not None:
        doc["mime_type"] = mime_type
    if size is not None:
        doc["file_size"] = size
    extra: dict[str, Any] = {"document": doc}
    if caption is not None:
        extra["caption"] = caption
    return {"message": _message(private_chat(user), user, **extra)}


def photo(user: User, file_id: str, *, size: int, caption: str | None = None) -> dict[str, Any]:
    """A photo in the sizes Telegram sends: two thumbnails and ``file_id`` the largest."""
    sizes = [
        {"file_id": "thumb-s", "file_unique_id": "ts", "width": 90, "height": 60, "file_size": 900},
        {
            "file_id": file_id,
            "file_unique_id": "tl",
            "width": 1280,
            "height": 853,
            "file_size": size,
        },
        {"file_id": "thumb-m", "file_unique_id": "tm", "width": 320, "height": 213, "file_size": 9},
    ]
    extra: dict[str, Any] = {"photo": sizes}
    if caption is not None:
        extra["caption"] = caption
    return {"message": _message(private_chat(user), user, **extra)}


def voice_note(user: User, file_id: str, *, size: int) -> dict[str, Any]:
    v = {
        "file_id": file_id,
        "file_unique_id": f"u-{file_id}",
        "duration": 2,
        "mime_type": "audio/ogg",
        "file_size": size,
    }
    return {"message": _message(private_chat(user), user, voice=v)}


def channel_post(text: str, *, chat_id: int = CHANNEL_ID) -> dict[str, Any]:
    chat = {"id": chat_id, "type": "channel", "title": "Test channel"}
    return {"channel_post": _message(chat, None, text=text)}


def my_chat_member(
    by: User, *, chat_id: int = GROUP_ID, old: str = "left", new: str = "member", bot: User = BOT
) -> dict[str, Any]:
    return {
        "my_chat_member": {
            "chat": group_chat(chat_id),
            "from": by.to_dict(),
            "date": int(time.time()),
            "old_chat_member": {"status": old, "user": bot.to_dict()},
            "new_chat_member": {"status": new, "user": bot.to_dict()},
        }
    }


def new_members(by: User, *, chat_id: int = GROUP_ID) -> dict[str, Any]:
    """A service message: someone joined."""
    return {"message": _message(group_chat(chat_id), by, new_chat_members=[BOB.to_dict()])}
