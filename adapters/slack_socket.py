"""Socket Mode for `SlackAdapter`: the WebSocket connection, inside the bridge's loop.

`SlackSocket.open()` asks ``apps.connections.open`` for the first URL itself (the Socket
Mode client retries a failing call forever, which would hide a wrong app token), then
``connect_async()`` (never ``start_async()``, which would take over the process).
slack_sdk re-establishes the connection on its own after a drop or a ``disconnect``
request; a watcher reports each change to the adapter. ``close()`` waits for the
client's tasks, which slack_sdk's own close only cancels.

Acknowledgement: every envelope is acked once bolt has run it, except when a listener
failed on the store (bolt's 500): Slack then delivers the event again. An envelope bolt
fails on outright or that no listener takes (its 404) is acked too, since Slack would
send it again unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import aiohttp
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.adapter.socket_mode.async_internals import run_async_bolt_app, send_async_response
from slack_bolt.async_app import AsyncApp
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack_events import PLATFORM
from bridge.errors import AdapterError, CredentialsRejected

log = logging.getLogger("adapters.slack")

#: Slack errors that mean "this token is wrong", for a useful start-up error.
TOKEN_ERRORS = frozenset(
    {"invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired"}
)


class _Handler(AsyncSocketModeHandler):
    async def handle(  # type: ignore[override]
        self, client: SocketModeClient, req: SocketModeRequest
    ) -> None:
        start = time.time()
        try:
            response = await run_async_bolt_app(self.app, req)
        except Exception as exc:
            log.warning("Slack envelope skipped: bolt failed on it (%s)", type(exc).__name__)
            response = BoltResponse(status=200)
        if response.status == 404:
            response = BoltResponse(status=200)
        await send_async_response(client, req, response, start)


class SlackSocket:
    """One Socket Mode connection for ``app``; ``on_change(connected)`` hears of every
    drop and every restored connection."""

    def __init__(
        self,
        app: AsyncApp,
        client: AsyncWebClient,
        app_token: str,
        *,
        on_change: Callable[[bool], None],
        ping_interval: float,
        watch_interval: float,
        connect_timeout: float,
    ) -> None:
        self._app = app
        self._client = client
        self._app_token = app_token
        self._on_change = on_change
        self._ping_interval = ping_interval
        self._watch_interval = watch_interval
        self._connect_timeout = connect_timeout
        self._handler: _Handler | None = None
        self._watcher: asyncio.Task[None] | None = None

    async def open(self) -> None:
        """Connect; raise `AdapterError` with Slack's reason when it cannot."""
        try:
            resp = await self._client.apps_connections_open(app_token=self._app_token)
        except SlackApiError as exc:
            error = str(exc.response.get("error", "unknown_error"))
            if error in TOKEN_ERRORS:
                raise CredentialsRejected(PLATFORM, f"{error}: check slack.app_token") from None
            if error == "not_allowed_token_type":
                raise CredentialsRejected(
                    PLATFORM,
                    f"{error}: slack.app_token must be an app-level token (xapp-...) "
                    "with the connections:write scope",
                ) from None
            raise AdapterError(PLATFORM, f"apps.connections.open failed: {error}") from None
        except (aiohttp.ClientError, TimeoutError, SlackClientError) as exc:
            raise AdapterError(
                PLATFORM, f"cannot reach Slack at {self._client.base_url}: {type(exc).__name__}"
            ) from exc
        self._handler = _Handler(
            self._app,
            app_token=self._app_token,
            logger=logging.getLogger("adapters.slack.socket"),
            web_client=self._client,
            ping_interval=self._ping_interval,
        )
        self._handler.client.wss_uri = str(resp["url"])
        try:
            await asyncio.wait_for(
                self._handler.connect_async(),  # type: ignore[no-untyped-call]
                self._connect_timeout,
            )
        except TimeoutError:
            raise AdapterError(
                PLATFORM,
                f"could not open the Socket Mode connection within {self._connect_timeout:g} s",
            ) from None
        self._watcher = asyncio.create_task(self._watch(), name="slack-socket-watch")

    async def _watch(self) -> None:
        assert self._handler is not None
        client = self._handler.client
        connected = True
        while True:
            await asyncio.sleep(self._watch_interval)
            try:
                now = await client.is_connected()
            except Exception:  # a broken session object: count it as disconnected
                now = False
            if now is not connected:
                connected = now
                self._on_change(connected)

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        if self._handler is not None:
            client = self._handler.client
            await self._handler.close_async()  # type: ignore[no-untyped-call]
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
            self._handler = None
