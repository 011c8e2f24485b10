"""``agent-bridge feedback list [--since DATE] [--format table|csv|json]``: the
feedback people gave the agent's answers (the Slack buttons), oldest first."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

FORMATS = ("table", "csv", "json")
HEADER = ("TIME", "VALUE", "AGENT", "USER", "PLATFORM", "CHAT", "MESSAGE")


def add_parser(commands: Any, common: argparse.ArgumentParser, handler: Callable[..., int]) -> None:
    """Add ``feedback list`` to ``commands``; ``handler`` runs it (`run_list`, bound
    to the CLI's config loading by the caller)."""
    feedback = commands.add_parser(
        "feedback", parents=[common], help="list the feedback given on agent answers"
    )
    feedback.set_defaults(help_parser=feedback)
    f_commands = feedback.add_subparsers(title="commands", metavar="COMMAND")
    f_list = f_commands.add_parser(
        "list",
        parents=[common],
        help="list feedback, oldest first",
        description="One line per user and answer: the latest of their clicks.",
    )
    f_list.add_argument(
        "--since",
        type=since_date,
        metavar="DATE",
        help="only feedback given from then on (YYYY-MM-DD or an ISO time; UTC if no zone)",
    )
    f_list.add_argument("--format", choices=FORMATS, default="table", help="output format")
    f_list.set_defaults(handler=handler)


def since_date(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected YYYY-MM-DD or an ISO time, not {text!r}"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


async def run_list(url: str, since: datetime | None, fmt: str) -> int:
    """Print the feedback stored in the database at ``url``."""
    from storage.store import Store

    async with Store(url) as store:
        entries = await store.list_feedback(since)
    rows = [
        (
            e.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            e.value,
            e.agent,
            e.user_id,
            e.platform,
            e.chat,
            str(e.message_id),
        )
        for e in entries
    ]
    if fmt == "json":
        out = [
            {
                "time": e.created_at.isoformat(),
                "value": e.value,
                "agent": e.agent,
                "user": e.user_id,
                "platform": e.platform,
                "chat": e.chat,
                "message_id": e.message_id,
            }
            for e in entries
        ]
        print(json.dumps(out, indent=2))
    elif fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow([h.lower() for h in HEADER])
        writer.writerows(rows)
    elif not rows:
        print("no feedback yet")
    else:
        widths = [max(len(r[i]) for r in [HEADER, *rows]) for i in range(len(HEADER))]
        for row in [HEADER, *rows]:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0
