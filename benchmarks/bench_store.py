"""How many messages per second the store takes through their whole life.

Each message is accepted, marked running, given a reply and delivered (four
write transactions, as the dispatcher does), with ``--concurrency`` of them in
flight over ``--chats`` conversations, plus one turn recorded per message::

    python -m benchmarks.bench_store                       # a temporary SQLite file
    python -m benchmarks.bench_store --url postgresql+asyncpg://postgres@127.0.0.1/test \\
        --schema bench   # the schema must exist; its tables are created if needed
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import tempfile
import time

from bridge.model import ConversationKey, IncomingMessage, Usage
from storage import Store


async def lifecycle(store: Store, key: ConversationKey, event_id: str) -> None:
    msg = await store.accept(
        IncomingMessage(key=key, event_id=event_id, sender="U1", text="hello", agent="default")
    )
    assert msg is not None
    await store.mark_running(msg.id)
    await store.record_turn(
        msg.conversation_id, epoch=0, session_id="s", usage=Usage(input_tokens=3, output_tokens=5)
    )
    await store.save_reply(msg.id, "hi there", error_kind=None)
    await store.mark_delivered(msg.id)


async def run(url: str, schema: str | None, count: int, concurrency: int, chats: int) -> None:
    run_id = secrets.token_hex(4)
    keys = [ConversationKey("bench", run_id, f"chat-{i}") for i in range(chats)]
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with gate:
            await lifecycle(store, keys[i % chats], f"{run_id}-{i}")

    async with Store(url, schema=schema) as store:
        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(count)))
        elapsed = time.perf_counter() - started
        duplicates = await asyncio.gather(
            *(
                store.accept(IncomingMessage(keys[0], f"{run_id}-{i}", "U1", "hello", "default"))
                for i in range(min(count, 200))
            )
        )
        assert all(d is None for d in duplicates)
    print(
        f"{store!r}: {count} messages, concurrency {concurrency}, {chats} chats: "
        f"{elapsed:.2f} s, {count / elapsed:.0f} messages/s, "
        f"{elapsed / count * 1000:.2f} ms per message (5 transactions)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="database URL (default: a temporary SQLite file)")
    parser.add_argument("--schema", help="PostgreSQL schema to use")
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--chats", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        url = args.url or f"sqlite+aiosqlite:///{folder}/bench.db"
        asyncio.run(run(url, args.schema, args.messages, args.concurrency, args.chats))


if __name__ == "__main__":
    main()
