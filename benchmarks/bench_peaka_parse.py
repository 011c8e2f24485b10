"""How long reading a Peaka answer takes, for the body sizes a long thread reaches.

A Peaka answer is the whole LangGraph state of the thread: every earlier turn
comes back on every call, and a query result may hold thousands of rows. The
bridge parses it on the event loop, so it must stay well under a millisecond
or so per turn even for large threads.

Run from the repository root::

    python -m benchmarks.bench_peaka_parse
"""

from __future__ import annotations

import json
import timeit
from functools import partial
from typing import Any

from bridge.backends.peaka import extract_reply


def lc(kind: str, content: str) -> dict[str, Any]:
    cls = "AIMessage" if kind == "ai" else "HumanMessage"
    return {
        "lc": 1,
        "type": "constructor",
        "id": ["langchain_core", "messages", cls],
        "kwargs": {"content": content, "type": kind, "additional_kwargs": {}},
    }


def state(turns: int, rows: int) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    for i in range(turns):
        messages.append(lc("human", f"question {i} " + "words " * 20))
        messages.append(lc("ai", f"answer {i} " + "words " * 80))
    return {
        "threadId": "bench",
        "messages": messages,
        "currentGeneratedQuery": "SELECT id, name, email, total FROM customers ORDER BY total DESC",
        "currentQueryResult": [
            {"id": n, "name": f"Customer {n}", "email": f"c{n}@example.com", "total": n * 1.5}
            for n in range(rows)
        ],
    }


def _load_and_extract(raw: str) -> object:
    return extract_reply(json.loads(raw))


def main() -> None:
    cases = [("1 turn, 10 rows", 1, 10), ("50 turns, 500 rows", 50, 500)]
    cases.append(("500 turns, 10000 rows", 500, 10_000))
    print(f"{'case':<24} {'body KiB':>9} {'parse µs':>10} {'json+parse µs':>14}")
    for label, turns, rows in cases:
        body = state(turns, rows)
        raw = json.dumps(body)
        number = 200 if turns < 500 else 20
        parse = min(timeit.repeat(partial(extract_reply, body), number=number, repeat=3))
        full = min(timeit.repeat(partial(_load_and_extract, raw), number=number, repeat=3))
        print(
            f"{label:<24} {len(raw) / 1024:>9.0f} {parse / number * 1e6:>10.1f}"
            f" {full / number * 1e6:>14.1f}"
        )


if __name__ == "__main__":
    main()
