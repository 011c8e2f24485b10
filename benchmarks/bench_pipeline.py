"""Throughput of the whole pipeline: submit -> store -> dispatcher -> agent -> reply.

Runs the real store (SQLite in a temporary folder, or PostgreSQL when
AGENT_BRIDGE_TEST_DATABASE_URL is set) with the echo agent and an adapter that
only counts replies, so what is measured is the bridge's own overhead per
message. It reports messages per second and ratios, never a pass/fail:

    python -m benchmarks.bench_pipeline [--messages 400]

- "one conversation" sends every message to one chat: answered strictly in order.
- "N conversations" spreads them: answered in parallel, bounded by max_concurrency.
The ratio of the two shows what per-conversation ordering costs and what the
parallelism buys when the agent itself is instant (the store is the bottleneck).
Measured here (2 cores): SQLite ~80 messages/s either way (ratio ~1.0: one
writer at a time); PostgreSQL ~90 serial, ~160 parallel (ratio ~1.75).
On PostgreSQL point it at a scratch database: it creates the tables there.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from adapters.base import ChatAdapter
from bridge.app import open_core
from bridge.config import parse_config
from bridge.model import ConversationKey, InboxMessage, IncomingMessage, Reply


class CountingAdapter(ChatAdapter):
    platform = "bench"

    def __init__(self, dispatcher: Any, expected: int) -> None:
        super().__init__(dispatcher)
        self.expected = expected
        self.count = 0
        self.done = asyncio.Event()

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def send_reply(self, message: InboxMessage, reply: Reply) -> None:
        self.count += 1
        if self.count >= self.expected:
            self.done.set()


async def run(url: str, messages: int, conversations: int) -> float:
    config = parse_config(
        {"storage": {"url": url}, "agents": {"default": {"backend": "echo"}}},
        base_dir=Path.cwd(),
    )
    async with open_core(config) as core:
        adapter = CountingAdapter(core.dispatcher, messages)
        core.dispatcher.register(adapter)
        started = time.perf_counter()
        for i in range(messages):
            chat = f"c{i % conversations}"
            await core.dispatcher.submit(
                IncomingMessage(
                    ConversationKey("bench", "s", chat), f"{started}-{i}", "u", f"m{i}", "default"
                )
            )
        await asyncio.wait_for(adapter.done.wait(), 600)
        rate = messages / (time.perf_counter() - started)
        await core.dispatcher.wait_idle()  # let the last "delivered" writes finish
        return rate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=400)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = os.environ.get("AGENT_BRIDGE_TEST_DATABASE_URL") or (
            f"sqlite+aiosqlite:///{tmp}/bench.db"
        )
        one = asyncio.run(run(url, args.messages, 1))
        many = asyncio.run(run(url, args.messages, 50))
    print(f"database: {url.split('://')[0]}")
    print(f"one conversation:  {one:8.0f} messages/s")
    print(f"50 conversations:  {many:8.0f} messages/s")
    print(f"ratio parallel/serial: {many / one:.2f}")


if __name__ == "__main__":
    main()
