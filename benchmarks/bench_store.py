"""How many messages per second the store takes through their whole life.

Each message goes the dispatcher's way through the claimed work queue: accepted,
its conversation claimed, read, marked running, answered (reply and turn in one
transaction), delivered and released: seven store calls, six of them writes.
``--chats`` conversations are worked on at once, one message at a time each, as
the dispatcher's workers do::

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
    # One platform per worker, so that each claims its own conversation only.
    [claim] = await store.claim(OWNER, platforms=[key.platform], limit=1, lease_timeout=30)
    got = await store.next_message(claim.conversation_id, OWNER)
    assert got is not None and got.id == msg.id
    assert await store.mark_running(got, OWNER)
    turn = (0, "s", Usage(input_tokens=3, output_tokens=5))
    assert await store.save_answer(got, OWNER, "hi there", error_kind=None, turn=turn)
    assert await store.finish_delivery(got, OWNER)
    await store.release(claim.conversation_id, OWNER)


OWNER = "bench"


async def run(url: str, schema: str | None, count: int, chats: int) -> None:
    run_id = secrets.token_hex(4)
    keys = [ConversationKey(f"bench-{i}", run_id, f"chat-{i}") for i in range(chats)]

    async def worker(n: int) -> None:
        for i in range(n, count, chats):
            await lifecycle(store, keys[n], f"{run_id}-{i}")

    async with Store(url, schema=schema) as store:
        await store.register_instance(OWNER, host="bench", pid=0, is_alive=lambda _pid: True)
        started = time.perf_counter()
        await asyncio.gather(*(worker(n) for n in range(chats)))
        elapsed = time.perf_counter() - started
        duplicates = await asyncio.gather(
            *(
                store.accept(IncomingMessage(keys[0], f"{run_id}-{i}", "U1", "hello", "default"))
                for i in range(0, min(count, 200 * chats), chats)
            )
        )
        assert all(d is None for d in duplicates)
        await store.unregister_instance(OWNER)
    print(
        f"{store!r}: {count} messages, {chats} conversations at once: "
        f"{elapsed:.2f} s, {count / elapsed:.0f} messages/s, "
        f"{elapsed / count * 1000:.2f} ms per message (7 store calls)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="database URL (default: a temporary SQLite file)")
    parser.add_argument("--schema", help="PostgreSQL schema to use")
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--chats", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        url = args.url or f"sqlite+aiosqlite:///{folder}/bench.db"
        asyncio.run(run(url, args.schema, args.messages, args.chats))


if __name__ == "__main__":
    main()
