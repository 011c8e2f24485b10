"""The smallest Telegram <-> thinnest.ai relay that answers correctly: the benchmark's
yardstick for what the bridge's store, limiter and dispatcher cost.

    python -m benchmarks.relay --api-url URL/bot --token T --agent-url URL --agent-id A --api-key K

getUpdates long polling -> one ``POST /v1/agents/{id}/chat`` per message (with the chat's
session id, kept in memory) -> sendMessage with the answer. Messages of one chat are
answered one after another, in order (as the bridge does); chats run side by side, with
no bound but ``--max-in-flight`` (0: none). No store, no flood limiter, no retries, no
typing action: a crash loses what is in flight. It tells systemd-style ``READY=1`` on
``$NOTIFY_SOCKET`` once its first getUpdates is sent, and exits 0 on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Generic, TypeVar

import httpx

POLL_TIMEOUT = 30
K = TypeVar("K", bound=Hashable)


UNBOUNDED = httpx.Limits(max_connections=None, max_keepalive_connections=None)


class AgentCall:
    """``POST /v1/agents/{id}/chat`` with each chat's session id, kept in memory."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.url = f"{args.agent_url.rstrip('/')}/v1/agents/{args.agent_id}/chat"
        self.headers = {"Authorization": f"Bearer {args.api_key}"}
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(120.0), limits=UNBOUNDED)
        self.sessions: dict[Hashable, str] = {}

    async def ask(self, chat: Hashable, text: str) -> str:
        body: dict[str, Any] = {"message": text}
        if chat in self.sessions:
            body["session_id"] = self.sessions[chat]
        try:
            resp = await self.client.post(self.url, json=body, headers=self.headers)
            resp.raise_for_status()
            data = resp.json()
            self.sessions[chat] = data.get("session_id") or self.sessions.get(chat, "")
            return str(data["response"])
        except (httpx.HTTPError, ValueError, KeyError):
            return "The agent is unavailable right now."


class InOrder(Generic[K]):
    """Messages of one chat answered one after another, in order; chats side by side,
    at most ``limit`` answers at once (0: no bound)."""

    def __init__(self, answer: Callable[[K, dict[str, Any]], Awaitable[None]], limit: int) -> None:
        self._answer = answer
        self._slots = asyncio.Semaphore(limit) if limit else None
        self._queues: dict[K, deque[dict[str, Any]]] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    def put(self, chat: K, message: dict[str, Any]) -> None:
        queue = self._queues.get(chat)
        if queue is not None:  # a worker is answering this chat: it takes this one next
            queue.append(message)
            return
        self._queues[chat] = deque([message])
        task = asyncio.create_task(self._work(chat))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _work(self, chat: K) -> None:
        queue = self._queues[chat]
        try:
            while queue:
                message = queue.popleft()
                if self._slots is None:
                    await self._answer(chat, message)
                else:
                    async with self._slots:
                        await self._answer(chat, message)
        finally:
            del self._queues[chat]


class Relay:
    def __init__(self, args: argparse.Namespace) -> None:
        self.api = f"{args.api_url}{args.token}"
        # One client per peer: httpcore scans its whole pool on every request.
        self.telegram = httpx.AsyncClient(timeout=httpx.Timeout(40.0), limits=UNBOUNDED)
        self.agent_call = AgentCall(args)
        self.chats: InOrder[int] = InOrder(self.answer, args.max_in_flight)

    async def call(self, method: str, body: dict[str, Any], poll: float = 0.0) -> Any:
        """One Bot API call; ``poll``: the seconds a getUpdates may wait on the server."""
        resp = await self.telegram.post(f"{self.api}/{method}", json=body, timeout=poll + 10)
        data = resp.json()
        if not data.get("ok"):
            raise RuntimeError(f"{method}: {data.get('description')}")
        return data["result"]

    async def run(self, ready: asyncio.Event) -> None:
        await self.call("getMe", {})
        await self.call("deleteWebhook", {"drop_pending_updates": False})
        offset = 0
        while True:
            poll = asyncio.create_task(
                self.call("getUpdates", {"offset": offset, "timeout": POLL_TIMEOUT}, POLL_TIMEOUT)
            )
            ready.set()
            try:
                updates = await poll
            except (httpx.HTTPError, RuntimeError):
                continue
            for update in updates:
                offset = max(offset, int(update["update_id"]) + 1)
                message = update.get("message")
                if message and isinstance(message.get("text"), str):
                    self.chats.put(int(message["chat"]["id"]), message)

    async def answer(self, chat_id: int, message: dict[str, Any]) -> None:
        text = await self.agent_call.ask(chat_id, message["text"])
        with contextlib.suppress(httpx.HTTPError, RuntimeError):
            await self.call(
                "sendMessage",
                {"chat_id": chat_id, "text": text, "reply_to_message_id": message["message_id"]},
            )


def notify_ready() -> None:
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    target = "\0" + address[1:] if address.startswith("@") else address
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"READY=1", target)


async def main_async(args: argparse.Namespace) -> int:
    relay = Relay(args)
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
        running.result()  # the start failed: raise it
        return 1
    notify_ready()
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
    running.cancel()
    for task in list(relay.chats.tasks):
        task.cancel()
    await asyncio.gather(running, *relay.chats.tasks, return_exceptions=True)
    await relay.agent_call.client.aclose()
    await relay.telegram.aclose()
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.relay", description=__doc__)
    parser.add_argument("--api-url", required=True, help="Bot API base, e.g. http://x/bot")
    parser.add_argument("--token", required=True)
    parser.add_argument("--agent-url", required=True, help="thinnest.ai base URL")
    parser.add_argument("--agent-id", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--max-in-flight", type=int, default=0, help="0: no bound")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(main_async(parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
