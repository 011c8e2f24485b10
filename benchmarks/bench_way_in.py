"""The store's part of a message's way in, from its acceptance to the write that starts
its turn (the moment the agent can be called), two ways side by side:

- **claim, read, start**: the claim, then ``next_message`` reads the conversation's
  oldest unfinished message, then ``start_turn`` (the path before the claim carried it);
- **claim, start**: the claim returns that message itself (``Claim.first``).

The two alternate message by message in one process, so that a busy machine slows both
alike; the medians and p99 of each go to stdout::

    python -m benchmarks.bench_way_in [--messages 400]
    python -m benchmarks.bench_way_in --url postgresql+asyncpg://postgres@127.0.0.1/test \\
        --schema bench   # the schema must exist; its tables are created if needed
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import tempfile
import time

from bridge.model import ConversationKey, IncomingMessage
from storage import Store

OWNER = "bench"


async def way_in(store: Store, key: ConversationKey, event_id: str, *, read: bool) -> float:
    """Seconds from accept's call to start_turn's return; then the message is finished."""
    started = time.perf_counter()
    msg = await store.accept(
        IncomingMessage(key=key, event_id=event_id, sender="U1", text="hello", agent="default")
    )
    assert msg is not None
    [claim] = await store.claim(OWNER, platforms=[key.platform], limit=1, lease_timeout=30)
    first = await store.next_message(claim.conversation_id, OWNER) if read else claim.first
    assert first is not None and first.id == msg.id
    assert await store.start_turn(first, OWNER) is not None
    elapsed = time.perf_counter() - started
    assert await store.save_answer(first, OWNER, "hi", error_kind=None)
    assert await store.finish_delivery(first, OWNER)
    await store.release(claim.conversation_id, OWNER)
    return elapsed


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98]


async def run(url: str, schema: str | None, count: int) -> None:
    run_id = secrets.token_hex(4)
    key = ConversationKey("bench-way-in", run_id, "chat")
    times: dict[bool, list[float]] = {True: [], False: []}
    async with Store(url, schema=schema) as store:
        await store.register_instance(OWNER, host="bench", pid=0, is_alive=lambda _pid: True)
        for i in range(count):
            read = i % 2 == 0
            times[read].append(await way_in(store, key, f"{run_id}-{i}", read=read))
    for read, label in ((True, "claim, read, start"), (False, "claim, start")):
        values = times[read]
        print(
            f"{label:>20}: p50 {statistics.median(values) * 1000:.2f} ms, "
            f"p99 {p99(values) * 1000:.2f} ms ({len(values)} messages)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a database URL (default: a temporary SQLite file)")
    parser.add_argument("--schema", help="PostgreSQL: the schema to use")
    parser.add_argument("--messages", type=int, default=400)
    args = parser.parse_args()
    if args.url:
        asyncio.run(run(args.url, args.schema, args.messages))
        return
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(f"sqlite+aiosqlite:///{tmp}/bench.db", None, args.messages))


if __name__ == "__main__":
    main()
