"""``agent-bridge usage [--since DATE] [--by user|chat|agent|day] [--format table|csv|json]``:
messages and tokens of the turns the agents were asked for, per UTC day, user
(``platform:id``), chat (``platform:id``) or agent, from the store's usage record
(`storage.usage`), which the retention purge leaves alone."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Callable
from datetime import date
from typing import Any

FORMATS = ("table", "csv", "json")
GROUPS = ("day", "user", "chat", "agent")


def add_parser(commands: Any, common: argparse.ArgumentParser, handler: Callable[..., int]) -> None:
    """Add ``usage`` to ``commands``; ``handler`` runs it (`run_usage`, bound to the
    CLI's config loading by the caller)."""
    usage = commands.add_parser(
        "usage",
        parents=[common],
        help="messages and tokens used, per day, user, chat or agent",
        description="Totals of the turns the agents were asked for (UTC days); "
        "tokens are as the agents reported them.",
    )
    usage.add_argument(
        "--since", type=since_day, metavar="DATE", help="from this UTC day on (YYYY-MM-DD)"
    )
    usage.add_argument("--by", choices=GROUPS, default="day", help="one line per (default: day)")
    usage.add_argument("--format", choices=FORMATS, default="table", help="output format")
    usage.set_defaults(handler=handler)


def since_day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected YYYY-MM-DD, not {text!r}") from None


async def run_usage(url: str, since: date | None, by: str, fmt: str) -> int:
    """Print the usage stored in the database at ``url``."""
    from storage.store import Store

    async with Store(url) as store:
        report = await store.usage_report(by=by, since=since)  # type: ignore[arg-type]
    if fmt == "json":
        out = [
            {
                by: r.group,
                "messages": r.messages,
                "input_tokens": r.input_tokens,
                "output_tokens": r.output_tokens,
            }
            for r in report
        ]
        print(json.dumps(out, indent=2))
        return 0
    rows = [(r.group, str(r.messages), str(r.input_tokens), str(r.output_tokens)) for r in report]
    if fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow([by, "messages", "input_tokens", "output_tokens"])
        writer.writerows(rows)
        return 0
    if not rows:
        print("no usage yet")
        return 0
    total = (
        "TOTAL",
        str(sum(r.messages for r in report)),
        str(sum(r.input_tokens for r in report)),
        str(sum(r.output_tokens for r in report)),
    )
    header = (by.upper(), "MESSAGES", "INPUT_TOKENS", "OUTPUT_TOKENS")
    table = [header, *rows, total]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for row in table:
        numbers = zip(row[1:], widths[1:], strict=True)
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in numbers]
        print("  ".join(cells).rstrip())
    return 0
