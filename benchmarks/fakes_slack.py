"""A lean fake Slack for the benchmark: the Web API methods a Socket Mode app calls and
the Socket Mode WebSocket itself, on 127.0.0.1.

Like `benchmarks.fakes.BenchTelegram` it is built to cost little CPU per message, not to
check the wire format (tests/fakes/slack.py does that): ``push`` queues a direct message
from a user as an ``events_api`` envelope, sent at once on the open socket; the app's
acks are counted; a ``chat.postMessage`` is a reply, matched to its message by the
echoed text and the DM channel. Every other method answers ``{"ok": true}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from benchmarks.fakes import BenchPlatform, json_response, params_of, serve

BOT_TOKEN = "xoxb-bench-0000000000-0000000000000-benchmarkbottoken"
APP_TOKEN = "xapp-1-ABENCH-0000000000000-benchmarkapptoken"
TEAM_ID = "TBENCH"
BOT_USER_ID = "UBENCHBOT"
BOT_ID = "BBENCH"

_ts = itertools.count(1)
_event_ids = itertools.count(1)
_AUTH_TEST = json.dumps(
    {
        "ok": True,
        "url": "https://bench.slack.com/",
        "team": "Bench",
        "user": "bench",
        "team_id": TEAM_ID,
        "user_id": BOT_USER_ID,
        "bot_id": BOT_ID,
        "is_enterprise_install": False,
    }
).encode()
_OK = b'{"ok":true}'


def _next_ts() -> str:
    return f"1800000000.{next(_ts):06d}"


def dm_channel(user_id: int) -> str:
    """The DM channel of the benchmark's user ``user_id``."""
    return f"D{user_id}"


@dataclass
class BenchSlack(BenchPlatform):
    bot_token: str = BOT_TOKEN
    app_token: str = APP_TOKEN
    #: Envelopes acked by the app.
    acks: int = 0
    connections: int = 0
    _outbox: asyncio.Queue[str] = field(default_factory=asyncio.Queue)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/api/{method}", self._api)
        app.router.add_get("/api/{method}", self._api)
        app.router.add_get("/socket", self._socket)
        self._runner, self.url = await serve(app)

    @property
    def api_url(self) -> str:
        """The value for ``slack.api_url``."""
        return f"{self.url}/api/"

    # --- load ------------------------------------------------------------------------

    def push(self, user_id: int, text: str) -> None:
        """Queue a direct message from user ``user_id`` (in its DM channel)."""
        channel, ts = dm_channel(user_id), _next_ts()
        envelope = {
            "envelope_id": f"env-{next(_event_ids)}",
            "type": "events_api",
            "accepts_response_payload": False,
            "retry_attempt": 0,
            "retry_reason": "",
            "payload": {
                "token": "verification",
                "team_id": TEAM_ID,
                "api_app_id": "ABENCH",
                "type": "event_callback",
                "event_id": f"Ev{next(_event_ids):010d}",
                "event_time": int(time.time()),
                "authorizations": [{"team_id": TEAM_ID, "user_id": BOT_USER_ID, "is_bot": True}],
                "event": {
                    "type": "message",
                    "channel": channel,
                    "channel_type": "im",
                    "user": f"U{user_id}",
                    "text": text,
                    "ts": ts,
                    "event_ts": ts,
                    "team": TEAM_ID,
                },
            },
        }
        self._offered(text, channel)
        self._outbox.put_nowait(json.dumps(envelope, separators=(",", ":")))

    # --- the Web API -----------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        self.calls[method] += 1
        args = await params_of(request)
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        token = token or str(args.get("token") or "")
        wanted = self.app_token if method == "apps.connections.open" else self.bot_token
        if token != wanted:
            return json_response(b'{"ok":false,"error":"invalid_auth"}')
        if method == "chat.postMessage":
            return self._post_message(args)
        if method == "auth.test":
            return json_response(_AUTH_TEST)
        if method == "apps.connections.open":
            port = self.url.rsplit(":", 1)[1]
            return json_response(
                json.dumps({"ok": True, "url": f"ws://127.0.0.1:{port}/socket"}).encode()
            )
        return json_response(_OK)  # reactions.add / remove, ...

    def _post_message(self, args: dict[str, Any]) -> web.Response:
        channel = str(args.get("channel") or "")
        text = str(args.get("markdown_text") or args.get("text") or "")
        self._replied(channel, text)
        ts = _next_ts()
        body = {
            "ok": True,
            "channel": channel,
            "ts": ts,
            "message": {"type": "message", "text": text, "user": BOT_USER_ID, "ts": ts},
        }
        return json_response(json.dumps(body).encode())

    # --- Socket Mode -----------------------------------------------------------------

    async def _socket(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.connections += 1
        await ws.send_str(
            json.dumps(
                {
                    "type": "hello",
                    "num_connections": 1,
                    "debug_info": {"host": "bench-slack"},
                    "connection_info": {"app_id": "ABENCH"},
                }
            )
        )
        sender = asyncio.create_task(self._send(ws))
        try:
            async for frame in ws:
                if frame.type is WSMsgType.TEXT and '"envelope_id"' in frame.data:
                    self.acks += 1
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
        return ws

    async def _send(self, ws: web.WebSocketResponse) -> None:
        while not ws.closed:
            envelope = await self._outbox.get()
            try:
                await ws.send_str(envelope)
            except ConnectionError:
                self._outbox.put_nowait(envelope)  # the next connection sends it
                return
