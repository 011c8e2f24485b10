"""The smallest Slack (Socket Mode) <-> thinnest.ai relay that answers correctly: the
Slack yardstick beside `benchmarks.relay` for Telegram.

    python -m benchmarks.relay_slack --api-url URL/api/ --bot-token B --app-token A \\
        --agent-url URL --agent-id ID --api-key K

``apps.connections.open`` -> the WebSocket; each ``events_api`` envelope is acked at
once; a user's message -> one ``POST /v1/agents/{id}/chat`` (with the channel's session
id, kept in memory) -> ``chat.postMessage`` with the answer. Messages of one channel are
answered one after another, in order; channels run side by side, at most
``--max-in-flight`` agent calls at once (0: no bound). No store, no rate limiter, no
retries, no reconnection: a crash or a dropped socket loses what is in flight. It tells
``READY=1`` on ``$NOTIFY_SOCKET`` once Slack's ``hello`` arrived, and exits 0 on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
from typing import Any

import aiohttp
import httpx

from benchmarks.relay import UNBOUNDED, AgentCall, InOrder, notify_ready


class SlackRelay:
    def __init__(self, args: argparse.Namespace) -> None:
        self.api = args.api_url
        self.bot = {"Authorization": f"Bearer {args.bot_token}"}
        self.app = {"Authorization": f"Bearer {args.app_token}"}
        self.slack = httpx.AsyncClient(timeout=httpx.Timeout(30.0), limits=UNBOUNDED)
        self.agent_call = AgentCall(args)
        self.channels: InOrder[str] = InOrder(self.answer, args.max_in_flight)

    async def call(self, method: str, body: dict[str, Any], headers: dict[str, str]) -> Any:
        resp = await self.slack.post(f"{self.api}{method}", json=body, headers=headers)
        data = resp.json()
        if not data.get("ok"):
            raise RuntimeError(f"{method}: {data.get('error')}")
        return data

    async def run(self, ready: asyncio.Event) -> None:
        await self.call("auth.test", {}, self.bot)
        url = (await self.call("apps.connections.open", {}, self.app))["url"]
        async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
            async for frame in ws:
                if frame.type is not aiohttp.WSMsgType.TEXT:
                    continue
                data = json.loads(frame.data)
                if data.get("type") == "hello":
                    ready.set()
                    continue
                envelope_id = data.get("envelope_id")
                if envelope_id:
                    await ws.send_str(json.dumps({"envelope_id": envelope_id}))
                if data.get("type") != "events_api":
                    continue
                event = data.get("payload", {}).get("event", {})
                if (
                    event.get("type") == "message"
                    and isinstance(event.get("text"), str)
                    and not event.get("subtype")
                    and not event.get("bot_id")
                ):
                    self.channels.put(str(event["channel"]), event)

    async def answer(self, channel: str, event: dict[str, Any]) -> None:
        text = await self.agent_call.ask(channel, event["text"])
        with contextlib.suppress(httpx.HTTPError, RuntimeError):
            await self.call("chat.postMessage", {"channel": channel, "text": text}, self.bot)


async def main_async(args: argparse.Namespace) -> int:
    relay = SlackRelay(args)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    ready = asyncio.Event()
    running = asyncio.create_task(relay.run(ready))
    waiting = asyncio.create_task(ready.wait())
    await asyncio.wait({running, waiting}, return_when=asyncio.FIRST_COMPLETED)
    if running.done():
        waiting.cancel()
        running.result()  # the start failed (or the socket closed at once): raise it
        return 1
    notify_ready()
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
    running.cancel()
    for task in list(relay.channels.tasks):
        task.cancel()
    await asyncio.gather(running, *relay.channels.tasks, return_exceptions=True)
    await relay.agent_call.client.aclose()
    await relay.slack.aclose()
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.relay_slack", description=__doc__)
    parser.add_argument("--api-url", required=True, help="Web API base, e.g. http://x/api/")
    parser.add_argument("--bot-token", required=True)
    parser.add_argument("--app-token", required=True)
    parser.add_argument("--agent-url", required=True, help="thinnest.ai base URL")
    parser.add_argument("--agent-id", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--max-in-flight", type=int, default=0, help="0: no bound")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(main_async(parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
